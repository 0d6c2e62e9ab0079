"""What a fine-tuning strategy is: an options dataclass, `apply`, and optional loop hooks.

Every strategy module defines `STRATEGY = Strategy(...)`; the registry in `__init__` finds it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

ApplyFn = Callable[[nn.Module, Any, str, int], nn.Module]
"""(model, options, family, total_steps) -> the model to train."""


@dataclass
class TrainView:
    """What the loop trains instead of the whole model (sharing its parameters)."""

    model: nn.Module
    datasets: dict[str, Any]
    """Split name -> dataset of what `model` reads (train, and validation when there is one)."""
    collate: Callable[[list], dict[str, Any]]
    seconds: float = 0.0
    """Time spent preparing the view (e.g. extracting features), counted as training time."""


@dataclass(frozen=True)
class BoundHooks:
    """A strategy's loop hooks with its options bound, as `training.loop.train` takes them."""

    before_step: Callable[[nn.Module, int, int], None] | None
    after_step: Callable[[nn.Module, int], None] | None
    param_groups: Callable[[nn.Module, float, float], list[dict]] | None


@dataclass(frozen=True)
class Strategy:
    """A registered strategy.

    Hooks receive the options dataclass instance (not a dict) as their second argument.
    """

    name: str
    config_cls: type
    apply: ApplyFn
    """Freeze / wrap the model; `total_steps` is the run's optimizer-step budget."""
    summary: str
    before_step: Callable[[nn.Module, Any, int, int], None] | None = None
    """Called with (model, options, step, epoch) before every optimizer step's first
    micro-batch, and once when a run starts or resumes: e.g. gradual unfreezing. Must be a
    function of (step, epoch) only, so a resumed run gets the same state."""
    after_step: Callable[[nn.Module, Any, int], None] | None = None
    """Called with (model, options, step) after optimizer.step(), before the gradients are
    cleared: e.g. AdaLoRA's rank allocation."""
    param_groups: Callable[[nn.Module, Any, float, float], list[dict]] | None = None
    """(model, options, lr, weight_decay) -> optimizer parameter groups (with their own "lr"
    where it differs), covering every parameter that may train during the run, including
    ones a hook unfreezes later. None: the default decay / no-decay split of trainable ones."""
    can_merge: bool = True
    """Whether `--merge` can fold what trained into plain base weights."""
    train_view: Callable[..., TrainView | None] | None = None
    """(model, options, datasets, collate, batch_size, progress) -> a TrainView to train in
    place of the model on its datasets, or None: e.g. a head on cached backbone features."""

    def bound_hooks(self, options: Any) -> BoundHooks:
        """The loop hooks with this run's options bound (None where the strategy has none)."""
        b, a, g = self.before_step, self.after_step, self.param_groups
        return BoundHooks(
            before_step=(lambda m, s, e: b(m, options, s, e)) if b else None,
            after_step=(lambda m, s: a(m, options, s)) if a else None,
            param_groups=(lambda m, lr, wd: g(m, options, lr, wd)) if g else None,
        )

    def options(self, values: dict[str, Any] | Any | None = None) -> Any:
        """The options dataclass from a dict (as in a config), or unchanged if already one."""
        if values is None:
            return self.config_cls()
        if dataclasses.is_dataclass(values) and not isinstance(values, type):
            return values
        return self.config_cls(**values)

    def build(
        self, model: nn.Module, options: dict[str, Any] | Any, family: str, total_steps: int
    ) -> nn.Module:
        """`apply` with the options converted to their dataclass."""
        return self.apply(model, self.options(options), family, total_steps)


def first_doc_line(doc: str | None) -> str:
    """The first line of a module docstring (a strategy's one-line summary)."""
    return (doc or "").strip().splitlines()[0]
