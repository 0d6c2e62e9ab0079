"""full: every weight trains (the reference every other strategy is weighed against)."""

from __future__ import annotations

from torch import nn

from tunelab.strategies.base import Strategy, first_doc_line
from tunelab.strategies.options import FullOptions


def apply(model: nn.Module, options: FullOptions, family: str, total_steps: int) -> nn.Module:
    """Make every parameter trainable and return the model unchanged otherwise."""
    for p in model.parameters():
        p.requires_grad_(True)
    return model


STRATEGY = Strategy("full", FullOptions, apply, first_doc_line(__doc__))
