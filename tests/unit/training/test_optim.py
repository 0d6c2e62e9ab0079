"""Parameter grouping, the optimizer, and the shape of every learning-rate schedule."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from tunelab.errors import TunelabError
from tunelab.training.optim import SCHEDULES, build_optimizer, build_scheduler, param_groups

BASE_LR = 1e-3


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.linear = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 2)


class RMSNormLike(nn.Module):
    """A norm with only 2-D parameters, to prove norms are recognised by class name."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, 8))


def _ids(params: list) -> set[int]:
    return {id(p) for p in params}


def _by_decay(groups: list[dict]) -> dict[float, set[int]]:
    return {g["weight_decay"]: _ids(g["params"]) for g in groups}


def test_biases_and_norms_get_no_decay() -> None:
    model = Tiny()
    groups = _by_decay(param_groups(model, 0.1))
    no_decay = {model.linear.bias, model.head.bias, model.norm.weight, model.norm.bias}
    decay = {model.embed.weight, model.linear.weight, model.head.weight}
    assert groups[0.0] == _ids(no_decay)
    assert groups[0.1] == _ids(decay)


def test_norm_modules_recognised_by_class_name() -> None:
    model = nn.Sequential(nn.Linear(8, 8), RMSNormLike())
    groups = _by_decay(param_groups(model, 0.1))
    assert id(model[1].scale) in groups[0.0]
    assert id(model[0].weight) in groups[0.1]


def test_frozen_parameters_are_left_out_and_empty_groups_omitted() -> None:
    model = Tiny()
    for p in model.parameters():
        p.requires_grad_(False)
    model.head.weight.requires_grad_(True)
    groups = param_groups(model, 0.1)
    assert len(groups) == 1
    assert groups[0]["weight_decay"] == 0.1 and _ids(groups[0]["params"]) == {id(model.head.weight)}


def test_all_frozen_is_a_user_error() -> None:
    model = Tiny()
    model.requires_grad_(False)
    with pytest.raises(TunelabError, match="nothing to train"):
        param_groups(model, 0.1)
    with pytest.raises(TunelabError, match="nothing to train"):
        build_optimizer(model, BASE_LR)


def test_build_optimizer_is_adamw_with_settings() -> None:
    opt = build_optimizer(Tiny(), BASE_LR, weight_decay=0.05, betas=(0.8, 0.9), eps=1e-6)
    assert isinstance(opt, torch.optim.AdamW)
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, 0.05]
    assert all(g["lr"] == BASE_LR and g["betas"] == (0.8, 0.9) for g in opt.param_groups)
    assert all(g["eps"] == 1e-6 for g in opt.param_groups)


@pytest.mark.parametrize(("lr", "wd"), [(0.0, 0.01), (-1e-3, 0.01), (1e-3, -0.1)])
def test_bad_optimizer_settings_are_user_errors(lr: float, wd: float) -> None:
    with pytest.raises(TunelabError):
        build_optimizer(Tiny(), lr, weight_decay=wd)


def _curve(name: str, total: int, warmup: int, **kwargs) -> list[float]:
    """lr before each of `total` optimizer steps, plus the lr after the last one."""
    opt = build_optimizer(Tiny(), BASE_LR)
    sched = build_scheduler(opt, name, total, warmup, **kwargs)
    lrs = [sched.get_last_lr()[0]]
    for _ in range(total):
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    assert all(g["lr"] == lrs[-1] for g in opt.param_groups)  # every group follows
    return lrs


