"""The optimizer registry: every optimizer learns, LAMB follows its paper, 8-bit states are
small, and the training loop runs each `--train.optimizer`."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from tests.conftest import toy_examples
from tunelab.errors import TunelabError
from tunelab.training import options as train_options
from tunelab.training.optim import OPTIMIZERS, Lamb, build_optimizer, param_groups

LR = {"adamw": 1e-2, "lamb": 1e-2, "adafactor": 1e-2, "sgd": 5e-2, "adamw8bit": 1e-2}
"""A learning rate each optimizer learns the toy problem with in STEPS steps."""
STEPS = 60


def mlp() -> nn.Module:
    """A small regression MLP whose first weight has 4096 values, the smallest tensor that
    torchao's 8-bit optimizer quantizes (so adamw8bit really runs its 8-bit path)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 256), nn.LayerNorm(256), nn.Tanh(), nn.Linear(256, 1))


def toy_problem() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 16, generator=g)
    y = torch.sin(x[:, :4].sum(-1, keepdim=True))  # (64, 1): smooth, learnable
    return x, y


def test_the_registry_has_every_name_the_config_accepts() -> None:
    assert tuple(OPTIMIZERS) == train_options.OPTIMIZERS


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_each_optimizer_reduces_the_loss_of_a_tiny_problem(name: str) -> None:
    model, (x, y) = mlp(), toy_problem()
    opt = build_optimizer(model, LR[name], weight_decay=0.01, name=name)
    loss_fn = nn.MSELoss()
    with torch.no_grad():
        initial = loss_fn(model(x), y).item()
    for _ in range(STEPS):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    with torch.no_grad():
        final = loss_fn(model(x), y).item()
    assert final < 0.3 * initial, f"{name}: loss {initial:.4f} -> {final:.4f}"
    # every optimizer keeps the no-decay split: norms and biases in a group of their own
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, 0.01]
    if name == "adamw8bit":
        from torchao.optim.subclass_8bit import OptimState8bit

        assert isinstance(opt.state[model[0].weight]["exp_avg"], OptimState8bit)


def test_each_optimizer_is_the_library_one_asked_for() -> None:
    from torchao.optim import AdamW8bit
    from transformers.optimization import Adafactor

    expected = {
        "adamw": torch.optim.AdamW,
        "lamb": Lamb,
        "adafactor": Adafactor,
        "sgd": torch.optim.SGD,
        "adamw8bit": AdamW8bit,
    }
    for name, cls in expected.items():
        opt = build_optimizer(mlp(), 1e-3, name=name, momentum=0.8)
        assert type(opt) is cls, name
    sgd = build_optimizer(mlp(), 1e-3, name="sgd", momentum=0.8)
    assert all(g["momentum"] == 0.8 for g in sgd.param_groups)
    adafactor = build_optimizer(mlp(), 1e-3, name="adafactor")
    assert all(
        g["lr"] == 1e-3 and not g["relative_step"] and not g["scale_parameter"]
        for g in adafactor.param_groups
    )
    assert build_optimizer(mlp(), 1e-3).defaults["fused"] is True


def lamb_reference(
    w: torch.Tensor,
    grads: list[torch.Tensor],
    lr: float,
    b1: float,
    b2: float,
    eps: float,
    wd: float,
) -> torch.Tensor:
    """You et al. 2019, Algorithm 2, in float64 and plain arithmetic, step after step."""
    w, m, v = w.double().clone(), torch.zeros_like(w, dtype=torch.float64), 0.0
    v = torch.zeros_like(m)
    for t, g in enumerate(grads, start=1):
        g = g.double()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        r = m_hat / (v_hat.sqrt() + eps)
        u = r + wd * w
        w_norm = math.sqrt(float((w * w).sum()))
        u_norm = math.sqrt(float((u * u).sum()))
        trust = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
        w = w - lr * trust * u
    return w


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_lamb_steps_follow_the_published_update_rule(wd: float) -> None:
    w0 = torch.tensor([[0.5, -1.0, 2.0], [0.25, 0.0, -0.75]])
    grads = [
        torch.tensor([[0.1, -0.2, 0.3], [0.0, 0.5, -0.4]]),
        torch.tensor([[-0.3, 0.1, 0.2], [0.6, -0.1, 0.0]]),
        torch.tensor([[0.2, 0.2, -0.1], [-0.2, 0.3, 0.1]]),
    ]
    lr, b1, b2, eps = 0.1, 0.9, 0.99, 1e-6
    p = nn.Parameter(w0.clone())
    opt = Lamb([{"params": [p], "weight_decay": wd}], lr=lr, betas=(b1, b2), eps=eps)
    for t, g in enumerate(grads, start=1):
        p.grad = g.clone()
        opt.step()
        expected = lamb_reference(w0, grads[:t], lr, b1, b2, eps, wd)
        torch.testing.assert_close(p.detach().double(), expected, rtol=1e-6, atol=1e-7)
    # the first step of a trust-ratio method moves each layer by lr * ||w|| exactly
    q = nn.Parameter(w0.clone())
    one = Lamb([q], lr=lr, betas=(b1, b2), eps=eps)
    q.grad = grads[0].clone()
    one.step()
    moved = torch.linalg.vector_norm(q.detach() - w0)
    assert moved.item() == pytest.approx(lr * torch.linalg.vector_norm(w0).item(), rel=1e-5)


