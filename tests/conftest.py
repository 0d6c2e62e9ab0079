"""Shared fixtures: a tiny tokenizer, tiny models of all three families, a toy data set.

Everything is built from config in a temporary folder (no download, no committed weights):
hidden size 32, 2 layers. The toy task is learnable (each class has its own words), so loss
must fall and accuracy must rise when a strategy trains what it should.
"""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TOPICS = {
    "sport": [
        "match",
        "goal",
        "team",
        "coach",
        "league",
        "score",
        "player",
        "cup",
        "season",
        "win",
    ],
    "money": [
        "bank",
        "market",
        "shares",
        "profit",
        "price",
        "trade",
        "economy",
        "growth",
        "stock",
        "tax",
    ],
    "tech": [
        "phone",
        "software",
        "chip",
        "data",
        "computer",
        "internet",
        "app",
        "robot",
        "code",
        "screen",
    ],
}
FILLER = [
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "on",
    "for",
    "with",
    "today",
    "news",
    "report",
    "said",
    "new",
]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
FAMILIES = ("encoder", "decoder", "encoder-decoder")


def toy_examples(n: int = 90, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = list(TOPICS)[i % len(TOPICS)]
        words = rng.choices(TOPICS[label], k=4) + rng.choices(FILLER, k=6)
        rng.shuffle(words)
        out.append({"text": " ".join(words) + f" {i}", "label": label})
    return out


def build_tokenizer(folder: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for ws in TOPICS.values() for w in ws} | set(FILLER))
    vocab = {t: i for i, t in enumerate(SPECIALS + words + [str(i) for i in range(200)])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        eos_token="[SEP]",
    )
    tok.save_pretrained(folder)
    return tok


def tiny_config(family: str, vocab_size: int):
    from transformers import BertConfig, LlamaConfig, T5Config

    if family == "encoder":
        return BertConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            pad_token_id=0,
            max_position_embeddings=128,
        )
    if family == "decoder":
        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            intermediate_size=64,
            pad_token_id=0,
            eos_token_id=3,
            bos_token_id=2,
            max_position_embeddings=128,
        )
    return T5Config(
        vocab_size=vocab_size,
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=2,
        pad_token_id=0,
        eos_token_id=3,
        decoder_start_token_id=0,
    )


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """family -> folder holding a tiny random model (causal/encoder/seq2seq base) + tokenizer."""
    import torch
    from transformers import AutoModel

    root = tmp_path_factory.mktemp("tiny-models")
    out = {}
    for family in FAMILIES:
        folder = root / family
        tok = build_tokenizer(folder)
        torch.manual_seed(0)
        AutoModel.from_config(tiny_config(family, len(tok))).save_pretrained(folder)
        out[family] = folder
    return out


@pytest.fixture(autouse=True)
def _one_thread_for_tiny_models(request):
    """Tiny models run fastest on one torch thread (more threads only spin, worst on a busy
    CPU); tests of the real embedded models (marked slow) keep torch's default."""
    import torch

    if request.node.get_closest_marker("slow"):
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture
def toy_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "toy.csv", toy_examples())


def distinct_features(model) -> None:
    """Make a tiny random BERT's [CLS] vector differ between examples, as a pretrained one does.

    With the default 0.02 init, two layers barely move [CLS] away from its own embedding:
    across the toy examples its features vary by 0.003 against a magnitude of 0.83, so a
    frozen-backbone strategy has nothing to learn from. Block weights x10 (as if
    initializer_range were 0.2) give a spread of 0.37.
    """
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".layer." in name and p.ndim == 2:
                p.mul_(10)
