"""Tiny random models and batches for the compression tests, built from config.

- `make_config`: the pruning and distillation tests' own sizes (vocabulary 64, hidden 32, FFN
  64, 4 blocks of 4 heads; T5 3 blocks a stack, heads of 8) under what a test overrides.
- `tiny_model`: one of tests.conftest's tiny configs (hidden 32, 2 blocks of 2 heads) with some
  settings changed on the config.
- `prune_model`, `calibration`, `run`, `reload`, `generates`: what the pruning tests share.
- `distill_model`, `batch_for`, `assert_one_line`: what the distillation tests share.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tests.conftest import tiny_config

VOCAB = 64

_SIZES = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4)
_T5_SIZES = dict(d_model=32, d_kv=8, d_ff=64, num_layers=3, num_decoder_layers=3, num_heads=4)


def make_config(name: str, **kw):
    """transformers' config class `name` ("BertConfig", "LlamaConfig", "T5Config", ...) at the
    compression tests' sizes with vocabulary VOCAB and pad id 0, under `kw`."""
    import transformers

    sizes = _T5_SIZES if name == "T5Config" else _SIZES
    return getattr(transformers, name)(**{"vocab_size": VOCAB, "pad_token_id": 0, **sizes, **kw})


def tiny_model(cls, family: str, vocab_size: int, seed: int = 0, **settings) -> nn.Module:
    """`cls` (a transformers model class) in eval mode, random from `seed`, on
    tests.conftest.tiny_config(family, vocab_size) with `settings` set on the config."""
    config = tiny_config(family, vocab_size)
    for key, value in settings.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    return cls(config).eval()


def assert_one_line(exc: pytest.ExceptionInfo) -> None:
    assert "\n" not in str(exc.value)


# --- pruning: 4 heads, 3-4 blocks, hidden 32 ---------------------------------------------------


def prune_model(kind: str, seed: int = 0) -> nn.Module:
    """A tiny random model of `kind`: "bert" (a 3-label classifier), "llama" / "llama-gqa" (a
    causal LM; -gqa: 2 KV heads), "t5" / "t5-gated" (gated-gelu FFN)."""
    import transformers

    torch.manual_seed(seed)
    if kind == "bert":
        config = make_config("BertConfig", max_position_embeddings=64, num_labels=3)
        return transformers.BertForSequenceClassification(config).eval()
    if kind.startswith("llama"):
        kv_heads = 2 if kind == "llama-gqa" else 4
        ids = dict(bos_token_id=1, eos_token_id=2, max_position_embeddings=64)
        config = make_config("LlamaConfig", num_key_value_heads=kv_heads, **ids)
        return transformers.LlamaForCausalLM(config).eval()
    ffn = "gated-gelu" if kind == "t5-gated" else "relu"
    config = make_config(
        "T5Config", feed_forward_proj=ffn, eos_token_id=2, decoder_start_token_id=0
    )
    return transformers.T5ForConditionalGeneration(config).eval()


def calibration(kind: str, n: int = 2, seed: int = 1) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(3, VOCAB, (2, 8), generator=g)
        mask = torch.ones_like(ids)
        ids[1, 5:], mask[1, 5:] = 0, 0
        batch = {"input_ids": ids, "attention_mask": mask}
        if kind == "bert":
            batch["labels"] = torch.tensor([0, 2])
        out.append(batch)
    return out


def run(model: nn.Module, batch: dict) -> torch.Tensor:
    kw = {k: v for k, v in batch.items() if k != "labels"}
    if model.config.is_encoder_decoder:
        kw["decoder_input_ids"] = model._shift_right(batch["input_ids"])
    with torch.no_grad():
        return model(**kw).logits


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as safetensors can write it (tied tensors as copies)."""
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def reload(model: nn.Module, config, apply=None, plan: dict | None = None, tmp=None) -> nn.Module:
    """Save the pruned weights, rebuild the model from `config` (other random weights),
    re-apply the plan after a JSON round trip (as the run marker stores it), load strictly."""
    save_file(weights(model), tmp / "model.safetensors")
    torch.manual_seed(123)
    other = type(model)(copy.deepcopy(config)).eval()
    if apply is not None:
        apply(other, json.loads(json.dumps(plan)))
    other.load_state_dict(load_file(tmp / "model.safetensors"), strict=True)
    return other.eval()


def generates(model: nn.Module) -> None:
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False
        )
    assert out.shape[1] >= 3


# --- distillation: teachers of 4 blocks from tests.conftest's configs --------------------------


def distill_model(
    kind: str, depth: int = 4, vocab: int = VOCAB, seed: int = 0, **config_kw
) -> nn.Module:
    """A tiny random teacher of `depth` blocks per stack with its task head: "bert-cls",
    "llama-lm", "llama-cls" or "t5"."""
    import transformers

    family = {"bert-cls": "encoder", "t5": "encoder-decoder"}.get(kind, "decoder")
    if kind == "t5":
        layers = {"num_layers": depth, "num_decoder_layers": depth}
    else:
        layers = {"num_hidden_layers": depth}
    cls = {
        "bert-cls": transformers.BertForSequenceClassification,
        "llama-lm": transformers.LlamaForCausalLM,
        "llama-cls": transformers.LlamaForSequenceClassification,
        "t5": transformers.T5ForConditionalGeneration,
    }[kind]
    return tiny_model(cls, family, vocab, seed, **{**layers, "num_labels": 3, **config_kw})


def batch_for(kind: str, seed: int = 1) -> dict[str, torch.Tensor]:
    """Three examples, the last one padded; LM labels are -100 on a 3-token prompt and pads."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[2, -2:] = 0
    ids[2, -2:] = 0
    batch = {"input_ids": ids, "attention_mask": mask}
    if kind.endswith("-cls"):
        batch["labels"] = torch.tensor([0, 1, 2])
    elif kind == "t5":
        labels = torch.randint(5, VOCAB, (3, 5), generator=g)
        labels[1, -2:] = -100
        batch["labels"] = labels
    else:
        labels = ids.clone()
        labels[:, :3] = -100
        labels[mask == 0] = -100
        batch["labels"] = labels
    return batch
