"""The configuration of `tunelab compare`: which strategies, where the report goes, and the
per-strategy overrides, beside the shared finetune config they all run on."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.config.finetune import build_config
from tunelab.config.parse import read_yaml, saved_overrides
from tunelab.errors import TunelabError
from tunelab.strategies import STRATEGIES
from tunelab.tasks.zero_shot import ROWS, ZeroShotOptions, check_options

BUDGET_KEYS = ("train.epochs", "train.max_steps", "train.batch_size", "train.grad_accum")
"""Options every strategy must share: a comparison on different budgets says nothing."""
SHARED_SECTIONS = ("data", "model", "run")


@dataclass
class CompareConfig:
    strategies: list[str] = field(default_factory=list)
    """Strategies to compare (default: every registered one); `zero_shot` and
    `zero_shot_likelihood` add rows that train nothing: the shared model (a decoder) labels
    the test split from a prompt (`zero_shot:` section: prompt, labels, chat_template)."""
    output_dir: str = "reports/compare"
    """Report folder (runs, results, table and plots go here)."""
    latency_examples: int = 32
    """Test examples classified one at a time after training to time inference latency."""
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per-strategy options, e.g. `prompt: {train.lr: 3.0e-2, prompt.num_virtual_tokens: 20}`:
    learning rate, schedule and the strategy's own options; never data, seed or budget."""


def load_compare_config(
    config: str | Path | None, overrides: dict[str, Any], strategies: str | None, output: str | None
) -> tuple[CompareConfig, dict[str, Any]]:
    """(compare options, the shared finetune config as a nested dict) from YAML + flags.

    The YAML is a finetune config with an optional `compare:` section; sections named after a
    strategy (`lora: {r: 16}`) become that strategy's overrides.
    """
    raw = dict(read_yaml(config))
    section = raw.pop("compare", None) or {}
    known = {f for f in CompareConfig.__dataclass_fields__}
    unknown = sorted(set(section) - known)
    if unknown:
        raise TunelabError(f"unknown compare option(s) {unknown}: known ones are {sorted(known)}")
    cc = CompareConfig(**section)
    raw.pop("strategy", None)
    task = raw.pop("task", "classification")
    if task != "classification":
        raise TunelabError(
            f"tunelab compare compares classifiers, not {task} runs: drop `task: {task}` from "
            "the config (fine-tune a generator with tunelab finetune --task)"
        )
    for name in list(raw):
        if name in STRATEGIES or name == "zero_shot":
            opts = raw.pop(name) or {}
            cc.overrides.setdefault(name, {}).update({f"{name}.{k}": v for k, v in opts.items()})
    if strategies:
        cc.strategies = [s.strip() for s in strategies.split(",") if s.strip()]
    if not cc.strategies:
        cc.strategies = list(STRATEGIES)
    if output:
        cc.output_dir = output
    for s in cc.strategies:
        if s not in STRATEGIES and s not in ROWS:
            known = ", ".join([*STRATEGIES, *ROWS])
            raise TunelabError(f"unknown strategy {s!r}: choose from {known}")
    if len(set(cc.strategies)) != len(cc.strategies):
        raise TunelabError("a strategy is listed twice in --strategies: list each once")
    for strat, opts in cc.overrides.items():
        for key in opts:
            if key in BUDGET_KEYS or key == "train.seed" or key.split(".")[0] in SHARED_SECTIONS:
                raise TunelabError(
                    f"compare override {strat}: {key} would change the shared data, seed or "
                    "step budget: set it for all strategies instead"
                )
    if len(cc.strategies) < 2:
        one = cc.strategies[0]
        alone = (
            f"tunelab eval MODEL --data DATA --zero-shot {ROWS[one]}"
            if one in ROWS
            else f"tunelab finetune --strategy {one}"
        )
        raise TunelabError(
            f"--strategies names only {one}: a comparison needs at least two (for one, run {alone})"
        )
    if cc.latency_examples < 1:
        raise TunelabError("compare.latency_examples must be at least 1: fix the config")
    if Path(cc.output_dir).exists() and not Path(cc.output_dir).is_dir():
        raise TunelabError(f"--output {cc.output_dir} is a file: name a folder for the report")
    for key, value in overrides.items():
        sec, _, opt = key.rpartition(".")
        if sec in STRATEGIES or sec == "zero_shot":
            cc.overrides.setdefault(sec, {})[key] = value
        else:
            raw.setdefault(sec, {})[opt] = value
    # validate the shared part (and every strategy's overrides) before anything runs
    cfg = build_config(overrides=saved_overrides(raw))
    for s in cc.strategies:
        if s in ROWS:
            continue
        cfg = build_config(
            overrides=saved_overrides(raw) | {"strategy": s} | cc.overrides.get(s, {})
        )
    _check_zero_shot(cc)
    _read_data(cfg)
    return cc, raw


def _check_zero_shot(cc: CompareConfig) -> None:
    """The `zero_shot` section's options (prompt, labels, chat_template), checked before any
    row runs; it configures every zero-shot row and needs at least one."""
    from tunelab.config.parse import update_dataclass

    own = cc.overrides.get("zero_shot")
    if own is None:
        return
    if not any(s in ROWS for s in cc.strategies):
        raise TunelabError(
            "zero_shot options are given but no zero-shot row is compared: add zero_shot (or "
            "zero_shot_likelihood) to --strategies, or drop the zero_shot section"
        )
    values = {k.split(".", 1)[1]: v for k, v in own.items()}
    check_options(update_dataclass(ZeroShotOptions(), values, "zero_shot"), "--zero_shot.")


def _read_data(cfg) -> None:
    """Read the shared data once before any strategy starts: a missing file or column would
    otherwise fail every strategy in turn (and leave a report of failures)."""
    from tunelab.data.readers import load_examples

    d = cfg.data
    sources = [d.train_file, d.validation_file, d.test_file] if d.train_file else [d.source]
    for source in (x for x in sources if x):
        load_examples(source, d.text_column, d.label_column)
