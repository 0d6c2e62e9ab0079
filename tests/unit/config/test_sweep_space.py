"""`tunelab sweep --space`: ranges, log ranges, int ranges and choices, short keys resolved
like the finetune flags, and every mistake one line naming --space."""

from __future__ import annotations

import pytest

from tunelab.config.finetune import build_config
from tunelab.config.sweep import (
    SHORT_KEYS,
    Param,
    check_space,
    parse_space,
    resolve_key,
    trial_overrides,
)
from tunelab.errors import TunelabError


def test_the_issue_example():
    assert parse_space("lr=1e-5..1e-3:log,lora.r=4,8,16", "lora") == [
        Param("train.lr", "float", 1e-5, 1e-3, log=True),
        Param("lora.r", "choice", choices=(4, 8, 16)),
    ]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("batch_size=8..32", Param("train.batch_size", "int", 8, 32)),
        ("train.warmup_ratio=0..0.2", Param("train.warmup_ratio", "float", 0.0, 0.2)),
        ("lora.r=4..64:log", Param("lora.r", "int", 4, 64, log=True)),
        ("strategy=lora,full", Param("strategy", "choice", choices=("lora", "full"))),
        ("schedule=linear,cosine", Param("train.schedule", "choice", choices=("linear", "cosine"))),
        ("model=a/b,c", Param("model.name", "choice", choices=("a/b", "c"))),
        ("weight_decay=0,0.01,0.1", Param("train.weight_decay", "choice", choices=(0, 0.01, 0.1))),
        ("r=4,8", Param("lora.r", "choice", choices=(4, 8))),  # the base strategy's option
    ],
)
def test_one_parameter(spec, expected):
    (param,) = parse_space(spec, "lora")
    assert param == expected
    assert parse_space(param.spec(), "lora") == [param]  # spec() writes the same syntax back


def test_several_flags_and_spaces_join():
    params = parse_space(["lr=1e-4..1e-3", "epochs=1,2 seed=0,1"], "full")
    assert [p.key for p in params] == ["train.lr", "train.epochs", "train.seed"]


def test_short_keys_match_the_finetune_flags():
    from tunelab.cli.flags import ALIASES

    for flag, key in ALIASES.items():
        short = flag.removeprefix("--")
        if key.startswith("run."):  # where runs go and their names: the sweep sets those
            continue
        if short in SHORT_KEYS or key.endswith(f".{short}"):
            assert resolve_key(short, "full") == key, flag


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("lr", "KEY=LOW..HIGH"),
        ("lr=", "KEY=LOW..HIGH"),
        ("=1,2", "KEY=LOW..HIGH"),
        ("lr=1e-3..1e-5", "low end must be below"),
        ("lr=0..1e-3:log", "above 0"),
        ("lr=1e-5..big", "'big' is not a number"),
        ("lr=1e-5..1e-3:cubic", "unknown scale"),
        ("wobble=1,2", "no finetune option"),
        ("nosuch.x=1,2", "unknown section 'nosuch'"),
        ("r=4,8", "no finetune option"),  # full has no r
        ("lr=1e-4..1e-3,train.lr=1e-4,1e-3", "given twice"),
        ("strategy=lora,lora", "repeated"),
        ("", "--space is empty"),
    ],
)
def test_mistakes_are_one_line(spec, words):
    with pytest.raises(TunelabError) as info:
        parse_space(spec, "full")
    text = str(info.value)
    assert "--space" in text and words in text and "\n" not in text


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("lora.r=4,8", "add --strategy lora"),
        ("lr=-1e-3..1e-3", "train.lr must be positive"),
        ("schedule=linear,wavy", "unknown schedule 'wavy'"),
        ("batch_size=0.5..4", "train.batch_size expects int"),
        ("train.nope=1,2", "unknown option train.nope"),
        ("metric=accuracy,speed", "unknown metric 'speed'"),
    ],
)
def test_values_are_checked_against_the_config(spec, words):
    base = build_config()
    with pytest.raises(TunelabError) as info:
        check_space(parse_space(spec, base.strategy), base)
    text = str(info.value)
    assert text.startswith("--space ") and words in text and "\n" not in text


def test_a_strategy_choice_allows_its_options():
    base = build_config(overrides={"train.lr": "3e-4"})
    params = parse_space("strategy=lora,full,lora.r=4,8", "full")
    check_space(params, base)
    cfg = build_config(overrides=trial_overrides(base, {"strategy": "lora", "lora.r": 4}))
    assert (cfg.strategy, cfg.strategy_options["r"], cfg.train.lr) == ("lora", 4, 3e-4)


def test_trial_overrides_keep_the_base_options():
    base = build_config(overrides={"strategy": "lora", "lora.r": "16", "data.max_length": "48"})
    cfg = build_config(overrides=trial_overrides(base, {"train.lr": 0.002}))
    assert cfg.strategy_options == base.strategy_options
    assert (cfg.data.max_length, cfg.train.lr) == (48, 0.002)
    cfg = build_config(overrides=trial_overrides(base, {"strategy": "full"}))
    assert cfg.strategy == "full"
