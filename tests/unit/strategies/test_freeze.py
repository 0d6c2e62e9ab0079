"""freeze: each option freezes exactly what it says, per family; bad options are one line."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from tests.conftest import toy_examples
from tunelab.errors import TunelabError
from tunelab.models.load import load_classifier
from tunelab.runs.marker import MARKER_FILE
from tunelab.runs.open import open_classifier
from tunelab.runs.save import save_model_files
from tunelab.strategies import get_strategy
from tunelab.tasks.classification import encode_examples, make_collate

LABELS = ["money", "sport", "tech"]
FREEZE = get_strategy("freeze")


def build(tiny_models, family: str, **options):
    """(model with freeze applied, tokenizer, family)."""
    torch.manual_seed(0)
    loaded = load_classifier(str(tiny_models[family]), LABELS, attention_dropout=0.0)
    return FREEZE.build(loaded.model, options, loaded.family, 10), loaded.tokenizer


def frozen(model) -> set[str]:
    return {n for n, p in model.named_parameters() if not p.requires_grad}


def names(model, *prefixes: str) -> set[str]:
    return {n for n, _ in model.named_parameters() if n.startswith(prefixes)}


BERT_EMBEDDINGS = ("bert.embeddings.",)
T5_ENCODER = ("transformer.encoder.",)  # its blocks and its final norm
T5_DECODER_BLOCKS = ("transformer.decoder.block.",)


def test_default_freezes_embeddings_and_lower_half(tiny_models):
    model, _ = build(tiny_models, "encoder")
    assert frozen(model) == names(model, "bert.embeddings.", "bert.encoder.layer.0.")
    model, _ = build(tiny_models, "decoder")
    assert frozen(model) == names(model, "model.embed_tokens.", "model.layers.0.")
    # 2 encoder + 2 decoder blocks: the lower half is the encoder
    model, _ = build(tiny_models, "encoder-decoder")
    assert frozen(model) == names(model, "transformer.shared.", *T5_ENCODER)


def test_layers_counts_blocks_bottom_up_across_encoder_and_decoder(tiny_models):
    model, _ = build(tiny_models, "encoder-decoder", layers=3, embeddings=False)
    assert frozen(model) == names(model, *T5_ENCODER, "transformer.decoder.block.0.")
    model, _ = build(tiny_models, "encoder", layers=2)
    assert frozen(model) == names(model, *BERT_EMBEDDINGS, "bert.encoder.")
    trains = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trains == names(model, "bert.pooler.", "classifier.")


def test_nothing_frozen_and_embeddings_only(tiny_models):
    model, _ = build(tiny_models, "decoder", layers=0, embeddings=False)
    assert frozen(model) == set()
    model, _ = build(tiny_models, "encoder", layers=0)
    assert frozen(model) == names(model, *BERT_EMBEDDINGS)


def test_patterns_freeze_globs_and_regexes_but_never_the_head(tiny_models):
    model, _ = build(tiny_models, "encoder", layers=0, embeddings=False, patterns="*.bias")
    biases = {n for n in names(model, "") if n.endswith(".bias")}
    assert frozen(model) == biases - names(model, "bert.pooler.", "classifier.")
    assert model.classifier.bias.requires_grad

    model, _ = build(
        tiny_models, "decoder", layers=0, embeddings=False, patterns="re:self_attn\\.[qk]_proj"
    )
    assert frozen(model) == {
        f"model.layers.{i}.self_attn.{m}_proj.weight" for i in (0, 1) for m in ("q", "k")
    }
    # added to what the other options freeze
    model, _ = build(tiny_models, "decoder", patterns="model.layers.1.mlp.*, *input_layernorm*")
    assert frozen(model) == names(
        model,
        "model.embed_tokens.",
        "model.layers.0.",
        "model.layers.1.mlp.",
        "model.layers.1.input_layernorm.",
    )


@pytest.mark.parametrize(
    "patterns,message",
    [
        ("layer.0", "matches no parameter"),  # a glob must match the whole name
        ("classifier.*", "matches no parameter outside the head"),
        ("re:(", "not a regular expression"),
    ],
)
def test_bad_patterns_are_one_line_errors(tiny_models, patterns, message):
    with pytest.raises(TunelabError, match=message) as info:
        build(tiny_models, "encoder", patterns=patterns)
    assert "\n" not in str(info.value)


def test_part_freezes_a_whole_stack_of_an_encoder_decoder(tiny_models):
    model, _ = build(tiny_models, "encoder-decoder", part="decoder", embeddings=False)
    # layers defaults to 0 with part; the decoder's final norm stays with the head
    assert frozen(model) == names(model, *T5_DECODER_BLOCKS)
    assert model.transformer.decoder.final_layer_norm.weight.requires_grad
    model, _ = build(tiny_models, "encoder-decoder", part="encoder")
    assert frozen(model) == names(model, "transformer.shared.", *T5_ENCODER)


@pytest.mark.parametrize(
    "family,options,message",
    [
        ("encoder", {"part": "decoder"}, "needs an encoder-decoder model.*Bert"),
        ("decoder", {"part": "encoder"}, "needs an encoder-decoder model"),
        ("encoder-decoder", {"part": "middle"}, "must be encoder or decoder"),
        ("encoder", {"layers": 3}, "between 0 and 2"),
        ("decoder", {"layers": -1}, "between 0 and 2"),
    ],
)
def test_bad_options_are_one_line_errors(tiny_models, family, options, message):
    with pytest.raises(TunelabError, match=message) as info:
        build(tiny_models, family, **options)
    assert "\n" not in str(info.value)


def test_training_moves_only_what_is_not_frozen_and_reloads(tiny_models, tmp_path):
    options = {"part": "decoder", "patterns": "re:SelfAttention\\.q\\."}
    model, tok = build(tiny_models, "encoder-decoder", **options)
    data = encode_examples(toy_examples(12), tok, LABELS, 32)
    batch = dict(make_collate(tok)([data[i] for i in range(len(data))]))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(3):
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert moved == {n for n, p in model.named_parameters() if p.requires_grad}

    # a partial run folder re-applies freeze with the saved (non-default) options
    assert save_model_files(model, tok, tmp_path, merge=False) == "partial"
    marker = {
        "task": "classification",
        "base_model": str(tiny_models["encoder-decoder"]),
        "labels": LABELS,
        "strategy": "freeze",
        "strategy_options": dataclasses.asdict(FREEZE.options(options)),
    }
    (tmp_path / MARKER_FILE).write_text(json.dumps(marker))
    loaded, _, _ = open_classifier(tmp_path)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits)


def test_default_half_rounds_down():
    from transformers import GPT2Config, GPT2ForSequenceClassification

    config = GPT2Config(vocab_size=100, n_embd=32, n_head=2, n_layer=3, pad_token_id=0)
    model = FREEZE.build(GPT2ForSequenceClassification(config), {}, "decoder", 10)
    assert frozen(model) == names(model, "transformer.wte.", "transformer.wpe.", "transformer.h.0.")
