"""adapter: where bottleneck adapters go, that they start as identities, and that runs reload."""

from __future__ import annotations

import copy
import dataclasses
import json
import re

import pytest
import torch
from torch import nn

from tests.conftest import FAMILIES, toy_examples
from tunelab.errors import TunelabError
from tunelab.models.load import load_classifier
from tunelab.runs.marker import MARKER_FILE
from tunelab.runs.open import open_classifier
from tunelab.runs.save import TRAINED_FILE, save_model_files
from tunelab.strategies import get_strategy
from tunelab.strategies.adapter import adapters
from tunelab.strategies.options import AdapterOptions
from tunelab.tasks.classification import encode_examples, make_collate

LABELS = ["money", "sport", "tech"]

ADAPTED = {
    # family -> placement -> the projections adapted in block 0 of each stack (tiny models)
    "encoder": {
        "houlsby": [
            "bert.encoder.layer.0.attention.output.dense",
            "bert.encoder.layer.0.output.dense",
        ],
        "pfeiffer": ["bert.encoder.layer.0.output.dense"],
    },
    "decoder": {
        "houlsby": ["model.layers.0.self_attn.o_proj", "model.layers.0.mlp.down_proj"],
        "pfeiffer": ["model.layers.0.mlp.down_proj"],
    },
    "encoder-decoder": {
        "houlsby": [
            "transformer.encoder.block.0.layer.0.SelfAttention.o",
            "transformer.encoder.block.0.layer.1.DenseReluDense.wo",
            "transformer.decoder.block.0.layer.0.SelfAttention.o",
            "transformer.decoder.block.0.layer.1.EncDecAttention.o",
            "transformer.decoder.block.0.layer.2.DenseReluDense.wo",
        ],
        "pfeiffer": [
            "transformer.encoder.block.0.layer.1.DenseReluDense.wo",
            "transformer.decoder.block.0.layer.2.DenseReluDense.wo",
        ],
    },
}


def _load(family, tiny_models):
    torch.manual_seed(0)
    loaded = load_classifier(str(tiny_models[family]), LABELS, attention_dropout=0.0)
    data = encode_examples(toy_examples(12), loaded.tokenizer, LABELS, 32)
    batch = dict(make_collate(loaded.tokenizer)([data[i] for i in range(len(data))]))
    return loaded, batch


def _adapt(loaded, **options):
    return get_strategy("adapter").build(loaded.model, options, loaded.family, 10)


@torch.no_grad()
def _logits(model, batch) -> torch.Tensor:
    model.eval()
    return model(**batch).logits


def _perturb(model) -> None:
    with torch.no_grad():
        for adapter in adapters(model).values():
            adapter.up.weight.normal_(std=0.5)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("placement", ["houlsby", "pfeiffer"])
def test_adapted_model_starts_equal_to_the_base(family, placement, tiny_models):
    loaded, batch = _load(family, tiny_models)
    base = _logits(loaded.model, batch)
    model = _adapt(loaded, placement=placement)
    assert torch.equal(_logits(model, batch), base)
    # ... and the adapters are on the forward path: once they differ from zero, so do logits
    _perturb(model)
    assert not torch.allclose(_logits(model, batch), base, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("placement", ["houlsby", "pfeiffer"])
def test_adapters_go_after_attention_and_feed_forward_outputs(family, placement, tiny_models):
    loaded, _ = _load(family, tiny_models)
    model = _adapt(loaded, placement=placement)
    block_0 = ADAPTED[family][placement]
    block_1 = [re.sub(r"(layer|layers|block)\.0\.", r"\1.1.", n, count=1) for n in block_0]
    assert sorted(adapters(model)) == sorted(block_0 + block_1)


@pytest.mark.parametrize("family", FAMILIES)
def test_base_is_frozen_and_adapters_head_pooler_train(family, tiny_models):
    loaded, _ = _load(family, tiny_models)
    model = _adapt(loaded, placement="houlsby")
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    adapter_params = {
        f"{site}.adapter.{n}"
        for site, a in adapters(model).items()
        for n, _ in a.named_parameters()
    }
    assert adapter_params <= trained
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if n in trained)
    rest = trained - adapter_params
    heads = {"encoder": "classifier", "decoder": "score", "encoder-decoder": "classification_head"}
    assert rest and all(n.startswith(heads[family]) or ".pooler." in n for n in rest), rest
    assert (family == "encoder") == any(".pooler." in n for n in rest)


@pytest.mark.parametrize("family", FAMILIES)
def test_train_norms_adds_exactly_the_norm_weights(family, tiny_models):
    loaded, _ = _load(family, tiny_models)
    model = _adapt(loaded, train_norms=True)
    norm_params = {
        f"{m}.{n}" if m else n
        for m, mod in model.named_modules()
        if "Norm" in type(mod).__name__
        for n, _ in mod.named_parameters(recurse=False)
    }
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert norm_params and norm_params <= trained
    default = _adapt(_load(family, tiny_models)[0])
    default_trained = {n for n, p in default.named_parameters() if p.requires_grad}
    assert trained - default_trained == norm_params


