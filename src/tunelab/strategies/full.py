"""full: every weight trains (the reference every other strategy is weighed against)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass
class FullConfig:
    """`full` has no options of its own."""


def apply(model: nn.Module, options: FullConfig, family: str) -> nn.Module:
    """Make every parameter trainable and return the model unchanged otherwise."""
    for p in model.parameters():
        p.requires_grad_(True)
    return model
