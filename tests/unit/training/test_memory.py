"""Memory levers of the loop: gradient checkpointing (same gradients, fewer saved
activations) and fp16 mixed precision with loss scaling on the CPU (fp16 compute, fp32
weights)."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

from tests.conftest import toy_examples
from tunelab.errors import TunelabError
from tunelab.training import loop
from tunelab.training.options import TrainOptions

LABELS = ["money", "sport", "tech"]
GRAD_RTOL, GRAD_ATOL = 1e-5, 1e-6
"""Checkpointing recomputes the same fp32 operations: gradients agree to float rounding."""


@pytest.fixture(scope="module")
def decoder(tiny_models):
    """(tiny Llama classifier with dropout off, one collated batch)."""
    from tunelab.models.load import load_classifier
    from tunelab.tasks.classification import encode_examples, make_collate

    torch.manual_seed(0)
    loaded = load_classifier(str(tiny_models["decoder"]), LABELS, attention_dropout=0.0)
    data = encode_examples(toy_examples(16), loaded.tokenizer, LABELS, max_length=32)
    batch = dict(make_collate(loaded.tokenizer)([data[i] for i in range(len(data))]))
    return loaded.model, batch, data, make_collate(loaded.tokenizer)


def _no_dropout(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return model


def _grads_and_saved_bytes(model: nn.Module, batch: dict) -> tuple[dict, int, int]:
    """(gradients, bytes autograd kept for the backward pass, forwards of the first MLP)."""
    calls = []
    # a module inside the block (transformers checkpoints a block's forward, not its hooks),
    # seen as it starts (a recompute stops early, once the last tensor it needs is back)
    handle = model.model.layers[0].mlp.register_forward_pre_hook(lambda *a: calls.append(1))
    saved = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel() * t.element_size())
        return t

    model.train()
    model.zero_grad(set_to_none=True)
    # tensors saved inside a checkpointed block go to checkpointing's own hooks (and are
    # dropped), so this counts exactly what is kept between the forward and the backward
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**batch).loss
    loss.backward()
    handle.remove()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return grads, sum(saved), len(calls)


def test_checkpointing_gives_the_same_gradients_and_keeps_fewer_activations(decoder):
    model, batch, _, _ = decoder
    plain = _no_dropout(copy.deepcopy(model))
    ckpt = copy.deepcopy(plain)
    loop.enable_gradient_checkpointing(ckpt)
    assert ckpt.is_gradient_checkpointing

    ref, ref_bytes, ref_calls = _grads_and_saved_bytes(plain, batch)
    got, got_bytes, got_calls = _grads_and_saved_bytes(ckpt, batch)
    assert ref.keys() == got.keys() and len(ref) == len(list(model.parameters()))
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=GRAD_RTOL, atol=GRAD_ATOL)
    # each block ran again in the backward pass, and far less was kept in between
    assert (ref_calls, got_calls) == (1, 2)
    assert got_bytes < 0.5 * ref_bytes, (got_bytes, ref_bytes)


def test_the_loop_flag_turns_checkpointing_on_and_trains_the_same(decoder, tmp_path):
    model, _, data, collate = decoder
    results = {}
    for flag in (False, True):
        m = _no_dropout(copy.deepcopy(model))
        calls: list[int] = []
        m.model.layers[0].mlp.register_forward_pre_hook(lambda *a, calls=calls: calls.append(1))
        options = TrainOptions(
            precision="fp32", batch_size=8, lr=1e-3, max_steps=3, keep_best=False,
            gradient_checkpointing=flag,
        )  # fmt: skip
        loop.train(m, data, collate, options, tmp_path / str(flag), show_progress=False)
        assert m.is_gradient_checkpointing is flag
        assert len(calls) == 3 * (2 if flag else 1)  # 3 steps; recomputed in each backward
        results[flag] = {n: p.detach() for n, p in m.named_parameters()}
    for name, ref in results[False].items():
        torch.testing.assert_close(results[True][name], ref, rtol=1e-4, atol=1e-5)


def test_a_model_without_checkpointing_is_one_line(tmp_path):
    model = TwoLayers()
    with pytest.raises(TunelabError, match="--train.gradient_checkpointing") as info:
        loop.enable_gradient_checkpointing(model)
    assert "\n" not in str(info.value)
    options = TrainOptions(precision="fp32", batch_size=4, max_steps=1, gradient_checkpointing=True)
    with pytest.raises(TunelabError, match="does not support gradient checkpointing"):
        loop.train(model, _points(8), _collate, options, tmp_path, show_progress=False)


class TwoLayers(nn.Module):
    """A tiny classifier with the loop's interface (as in test_precision)."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(8, 32)
        self.out = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> SimpleNamespace:
        logits = self.out(torch.relu(self.hidden(x)))  # (batch, 3)
        return SimpleNamespace(loss=F.cross_entropy(logits.float(), labels))


def _points(n: int) -> list[dict[str, torch.Tensor]]:
    """A learnable toy problem: the label is the argmax of three fixed projections of x."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    labels = (x @ torch.randn(8, 3, generator=g)).argmax(-1)
    return [{"x": x[i], "labels": labels[i]} for i in range(n)]


def _collate(examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([e[k] for e in examples]) for k in examples[0]}


def test_fp16_on_cpu_computes_in_fp16_scales_the_loss_and_keeps_fp32_weights(
    monkeypatch, tmp_path: Path
):
    if torch.cuda.is_available():
        pytest.skip("on a GPU accelerate runs fp16 itself; the CPU path is what is checked")
    used: list[torch.amp.GradScaler] = []

    class SpyScaler(torch.amp.GradScaler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.steps = 0
            used.append(self)

        def step(self, optimizer, *args, **kwargs):
            self.steps += 1
            return super().step(optimizer, *args, **kwargs)

    monkeypatch.setattr(torch.amp, "GradScaler", SpyScaler)
    torch.manual_seed(0)
    model = TwoLayers()
    data = _points(64)
    with torch.no_grad():
        batch = _collate(data)
        initial = model(**batch).loss.item()
    seen: set[torch.dtype] = set()
    hooks = [
        layer.register_forward_hook(lambda mod, args, out: seen.add(out.dtype))
        for layer in (model.hidden, model.out)
    ]
    options = TrainOptions(
        precision="fp16", batch_size=16, lr=1e-2, max_steps=40, keep_best=False, log_every=1,
        schedule="constant", warmup_ratio=0.0,
    )  # fmt: skip
    result = loop.train(model, data, _collate, options, tmp_path, show_progress=False)
    assert result.steps == 40
    assert seen == {torch.float16}
    for hook in hooks:
        hook.remove()
    assert len(used) == 1 and used[0].steps == 40  # every optimizer step went through it
    assert used[0].get_scale() > 1.0  # the loss was scaled (65536 at start, halved on inf)
    with torch.no_grad():
        final = model(**batch).loss.item()
    assert final < 0.5 * initial, (initial, final)
    # the weights trained and saved are fp32: autocast only changes what layers compute in
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    saved = load_file(str(tmp_path / "checkpoint" / "trainable.safetensors"))
    assert saved and {t.dtype for t in saved.values()} == {torch.float32}
