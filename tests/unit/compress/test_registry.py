"""The compression registry: spec strings -> methods, parsed without importing any method."""

from __future__ import annotations

import pytest

from tunelab.compress import METHODS, parse_method
from tunelab.config.compress import build_compress_config
from tunelab.errors import TunelabError


@pytest.mark.parametrize(
    ("spec", "name", "params"),
    [
        ("bf16", "bf16", {}),
        ("int8-dynamic", "int8-dynamic", {}),
        ("int4-weight-g64", "int4-weight", {"group": "64"}),
        ("prune-30", "prune", {"percent": "30"}),
        ("prune-50-layer", "prune", {"percent": "50", "scope": "-layer"}),
        ("wanda-50", "wanda", {"percent": "50"}),
        ("prune-heads-25", "prune-heads", {"percent": "25"}),
        ("prune-ffn-30", "prune-ffn", {"percent": "30"}),
        ("prune-layers-2", "prune-layers", {"count": "2"}),
        ("distill-half", "distill", {"layers": "half"}),
        ("distill-3", "distill", {"layers": "3"}),
        ("onnx", "onnx", {}),
        ("onnx-int8", "onnx", {"int8": "-int8"}),
        ("gguf-q8_0", "gguf", {"qtype": "q8_0"}),
    ],
)
def test_specs_parse_to_their_method(spec, name, params):
    ms = parse_method(spec)
    assert (ms.spec, ms.name, ms.params) == (spec, name, params)


def test_every_example_parses_to_its_own_entry():
    for name, info in METHODS.items():
        assert parse_method(info.example).name == name


@pytest.mark.parametrize("spec", ["int3", "prune-", "prune-heads", "distill-quarter", "onnx-int4"])
def test_unknown_spec_is_a_one_line_error_naming_the_flag(spec):
    with pytest.raises(TunelabError, match="--methods takes e.g.") as err:
        parse_method(spec)
    assert "\n" not in str(err.value)


def test_config_splits_methods_and_refuses_duplicates_and_bad_values():
    cfg = build_compress_config(
        overrides={"compress.methods": "int8-dynamic, onnx", "distill.alpha": "0.7"}
    )
    assert cfg.compress.methods == ["int8-dynamic", "onnx"] and cfg.distill.alpha == 0.7
    listed = build_compress_config(overrides={"methods": ["bf16,prune-30"]}).compress.methods
    assert listed == ["bf16", "prune-30"]
    with pytest.raises(TunelabError, match="listed twice"):
        build_compress_config(overrides={"methods": "bf16,bf16"})
    with pytest.raises(TunelabError, match="--distill.alpha"):
        build_compress_config(overrides={"distill.alpha": "2"})
    with pytest.raises(TunelabError, match="--compress.KEY or --distill.KEY"):
        build_compress_config(overrides={"train.lr": "2"})
    with pytest.raises(TunelabError, match="unknown option compress.nope"):
        build_compress_config(overrides={"nope": 1})
