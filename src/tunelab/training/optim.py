"""AdamW over the trainable parameters, and the learning-rate schedules a run can pick.

Every schedule ramps linearly from 0 to the base learning rate over `warmup_steps`, then
follows its own curve until `total_steps`. The scheduler is stepped once per optimizer step.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from tunelab.errors import TunelabError
from tunelab.training.options import SCHEDULES

# Schedules for which transformers' own implementation is exactly the curve documented here.
_HF_NAMES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split the trainable parameters into a decayed and a non-decayed AdamW group.

    Biases, every other 1-D (or scalar) parameter and all parameters of normalisation
    modules (any class whose name contains "Norm": LayerNorm, RMSNorm, BatchNorm...) get no
    weight decay: shrinking a norm's gain or a bias toward 0 only hurts. Frozen parameters
    are left out; empty groups are omitted.

    Args:
        model: The model to train (its strategy has already frozen what must not train).
        weight_decay: Decay of the decayed group.

    Returns:
        AdamW parameter groups, each `{"params": [...], "weight_decay": float}`.

    Raises:
        TunelabError: No parameter requires grad.
    """
    in_norm = {
        id(p)
        for module in model.modules()
        if "Norm" in type(module).__name__
        for p in module.parameters(recurse=False)
    }
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    # named_parameters() yields a tied (shared) parameter once, so none is optimised twice
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or id(p) in in_norm else decay).append(p)
    if not decay and not no_decay:
        raise TunelabError(
            "nothing to train: the strategy froze every parameter; pick a strategy or "
            "options that leave some weights trainable"
        )
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.01,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    groups: list[dict] | None = None,
    name: str = "adamw",
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """Fused AdamW over `groups` (a strategy's own, e.g. layer-wise learning rates), or by
    default over `param_groups(model, weight_decay)`.

    Raises:
        TunelabError: `lr` is not positive, `weight_decay` is negative, or nothing trains.
    """
    if not lr > 0:
        raise TunelabError(f"learning rate must be positive, got {lr}: set train.lr, e.g. 1e-4")
    if weight_decay < 0:
        raise TunelabError(
            f"weight decay must be >= 0, got {weight_decay}: set train.weight_decay, e.g. 0.01"
        )
    # fused: one kernel over all parameters (CPU and CUDA), as Trainer uses by default
    if groups is None:
        groups = param_groups(model, weight_decay)
    elif not any(g["params"] for g in groups):
        raise TunelabError("nothing to train: the strategy's parameter groups are empty")
    if name != "adamw":
        raise TunelabError(f"unknown optimizer {name!r}: set train.optimizer to adamw")
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str,
    total_steps: int,
    warmup_steps: int = 0,
    step_size: int | None = None,
    gamma: float = 0.5,
) -> LRScheduler:
    """A learning-rate schedule with linear warmup, stepped once per optimizer step.

    With `w = warmup_steps`, the lr factor is `t / w` for step `t < w`, then:

    - `constant`: 1.
    - `linear`: falls linearly to 0 at `total_steps`.
    - `cosine`: half a cosine from 1 to 0 at `total_steps`.
    - `step`: `gamma ** ((t - w) // step_size)`: multiplied by `gamma` every `step_size`
      steps after warmup.
    - `exponential`: `gamma ** ((t - w) / step_size)`: the smooth version of `step`, the
      same factor at each boundary but decaying continuously in between.

    `step_size` defaults to a third of the post-warmup steps (rounded down), so both `step`
    and `exponential` end the run near `gamma ** 3` of the base lr (about 1/8 with the
    default `gamma=0.5`).

    Args:
        optimizer: The optimizer whose groups' lr is scheduled.
        name: One of SCHEDULES.
        total_steps: Optimizer steps in the whole run.
        warmup_steps: Steps of linear warmup (0..total_steps).
        step_size: `step` / `exponential`: steps per factor of `gamma`.
        gamma: `step` / `exponential`: the factor, in (0, 1].

    Raises:
        TunelabError: Unknown name, or steps / step_size / gamma out of range.
    """
    if name not in SCHEDULES:
        raise TunelabError(
            f"unknown schedule {name!r}: set train.schedule to one of {', '.join(SCHEDULES)}"
        )
    if total_steps < 1:
        raise TunelabError(
            f"the run has {total_steps} optimizer steps: give more data, epochs or max_steps"
        )
    if not 0 <= warmup_steps <= total_steps:
        raise TunelabError(
            f"warmup of {warmup_steps} steps does not fit a run of {total_steps} steps: "
            "set train.warmup_ratio between 0 and 1"
        )
    if name in _HF_NAMES:
        from transformers import get_scheduler

        return get_scheduler(
            _HF_NAMES[name],
            optimizer,
            num_warmup_steps=warmup_steps,
            num_training_steps=total_steps,
        )

    if step_size is not None and step_size < 1:
        raise TunelabError(f"step_size must be >= 1, got {step_size}: set train.step_size")
    if not 0 < gamma <= 1:
        raise TunelabError(f"gamma must be in (0, 1], got {gamma}: set train.gamma, e.g. 0.5")
    size = step_size or max(1, (total_steps - warmup_steps) // 3)
    decay = _step_factor if name == "step" else _exponential_factor
    # partial of module-level functions (not a closure) keeps the scheduler picklable
    lr_lambda = partial(decay, warmup=warmup_steps, step_size=size, gamma=gamma)
    return LambdaLR(optimizer, lr_lambda)


def _warmup(t: int, warmup: int) -> float | None:
    """The warmup factor at step `t`, or None once warmup is over."""
    return t / warmup if t < warmup else None


def _step_factor(t: int, *, warmup: int, step_size: int, gamma: float) -> float:
    ramp = _warmup(t, warmup)
    return ramp if ramp is not None else gamma ** ((t - warmup) // step_size)


def _exponential_factor(t: int, *, warmup: int, step_size: int, gamma: float) -> float:
    ramp = _warmup(t, warmup)
    return ramp if ramp is not None else math.pow(gamma, (t - warmup) / step_size)
