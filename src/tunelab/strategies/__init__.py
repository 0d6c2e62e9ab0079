"""Fine-tuning strategies: the one thing that differs between two fine-tuning runs.

Each strategy is one module of this package with an options dataclass, an `apply(model,
options, family, total_steps)` that returns the model to train (parameters frozen or wrapped
as the strategy wants), optional loop hooks, and a module-level `STRATEGY = Strategy(...)`.
Adding a strategy = adding its module: the registry below finds it.
"""

from __future__ import annotations

import importlib
import pkgutil

from tunelab.errors import TunelabError
from tunelab.strategies.base import Strategy

ORDER = (
    "full",
    "freeze",
    "gradual",
    "features",
    "lora",
    "adalora",
    "ia3",
    "adapter",
    "prefix",
    "prompt",
    "ptuning",
)
"""Display order (cheapest-to-explain first); strategies not listed follow alphabetically."""


def _discover() -> dict[str, Strategy]:
    found: dict[str, Strategy] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        strategy = getattr(module, "STRATEGY", None)
        if isinstance(strategy, Strategy):
            found[strategy.name] = strategy
    rank = {name: i for i, name in enumerate(ORDER)}
    return dict(sorted(found.items(), key=lambda kv: (rank.get(kv[0], len(ORDER)), kv[0])))


STRATEGIES: dict[str, Strategy] = _discover()


def get_strategy(name: str) -> Strategy:
    """The registered strategy `name`, or a one-line error listing the known ones."""
    try:
        return STRATEGIES[name]
    except KeyError:
        known = ", ".join(STRATEGIES)
        raise TunelabError(f"unknown strategy {name!r}: choose one of {known}") from None


__all__ = ["STRATEGIES", "Strategy", "get_strategy"]