def _non_increasing(xs: list[float]) -> bool:
    return all(b <= a + 1e-15 for a, b in itertools.pairwise(xs))


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize(("total", "warmup"), [(40, 0), (40, 8), (7, 3), (1, 0), (5, 5)])
def test_warmup_ramps_to_base_lr(name: str, total: int, warmup: int) -> None:
    lrs = _curve(name, total, warmup)
    ramp = lrs[:warmup]
    assert all(b > a for a, b in itertools.pairwise(ramp))
    if warmup:
        assert lrs[0] == 0.0
        assert lrs[warmup - 1] < BASE_LR
    if warmup < total:  # when warmup fills the run, the schedule's end value comes next
        assert lrs[warmup] == pytest.approx(BASE_LR)
    assert max(lrs) <= BASE_LR * (1 + 1e-12)


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize(("total", "warmup"), [(40, 0), (40, 8), (7, 3)])
def test_linear_and_cosine_decay_to_zero(name: str, total: int, warmup: int) -> None:
    lrs = _curve(name, total, warmup)
    assert _non_increasing(lrs[warmup:])
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
    assert lrs[-2] > 0.0  # the last step still trains
    if name == "linear" and warmup == 0:
        assert lrs[total // 2] == pytest.approx(BASE_LR / 2)
    if name == "cosine" and warmup == 0:
        assert lrs[total // 2] == pytest.approx(BASE_LR / 2)
        assert lrs[total // 4] == pytest.approx(BASE_LR * (1 + math.cos(math.pi / 4)) / 2)


def test_constant_is_flat_after_warmup() -> None:
    lrs = _curve("constant", 30, 5)
    assert all(lr == pytest.approx(BASE_LR) for lr in lrs[5:])


@pytest.mark.parametrize(("step_size", "gamma"), [(4, 0.5), (10, 0.1), (1, 0.9)])
def test_step_drops_by_gamma_at_boundaries(step_size: int, gamma: float) -> None:
    warmup = 3
    lrs = _curve("step", 30, warmup, step_size=step_size, gamma=gamma)
    for t in range(warmup, 31):
        drops = (t - warmup) // step_size
        assert lrs[t] == pytest.approx(BASE_LR * gamma**drops)


def test_step_default_step_size_is_a_third_of_the_decay_phase() -> None:
    lrs = _curve("step", 32, 2)  # 30 decay steps -> a drop every 10
    assert lrs[11] == pytest.approx(BASE_LR)
    assert lrs[12] == pytest.approx(BASE_LR * 0.5)
    assert lrs[32] == pytest.approx(BASE_LR * 0.125)


@pytest.mark.parametrize(
    ("total", "warmup", "step_size", "gamma"), [(40, 4, None, 0.5), (20, 0, 3, 0.2)]
)
def test_exponential_decays_smoothly(
    total: int, warmup: int, step_size: int | None, gamma: float
) -> None:
    lrs = _curve("exponential", total, warmup, step_size=step_size, gamma=gamma)
    after = lrs[warmup:]
    assert all(b < a for a, b in itertools.pairwise(after))  # strictly decreasing
    size = step_size or (total - warmup) // 3
    # same value as `step` at every boundary, constant ratio between consecutive steps
    assert lrs[warmup + size] == pytest.approx(BASE_LR * gamma)
    assert lrs[warmup + 2 * size] == pytest.approx(BASE_LR * gamma**2)
    ratios = {round(b / a, 12) for a, b in itertools.pairwise(after)}
    assert len(ratios) == 1


def test_unknown_schedule_lists_the_choices() -> None:
    opt = build_optimizer(Tiny(), BASE_LR)
    with pytest.raises(TunelabError, match="unknown schedule 'polynomial'") as info:
        build_scheduler(opt, "polynomial", 10)
    assert all(name in str(info.value) for name in SCHEDULES)


@pytest.mark.parametrize(
    ("name", "total", "warmup", "kwargs"),
    [
        ("linear", 0, 0, {}),
        ("cosine", 10, 11, {}),
        ("constant", 10, -1, {}),
        ("step", 10, 0, {"step_size": 0}),
        ("step", 10, 0, {"gamma": 0.0}),
        ("exponential", 10, 0, {"gamma": 1.5}),
    ],
)
def test_bad_schedule_settings_are_user_errors(
    name: str, total: int, warmup: int, kwargs: dict
) -> None:
    opt = build_optimizer(Tiny(), BASE_LR)
    with pytest.raises(TunelabError):
        build_scheduler(opt, name, total, warmup, **kwargs)


def test_scheduler_state_round_trips() -> None:
    """Resume restores the schedule position from state_dict (what checkpoints store)."""
    opt = build_optimizer(Tiny(), BASE_LR)
    sched = build_scheduler(opt, "exponential", 20, 2)
    for _ in range(7):
        opt.step()
        sched.step()
    opt2 = build_optimizer(Tiny(), BASE_LR)
    sched2 = build_scheduler(opt2, "exponential", 20, 2)
    sched2.load_state_dict(sched.state_dict())
    for o, s in ((opt, sched), (opt2, sched2)):
        o.step()
        s.step()
    assert sched2.get_last_lr() == pytest.approx(sched.get_last_lr())
