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

BUDGET_KEYS = ("train.epochs", "train.max_steps", "train.batch_size", "train.grad_accum")
"""Options every strategy must share: a comparison on different budgets says nothing."""
SHARED_SECTIONS = ("data", "model", "run")


@dataclass
class CompareConfig:
    strategies: list[str] = field(default_factory=list)
    """Strategies to compare (default: every registered one)."""
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
        if name in STRATEGIES:
            opts = raw.pop(name) or {}
            cc.overrides.setdefault(name, {}).update({f"{name}.{k}": v for k, v in opts.items()})
    if strategies:
        cc.strategies = [s.strip() for s in strategies.split(",") if s.strip()]
    if not cc.strategies:
        cc.strategies = list(STRATEGIES)
    if output:
        cc.output_dir = output
    for s in cc.strategies:
        if s not in STRATEGIES:
            raise TunelabError(f"unknown strategy {s!r}: choose from {', '.join(STRATEGIES)}")
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
        raise TunelabError(
            f"--strategies names only {cc.strategies[0]}: a comparison needs at least two "
            f"(for one, run tunelab finetune --strategy {cc.strategies[0]})"
        )
    if cc.latency_examples < 1:
        raise TunelabError("compare.latency_examples must be at least 1: fix the config")
    if Path(cc.output_dir).exists() and not Path(cc.output_dir).is_dir():
        raise TunelabError(f"--output {cc.output_dir} is a file: name a folder for the report")
    for key, value in overrides.items():
        sec, _, opt = key.rpartition(".")
        if sec in STRATEGIES:
            cc.overrides.setdefault(sec, {})[key] = value
        else:
            raw.setdefault(sec, {})[opt] = value
    # validate the shared part (and every strategy's overrides) before anything runs
    for s in cc.strategies:
        cfg = build_config(
            overrides=saved_overrides(raw) | {"strategy": s} | cc.overrides.get(s, {})
        )
    _read_data(cfg)
    return cc, raw


def _read_data(cfg) -> None:
    """Read the shared data once before any strategy starts: a missing file or column would
    otherwise fail every strategy in turn (and leave a report of failures)."""
    from tunelab.data.readers import load_examples

    d = cfg.data
    sources = [d.train_file, d.validation_file, d.test_file] if d.train_file else [d.source]
    for source in (x for x in sources if x):
        load_examples(source, d.text_column, d.label_column)
