"""Distillation options: `DistillOptions` and `check_options`.

No torch or transformers here: `tunelab compress --help` reads the attribute docstrings
(`--distill.KEY`), and `check_options` turns a value out of range into one TunelabError line.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunelab.errors import TunelabError


@dataclass
class DistillOptions:
    temperature: float = 2.0
    """Softmax temperature of teacher and student for the soft-target loss (scaled by T^2)."""
    alpha: float = 0.5
    """Weight of the soft-target loss; 1 - alpha goes to the student's own task loss."""
    hidden_weight: float = 0.0
    """Weight of the MSE between matched hidden states (a learned linear projection maps the
    student's width to the teacher's when they differ); 0 turns it off."""
    loss: str = "kl"
    """Soft-target loss: kl (forward KL, teacher || student) or jsd (generalized JSD as in
    GKD, beta 0.5)."""


def check_options(options: DistillOptions) -> None:
    """A one-line TunelabError naming the `--distill.KEY` flag of a value out of range."""
    o = options
    if not o.temperature > 0:
        raise TunelabError(f"--distill.temperature must be above 0, not {o.temperature}")
    if not 0.0 <= o.alpha <= 1.0:
        raise TunelabError(f"--distill.alpha must be between 0 and 1, not {o.alpha}")
    if not o.hidden_weight >= 0:
        raise TunelabError(f"--distill.hidden_weight must be 0 or more, not {o.hidden_weight}")
    if o.loss not in ("kl", "jsd"):
        raise TunelabError(f"--distill.loss takes kl or jsd, not {o.loss!r}")
