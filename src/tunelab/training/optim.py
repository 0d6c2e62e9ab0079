"""The optimizers a run can pick (`--train.optimizer`), and its learning-rate schedules.

One registry, `OPTIMIZERS`, from name to builder; every builder gets the same parameter
groups (no weight decay on biases and norms, see `param_groups`):

- `adamw`: torch's fused AdamW, the default.
- `lamb`: LAMB (layer-wise trust ratio), the paper's algorithm written here (see `Lamb` for
  why not a library's).
- `adafactor`: transformers' Adafactor with an explicit learning rate: factored second
  moments and no first moment, so its state is a row and a column per matrix.
- `sgd`: torch's SGD with momentum (weight decay as L2 in the gradient, as torch does).
- `adamw8bit`: torchao's AdamW8bit: both moments in 8 bits (block-wise scales), about a
  quarter of AdamW's state; tensors under 4096 values keep fp32 states (as bitsandbytes).
  Its step is torch.compile'd (the first step of each shape compiles, CPU too).

Every schedule ramps linearly from 0 to the base learning rate over `warmup_steps`, then
follows its own curve until `total_steps`. The scheduler is stepped once per optimizer step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
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
    """The optimizer `name` (see `OPTIMIZERS`) over `groups` (a strategy's own, e.g.
    layer-wise learning rates), or by default over `param_groups(model, weight_decay)`.

    `betas` and `eps` are AdamW's, LAMB's and AdamW8bit's; `momentum` is SGD's. Adafactor
    keeps transformers' own constants (no first moment, clip threshold 1).

    Raises:
        TunelabError: `lr` is not positive, `weight_decay` is negative, nothing trains, an
            unknown `name`, or adamw8bit without torchao installed.
    """
    if not lr > 0:
        raise TunelabError(f"learning rate must be positive, got {lr}: set train.lr, e.g. 1e-4")
    if weight_decay < 0:
        raise TunelabError(
            f"weight decay must be >= 0, got {weight_decay}: set train.weight_decay, e.g. 0.01"
        )
    if groups is None:
        groups = param_groups(model, weight_decay)
    elif not any(g["params"] for g in groups):
        raise TunelabError("nothing to train: the strategy's parameter groups are empty")
    builder = OPTIMIZERS.get(name)
    if builder is None:
        raise TunelabError(
            f"unknown optimizer {name!r}: set --train.optimizer to one of {', '.join(OPTIMIZERS)}"
        )
    return builder(groups, lr=lr, betas=betas, eps=eps, momentum=momentum)


class Lamb(torch.optim.Optimizer):
    """LAMB: Adam's direction, scaled per parameter tensor ("layer") by a trust ratio.

    You et al., 2019, "Large Batch Optimization for Deep Learning: Training BERT in 76
    minutes" (arXiv:1904.00962), Algorithm 2, with bias correction and decoupled weight
    decay `wd`; at step t, for each tensor w with gradient g:

        m = b1 m + (1 - b1) g            v = b2 v + (1 - b2) g^2
        r = (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
        u = r + wd w
        w = w - lr (||w|| / ||u||) u     (the ratio is 1 where either norm is 0)

    The ratio keeps each layer's step proportional to its weights' size, which is what lets
    LAMB take the very large batches (and learning rates) where Adam diverges. Written here:
    apex's and DeepSpeed's fused LAMBs are CUDA only, and timm's pure-PyTorch `Lamb` is
    NVIDIA's variant (it clips the global gradient norm inside the step and by default skips
    the trust ratio for groups without weight decay) and would pull in a vision-model
    library; this one is the paper's Algorithm 2, checked against it step by step in
    tests/unit/training/test_optimizers.py.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
    ) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One LAMB update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = float(state["step"])
                m, v, g = state["exp_avg"], state["exp_avg_sq"], p.grad
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (v / (1 - b2**t)).sqrt_().add_(group["eps"])
                update = (m / (1 - b1**t)).div_(denom)
                if group["weight_decay"]:
                    update.add_(p, alpha=group["weight_decay"])
                w_norm, u_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
                usable = (w_norm > 0) & (u_norm > 0)
                trust = torch.where(usable, w_norm / u_norm.clamp_min(1e-38), 1.0)
                p.sub_(update.mul_(trust * group["lr"]))
        return loss


Builder = Callable[..., torch.optim.Optimizer]
"""(param groups, *, lr, betas, eps, momentum) -> the optimizer; each group carries its own
weight_decay (and may carry its own lr)."""


def _adamw(groups: list[dict], *, lr: float, betas, eps: float, momentum: float):
    # fused: one kernel over all parameters (CPU and CUDA), as Trainer uses by default
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True)


def _lamb(groups: list[dict], *, lr: float, betas, eps: float, momentum: float):
    return Lamb(groups, lr=lr, betas=betas, eps=eps)


def _adafactor(groups: list[dict], *, lr: float, betas, eps: float, momentum: float):
    from transformers.optimization import Adafactor

    # an explicit lr (the schedule drives it) instead of Adafactor's own relative step size
    return Adafactor(groups, lr=lr, scale_parameter=False, relative_step=False, warmup_init=False)


def _sgd(groups: list[dict], *, lr: float, betas, eps: float, momentum: float):
    return torch.optim.SGD(groups, lr=lr, momentum=momentum)


def _adamw8bit(groups: list[dict], *, lr: float, betas, eps: float, momentum: float):
    try:
        from torchao.optim import AdamW8bit
    except ImportError:
        raise TunelabError(
            "--train.optimizer adamw8bit needs torchao: pip install tunelab[compress] "
            "(or pip install torchao)"
        ) from None
    return AdamW8bit(groups, lr=lr, betas=betas, eps=eps)


OPTIMIZERS: dict[str, Builder] = {
    "adamw": _adamw,
    "lamb": _lamb,
    "adafactor": _adafactor,
    "sgd": _sgd,
    "adamw8bit": _adamw8bit,
}
"""`--train.optimizer` name -> builder (the same names as `training.options.OPTIMIZERS`,
which the config checks without importing torch)."""


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
