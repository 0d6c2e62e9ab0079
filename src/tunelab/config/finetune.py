"""The configuration of `tunelab finetune`: the sections each lower package owns (data, model,
train, run), the strategy and its options, the task; built from defaults < YAML < flags.

Strategy options live in a section named after the strategy (`lora:` in YAML, `--lora.r 16`
on the command line); their dataclasses come from the strategy registry.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.config.parse import read_yaml, sections_dict, update_dataclass
from tunelab.data.options import DataOptions
from tunelab.errors import TunelabError
from tunelab.models.options import ModelOptions
from tunelab.runs.options import RunOptions
from tunelab.strategies import STRATEGIES, strategy_info
from tunelab.strategies.options import check_ranges
from tunelab.tasks import CLASSIFICATION_METRICS, LM_METRICS, TASKS
from tunelab.training.options import TrainOptions, check_train


@dataclass
class Config:
    data: DataOptions = field(default_factory=DataOptions)
    model: ModelOptions = field(default_factory=ModelOptions)
    train: TrainOptions = field(default_factory=TrainOptions)
    run: RunOptions = field(default_factory=RunOptions)
    strategy: str = "full"
    """Fine-tuning strategy (see `tunelab finetune --help` for each one's options)."""
    strategy_options: dict[str, Any] = field(default_factory=dict)
    """Options of the chosen strategy (its section in YAML: `lora: {r: 8}`)."""
    task: str = "classification"
    """What to train: classification (text -> label), causal_lm (prompt -> response with a
    decoder: instruction / dialog tuning, loss on the response only) or seq2seq (input ->
    target with an encoder-decoder; an encoder such as minilm is warm-started as a bert2bert)."""

    def to_dict(self) -> dict[str, Any]:
        """A plain dict in the YAML layout (strategy options under the strategy's name)."""
        out = sections_dict(self, SECTIONS)
        out["strategy"] = self.strategy
        out[self.strategy] = dict(self.strategy_options)
        out["task"] = self.task
        return out


SECTIONS: dict[str, type] = {
    "data": DataOptions,
    "model": ModelOptions,
    "train": TrainOptions,
    "run": RunOptions,
}


def build_config(yaml_path: str | Path | None = None, overrides: dict[str, Any] | None = None):
    """Resolve a Config from defaults, an optional YAML file and `section.key` overrides.

    Args:
        yaml_path: A YAML file in the `Config.to_dict()` layout, or None.
        overrides: Flat `{"train.lr": "3e-5", "strategy": "lora", "lora.r": "16"}` mapping.

    Returns:
        The resolved Config; `strategy_options` is the strategy's own dataclass as a dict.

    Raises:
        TunelabError: missing/invalid YAML, unknown section, option or strategy, bad value.
    """
    raw = read_yaml(yaml_path)
    nested: dict[str, dict[str, Any]] = {}
    for sec, vals in raw.items():
        if sec in ("strategy", "task"):
            nested.setdefault("", {})[sec] = vals
        elif isinstance(vals, dict):
            nested.setdefault(sec, {}).update(vals)
        else:
            raise TunelabError(f"config section {sec!r} must be a mapping of options")
    for key, val in (overrides or {}).items():
        sec, _, opt = key.rpartition(".")
        if not sec and opt not in ("strategy", "task"):
            raise TunelabError(f"option --{key} needs its section, e.g. --train.{key}")
        nested.setdefault(sec, {})[opt] = val

    cfg = Config()
    strategy = str(nested.get("", {}).get("strategy", cfg.strategy))
    strat_cls = strategy_info(strategy).options
    for sec, vals in nested.items():
        if sec == "":
            continue
        if sec in SECTIONS:
            setattr(cfg, sec, update_dataclass(getattr(cfg, sec), vals, sec))
        elif sec == strategy:
            continue
        else:
            if sec in STRATEGIES:
                raise TunelabError(
                    f"options for {sec!r} given but the strategy is {strategy!r}: "
                    f"add --strategy {sec} or drop the {sec}.* options"
                )
            known = ", ".join([*SECTIONS, "strategy", *STRATEGIES])
            raise TunelabError(f"unknown config section {sec!r}: known ones are {known}")
    strat_opts = update_dataclass(strat_cls(), nested.get(strategy, {}), strategy)
    cfg.strategy = strategy
    cfg.task = str(nested.get("", {}).get("task", cfg.task))
    cfg.strategy_options = dataclasses.asdict(strat_opts)
    check_ranges(strategy, cfg.strategy_options)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Check choices and ranges before anything is loaded or written."""
    check_train(cfg.train)
    d = cfg.data
    checks = [
        (d.max_length >= 2, "data.max_length must be at least 2"),
        (d.limit is None or d.limit >= 2, "data.limit must be at least 2"),
        (cfg.task in TASKS, f"task must be one of {', '.join(TASKS)}, not {cfg.task!r}"),
        (d.max_target_length >= 1, "data.max_target_length must be at least 1"),
    ]
    for ok, msg in checks:
        if not ok:
            raise TunelabError(f"{msg}: fix the config or flag")
    # a generative run validates on loss unless perplexity is asked for (recipes.finetune)
    metrics = CLASSIFICATION_METRICS + (LM_METRICS if cfg.task != "classification" else ())
    if cfg.train.metric.removeprefix("eval_") not in metrics:
        raise TunelabError(
            f"unknown metric {cfg.train.metric!r}: set --train.metric to one of "
            + ", ".join(metrics)
        )
