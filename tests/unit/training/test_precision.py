"""Which precision the loop really trains in for `--train.precision auto | fp32 | bf16`.

The expected answer on this machine is read from the hardware itself (the GPU's bf16 check
when there is a GPU, else oneDNN's check of the CPU). The loop's own check, `native_bf16`, is
also replaced by either answer, so both branches run on every machine. What is checked is
the dtype the model's layers compute in while the loop trains, seen by forward hooks inside
the model (accelerate casts the model's outputs back to fp32, so they would not tell).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from tunelab.errors import TunelabError
from tunelab.training import loop
from tunelab.training.options import TrainOptions

if torch.cuda.is_available():
    HARDWARE_BF16 = torch.cuda.is_bf16_supported()
else:
    HARDWARE_BF16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
"""Whether the device the loop trains on has native bf16, asked of torch directly."""


class TwoLayers(nn.Module):
    """A tiny classifier with the loop's interface: forward(**batch) -> an output with .loss."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(8, 16)
        self.out = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> SimpleNamespace:
        logits = self.out(torch.relu(self.hidden(x)))  # (batch, 3)
        return SimpleNamespace(loss=F.cross_entropy(logits.float(), labels))


def collate(examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([e[k] for e in examples]) for k in examples[0]}


def train_dtypes(precision: str, workdir: Path) -> set[torch.dtype]:
    """Train 2 steps with `precision`; the dtypes the Linear layers computed in."""
    torch.manual_seed(0)
    model = TwoLayers()
    data = [{"x": torch.randn(8), "labels": torch.tensor(i % 3)} for i in range(8)]
    seen: set[torch.dtype] = set()
    for layer in (model.hidden, model.out):
        layer.register_forward_hook(lambda mod, args, out: seen.add(out.dtype))
    options = TrainOptions(precision=precision, batch_size=4, max_steps=2, keep_best=False)
    result = loop.train(model, data, collate, options, workdir, show_progress=False)
    assert result.steps == 2
    # autocast computes in bf16 but keeps (and updates) the fp32 weights
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert all(torch.isfinite(p).all() for p in model.parameters())
    return seen


def test_native_bf16_is_the_hardware_check():
    assert loop.native_bf16() is HARDWARE_BF16


@pytest.mark.parametrize("native", [True, False], ids=["native-bf16", "no-bf16"])
def test_resolve_precision_follows_the_hardware_check(monkeypatch, native):
    monkeypatch.setattr(loop, "native_bf16", lambda: native)
    assert loop.resolve_precision("fp32") == "no"
    assert loop.resolve_precision("auto") == ("bf16" if native else "no")
    if native:
        assert loop.resolve_precision("bf16") == "bf16"
    else:
        with pytest.raises(TunelabError, match="no native bf16.*--train.precision fp32"):
            loop.resolve_precision("bf16")
    assert loop.resolve_precision("fp16") == "fp16"
    with pytest.raises(TunelabError, match="unknown precision 'fp8'"):
        loop.resolve_precision("fp8")


def test_fp32_trains_with_fp32_activations(tmp_path):
    assert train_dtypes("fp32", tmp_path) == {torch.float32}


def test_auto_trains_in_bf16_exactly_where_the_hardware_has_it(tmp_path):
    expected = torch.bfloat16 if HARDWARE_BF16 else torch.float32
    assert train_dtypes("auto", tmp_path) == {expected}


def test_bf16_trains_in_bf16_where_the_hardware_has_it_else_is_an_error(tmp_path):
    if HARDWARE_BF16:
        assert train_dtypes("bf16", tmp_path) == {torch.bfloat16}
    else:
        with pytest.raises(TunelabError, match="no native bf16"):
            train_dtypes("bf16", tmp_path)


@pytest.mark.parametrize("native", [True, False], ids=["native-bf16", "no-bf16"])
def test_auto_follows_the_loops_hardware_check(monkeypatch, tmp_path, native):
    # bf16 autocast also runs (emulated) where the hardware lacks it, so both answers train
    monkeypatch.setattr(loop, "native_bf16", lambda: native)
    expected = torch.bfloat16 if native else torch.float32
    assert train_dtypes("auto", tmp_path) == {expected}
    assert train_dtypes("fp32", tmp_path / "fp32") == {torch.float32}
