"""Fine-tuning strategies: the one thing that differs between two fine-tuning runs.

Each strategy is one module with an options dataclass and `apply(model, options, family)`,
which returns the model to train (parameters frozen or wrapped as the strategy wants). Adding
a strategy = one module + one line in STRATEGIES.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from tunelab.errors import TunelabError
from tunelab.strategies import full, lora


@dataclass(frozen=True)
class Strategy:
    """A registered strategy."""

    name: str
    config_cls: type
    apply: Callable[[nn.Module, Any, str], nn.Module]
    summary: str
    on_epoch_start: Callable[[nn.Module, Any, int], None] | None = None
    """Called before each epoch with (model, options, epoch): e.g. gradual unfreezing."""


STRATEGIES: dict[str, Strategy] = {
    "full": Strategy("full", full.FullConfig, full.apply, full.__doc__.splitlines()[0]),
    "lora": Strategy("lora", lora.LoraConfig, lora.apply, lora.__doc__.splitlines()[0]),
}


def get_strategy(name: str) -> Strategy:
    """The registered strategy `name`, or a one-line error listing the known ones."""
    try:
        return STRATEGIES[name]
    except KeyError:
        known = ", ".join(STRATEGIES)
        raise TunelabError(f"unknown strategy {name!r}: choose one of {known}") from None
