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
    for key, value in overrides.items():
        sec, _, opt = key.rpartition(".")
        if sec in STRATEGIES:
            cc.overrides.setdefault(sec, {})[key] = value
        else:
            raw.setdefault(sec, {})[opt] = value
    # validate the shared part (and every strategy's overrides) before anything runs
    for s in cc.strategies:
        build_config(overrides=saved_overrides(raw) | {"strategy": s} | cc.overrides.get(s, {}))
    return cc, raw
