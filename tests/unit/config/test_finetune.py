"""Config resolution: precedence, types, strategy sections, and one-line errors."""

from __future__ import annotations

import dataclasses

import pytest

from tunelab.config.finetune import SECTIONS, build_config
from tunelab.config.parse import field_docs
from tunelab.errors import TunelabError
from tunelab.strategies import STRATEGIES


def test_defaults_are_the_quickstart_job():
    cfg = build_config()
    assert cfg.model.name == "minilm"
    assert cfg.data.source == "bbc-news"
    assert cfg.strategy == "full"
    assert cfg.strategy_options == {}


def test_yaml_then_flags_take_precedence(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.001\n  epochs: 2\nstrategy: lora\nlora:\n  r: 4\n")
    cfg = build_config(path, {"train.lr": "3e-5", "lora.alpha": "8"})
    assert cfg.train.lr == pytest.approx(3e-5)  # flag beats YAML
    assert cfg.train.epochs == 2.0  # YAML beats default
    assert cfg.strategy == "lora"
    assert cfg.strategy_options["r"] == 4 and cfg.strategy_options["alpha"] == 8


def test_values_are_typed():
    cfg = build_config(
        overrides={"train.max_steps": "7", "data.dedupe": "false", "data.normalize": "none"}
    )
    assert cfg.train.max_steps == 7 and isinstance(cfg.train.max_steps, int)
    assert cfg.data.dedupe is False
    assert cfg.data.normalize is None


def test_to_dict_round_trips(tmp_path):
    import yaml

    cfg = build_config(overrides={"strategy": "lora", "lora.r": "2", "train.seed": "5"})
    path = tmp_path / "resolved.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert build_config(path) == cfg


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"train.lr": "fast"}, ["train.lr", "float"]),
        ({"train.batch_size": "2.5"}, ["train.batch_size", "int"]),
        ({"train.nope": "1"}, ["unknown option train.nope", "lr"]),
        ({"bogus.x": "1"}, ["unknown config section", "bogus"]),
        ({"strategy": "magic"}, ["unknown strategy", "full", "lora"]),
        ({"lora.r": "4"}, ["strategy is 'full'", "--strategy lora"]),
        ({"train.schedule": "wavy"}, ["unknown schedule", "cosine"]),
        ({"train.precision": "fp8"}, ["unknown precision", "bf16"]),
        ({"train.batch_size": "0"}, ["batch_size"]),
        ({"lr": "1"}, ["needs its section"]),
    ],
)
def test_bad_options_give_one_line_errors(overrides, words):
    with pytest.raises(TunelabError) as info:
        build_config(overrides=overrides)
    msg = str(info.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_bad_yaml_files(tmp_path):
    with pytest.raises(TunelabError, match="not found"):
        build_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(TunelabError, match="not valid YAML"):
        build_config(bad)
    flat = tmp_path / "flat.yaml"
    flat.write_text("- 1\n- 2\n")
    with pytest.raises(TunelabError, match="mapping"):
        build_config(flat)


@pytest.mark.parametrize("cls", [*SECTIONS.values(), *(s.options for s in STRATEGIES.values())])
def test_every_option_is_documented(cls):
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        assert len(docs.get(f.name, "")) > 10, f"{cls.__name__}.{f.name} has no docstring"
