"""Fine-tuning strategies: the one thing that differs between two fine-tuning runs.

Each strategy is one module of this package with an `apply(model, options, family,
total_steps)` that returns the model to train (parameters frozen or wrapped as the strategy
wants), optional loop hooks, and a module-level `STRATEGY = Strategy(...)`; its options
dataclass lives in `strategies/options.py`.

The registry below is explicit: listing strategies, reading their options and --help import
no strategy module (and so no torch or peft). Adding a strategy = one module, one options
class, one line here, one row in the test matrix.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunelab.errors import TunelabError
from tunelab.strategies import options as o

if TYPE_CHECKING:
    from tunelab.strategies.base import Strategy


@dataclass(frozen=True)
class StrategyInfo:
    """What the registry knows of a strategy without importing it."""

    name: str
    options: type
    """Its options dataclass (`--NAME.key` flags, the `NAME:` config section)."""
    summary: str
    can_merge: bool = True
    """Whether `--merge` can fold what trained into plain base weights."""

    @property
    def module(self) -> str:
        return f"tunelab.strategies.{self.name}"


_INFO = [
    StrategyInfo(
        "full",
        o.FullOptions,
        "every weight trains (the reference every other strategy is weighed against).",
    ),
    StrategyInfo(
        "freeze",
        o.FreezeOptions,
        "partial fine-tuning: the embeddings and lowest blocks stay frozen, the rest trains.",
    ),
    StrategyInfo(
        "gradual",
        o.GradualOptions,
        "ULMFiT gradual unfreezing, top block down, with optional layer-wise learning rates.",
    ),
    StrategyInfo(
        "features",
        o.FeaturesOptions,
        "the backbone is a frozen feature extractor; only the classification head trains.",
    ),
    StrategyInfo(
        "lora",
        o.LoraOptions,
        "low-rank update matrices beside the attention weights (peft); the base stays frozen.",
    ),
    StrategyInfo(
        "qlora",
        o.LoraOptions,
        "LoRA (peft) over a frozen base whose linear weights are stored in 4-bit NF4 (torchao).",
        can_merge=False,
    ),
    StrategyInfo(
        "adalora",
        o.AdaLoraOptions,
        "LoRA whose rank budget moves during training to the weights that matter most (peft).",
    ),
    StrategyInfo(
        "ia3",
        o.Ia3Options,
        "learned vectors rescale attention keys, values and feed-forward activations (peft).",
    ),
    StrategyInfo(
        "adapter",
        o.AdapterOptions,
        "small bottleneck layers inside every block (Houlsby / Pfeiffer); the base stays frozen.",
        can_merge=False,
    ),
    StrategyInfo(
        "prefix",
        o.PrefixOptions,
        "trained key/value vectors prepended to every attention layer (peft prefix tuning).",
        can_merge=False,
    ),
    StrategyInfo(
        "prompt",
        o.PromptOptions,
        "trained embeddings of virtual tokens put before the text (peft prompt tuning).",
        can_merge=False,
    ),
    StrategyInfo(
        "ptuning",
        o.PtuningOptions,
        "virtual-token embeddings computed by a small trained encoder (peft P-tuning).",
        can_merge=False,
    ),
]

STRATEGIES: dict[str, StrategyInfo] = {s.name: s for s in _INFO}
"""Every registered strategy by name, cheapest-to-explain first (the display order)."""


def strategy_info(name: str) -> StrategyInfo:
    """The registry entry of `name`, or a one-line error listing the known ones."""
    try:
        return STRATEGIES[name]
    except KeyError:
        known = ", ".join(STRATEGIES)
        raise TunelabError(f"unknown strategy {name!r}: choose one of {known}") from None


def get_strategy(name: str) -> Strategy:
    """The strategy `name` itself (imports its module: torch, peft)."""
    info = strategy_info(name)
    return importlib.import_module(info.module).STRATEGY


__all__ = ["STRATEGIES", "StrategyInfo", "get_strategy", "strategy_info"]