def test_lamb_trust_ratio_is_one_for_zero_weights() -> None:
    # ||w|| = 0 (a fresh zero-initialised bias): the step is lr * u, Adam's own step
    p = nn.Parameter(torch.zeros(4))
    opt = Lamb([p], lr=0.01, betas=(0.9, 0.999), eps=1e-8)
    p.grad = torch.tensor([1.0, -2.0, 0.5, 0.0])
    opt.step()
    expected = lamb_reference(torch.zeros(4), [p.grad], 0.01, 0.9, 0.999, 1e-8, 0.0)
    torch.testing.assert_close(p.detach().double(), expected)
    assert p[0].item() == pytest.approx(-0.01, rel=1e-5)  # m_hat / sqrt(v_hat) = sign(g)


def state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes held in the optimizer's state tensors (a tensor subclass: its inner tensors)."""

    def nbytes(t: torch.Tensor) -> int:
        if type(t) is not torch.Tensor and hasattr(t, "__tensor_flatten__"):
            names, _ = t.__tensor_flatten__()
            return sum(nbytes(getattr(t, n)) for n in names)
        return t.numel() * t.element_size()

    return sum(nbytes(v) for s in opt.state.values() for v in s.values() if torch.is_tensor(v))


def test_adamw8bit_state_is_a_fraction_of_adamws() -> None:
    sizes = {}
    for name in ("adamw", "adamw8bit", "adafactor"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(256, 256), nn.Linear(256, 256))
        opt = build_optimizer(model, 1e-3, name=name)
        model(torch.randn(4, 256)).sum().backward()
        opt.step()
        sizes[name] = state_bytes(opt)
    assert sizes["adamw"] > 2 * 2 * 256 * 256 * 4  # two fp32 moments per weight
    assert sizes["adamw8bit"] < 0.3 * sizes["adamw"], sizes
    assert sizes["adafactor"] < 0.05 * sizes["adamw"], sizes  # a row and a column per matrix


def test_unknown_optimizer_names_the_flag() -> None:
    with pytest.raises(TunelabError, match="unknown optimizer 'adam'.*--train.optimizer") as info:
        build_optimizer(mlp(), 1e-3, name="adam")
    assert "\n" not in str(info.value)


def test_adamw8bit_without_torchao_is_one_line(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torchao.optim", None)  # import fails
    with pytest.raises(TunelabError, match=r"needs torchao: pip install tunelab\[compress\]"):
        build_optimizer(mlp(), 1e-3, name="adamw8bit")


def test_param_groups_are_what_every_optimizer_gets() -> None:
    model = mlp()
    groups = param_groups(model, 0.05)
    for name in OPTIMIZERS:
        opt = build_optimizer(model, 1e-3, weight_decay=0.05, name=name)
        assert [len(g["params"]) for g in opt.param_groups] == [len(g["params"]) for g in groups]


@pytest.fixture(scope="module")
def tiny_classifier(tiny_models):
    from tunelab.models.load import load_classifier

    torch.manual_seed(0)
    return load_classifier(str(tiny_models["encoder"]), ["money", "sport", "tech"])


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_the_loop_trains_with_each_optimizer(name: str, tiny_classifier, tmp_path: Path) -> None:
    import copy

    from tunelab.tasks.classification import encode_examples, make_collate
    from tunelab.training.loop import train
    from tunelab.training.options import TrainOptions

    model = copy.deepcopy(tiny_classifier.model)
    tok = tiny_classifier.tokenizer
    data = encode_examples(toy_examples(16), tok, ["money", "sport", "tech"], max_length=32)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    used: list[type] = []
    handle = register_optimizer_step_pre_hook(lambda opt, *_: used.append(type(opt)))
    try:
        cfg = TrainOptions(
            precision="fp32", batch_size=8, lr=1e-3, max_steps=3, keep_best=False,
            optimizer=name, log_every=1,
        )  # fmt: skip
        result = train(model, data, make_collate(tok), cfg, tmp_path, show_progress=False)
    finally:
        handle.remove()
    assert result.steps == 3
    assert {type(build_optimizer(model, 1e-3, name=name))} <= set(used)
    after = dict(model.named_parameters())
    changed = [n for n in before if not torch.equal(before[n], after[n].detach())]
    assert changed, f"{name}: no weight changed"
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("name", ["lamb", "adafactor", "adamw8bit"])
def test_a_resumed_run_equals_an_uninterrupted_one(name: str, tiny_classifier, tmp_path: Path):
    """The optimizer state goes into the checkpoint and comes back (torchao's 8-bit states
    too), so stopping after 2 steps and resuming to 4 gives the weights of 4 steps in one go."""
    import copy

    from tunelab.tasks.classification import encode_examples, make_collate
    from tunelab.training.checkpoint import trainable_state
    from tunelab.training.loop import train
    from tunelab.training.options import TrainOptions

    tok = tiny_classifier.tokenizer
    data = encode_examples(toy_examples(16), tok, ["money", "sport", "tech"], max_length=32)

    def run(model, steps: int, work: Path, resume: bool = False):
        cfg = TrainOptions(
            precision="fp32", batch_size=8, lr=1e-3, max_steps=steps, keep_best=False,
            optimizer=name, schedule="constant", warmup_ratio=0.0,
        )  # fmt: skip
        train(model, data, make_collate(tok), cfg, work, show_progress=False, resume=resume)

    whole = copy.deepcopy(tiny_classifier.model)
    for m in whole.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    first = copy.deepcopy(whole)
    run(whole, 4, tmp_path / "whole")
    run(first, 2, tmp_path / "parts")
    resumed = copy.deepcopy(tiny_classifier.model)
    for m in resumed.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    run(resumed, 4, tmp_path / "parts", resume=True)
    want, got = trainable_state(whole), trainable_state(resumed)
    assert want.keys() == got.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6)
