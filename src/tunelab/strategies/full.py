"""full: every weight trains (the reference every other strategy is weighed against)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from tunelab.strategies.base import Strategy, first_doc_line


@dataclass
class FullConfig:
    """`full` has no options of its own."""


def apply(model: nn.Module, options: FullConfig, family: str, total_steps: int) -> nn.Module:
    """Make every parameter trainable and return the model unchanged otherwise."""
    for p in model.parameters():
        p.requires_grad_(True)
    return model


STRATEGY = Strategy("full", FullConfig, apply, first_doc_line(__doc__))