@pytest.mark.parametrize("reduction,size", [(1, 32), (4, 8), (16, 2), (64, 1)])
def test_bottleneck_size_is_hidden_over_reduction(reduction, size, tiny_models):
    loaded, _ = _load("decoder", tiny_models)
    model = _adapt(loaded, reduction=reduction)
    for adapter in adapters(model).values():
        assert adapter.down.weight.shape == (size, 32)
        assert adapter.up.weight.shape == (32, size)


def test_layers_picks_blocks_in_each_stack(tiny_models):
    loaded, _ = _load("encoder-decoder", tiny_models)
    model = _adapt(loaded, layers="-1")
    assert list(adapters(model)) == [
        "transformer.encoder.block.1.layer.1.DenseReluDense.wo",
        "transformer.decoder.block.1.layer.2.DenseReluDense.wo",
    ]


def test_adapters_run_under_bf16_autocast_with_fp32_weights(tiny_models):
    loaded, batch = _load("decoder", tiny_models)
    model = _adapt(loaded, placement="houlsby", activation="gelu")  # no dead 2-unit ReLUs
    _perturb(model)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch).loss
    loss.backward()
    for adapter in adapters(model).values():
        for p in adapter.parameters():
            assert p.dtype == torch.float32 and p.grad.dtype == torch.float32
            assert p.grad.abs().sum() > 0


def test_a_deep_copy_runs_its_own_adapters(tiny_models):
    loaded, batch = _load("encoder", tiny_models)
    model = _adapt(loaded, placement="houlsby")
    before = _logits(model, batch)
    twin = copy.deepcopy(model)
    _perturb(twin)
    assert torch.equal(_logits(model, batch), before)
    assert not torch.allclose(_logits(twin, batch), before, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_run_reloads_with_identical_logits(family, tiny_models, tmp_path):
    options = AdapterOptions(placement="houlsby", reduction=4, activation="gelu", layers="0,1")
    loaded, batch = _load(family, tiny_models)
    model = get_strategy("adapter").build(loaded.model, options, loaded.family, 10)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(3):
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
    assert all(a.up.weight.abs().sum() > 0 for a in adapters(model).values())
    ref = _logits(model, batch)

    kind = save_model_files(model, loaded.tokenizer, tmp_path, merge=False)
    assert kind == "partial"
    marker = {
        "task": "classification",
        "base_model": str(tiny_models[family]),
        "labels": LABELS,
        "max_length": 32,
        "weights": kind,
        "strategy": "adapter",
        "strategy_options": dataclasses.asdict(options),
    }
    (tmp_path / MARKER_FILE).write_text(json.dumps(marker))
    reloaded, _, _ = open_classifier(tmp_path)
    assert list(adapters(reloaded)) == list(adapters(model))
    assert torch.allclose(_logits(reloaded, batch), ref, atol=1e-6)

    from safetensors import safe_open

    with safe_open(str(tmp_path / TRAINED_FILE), "pt") as fh:
        saved = set(fh.keys())
    assert saved == {n for n, p in model.named_parameters() if p.requires_grad}
    size = (tmp_path / TRAINED_FILE).stat().st_size
    full = (tiny_models[family] / "model.safetensors").stat().st_size
    assert size < full / 3, f"{size} B vs {full} B"


@pytest.mark.parametrize(
    "options,message",
    [
        ({"placement": "parallel"}, "adapter.placement must be one of houlsby, pfeiffer"),
        ({"activation": "softmax"}, "adapter.activation must be one of"),
        ({"reduction": 0}, "adapter.reduction must be at least 1"),
        ({"layers": "0,7"}, "block 7 does not exist"),
        ({"layers": "first"}, "adapter.layers expects comma-separated block indices"),
    ],
)
def test_bad_options_are_one_line_errors(options, message, tiny_models):
    loaded, _ = _load("encoder", tiny_models)
    with pytest.raises(TunelabError, match=message) as info:
        _adapt(loaded, **options)
    assert "\n" not in str(info.value)


def test_a_model_without_transformer_blocks_is_a_one_line_error():
    model = nn.Module()
    model.body = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    model.classifier = nn.Linear(4, 2)
    with pytest.raises(TunelabError, match="found no transformer blocks") as info:
        get_strategy("adapter").build(model, {}, "encoder", 10)
    assert "\n" not in str(info.value)


def test_gpt2_style_conv1d_projections_are_adapted():
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=50, n_embd=32, n_layer=2, n_head=2, n_positions=64, num_labels=3, pad_token_id=0
    )
    model = GPT2ForSequenceClassification(config).eval()
    ids = torch.randint(1, 50, (2, 7))
    base = _logits(model, {"input_ids": ids})
    model = get_strategy("adapter").build(model, {"placement": "houlsby"}, "decoder", 10)
    assert list(adapters(model)) == [
        f"transformer.h.{i}.{part}.c_proj" for i in range(2) for part in ("attn", "mlp")
    ]
    assert torch.equal(_logits(model, {"input_ids": ids}), base)
