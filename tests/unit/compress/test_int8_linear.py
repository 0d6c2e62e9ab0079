"""The int8-weight Linear on PyTorch's CPU kernel: exact against its own formula, safe on the
widths and memory the kernel cannot take."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from tunelab.compress.int8_linear import Int8PackLinear, fits, has_kernel, quantize_rows

pytestmark = pytest.mark.skipif(not has_kernel(), reason="this torch has no int8pack kernel")


def test_rows_round_to_bf16_scales_and_reconstruct_the_weight():
    torch.manual_seed(0)
    w = torch.randn(48, 64)
    q, scale = quantize_rows(w)
    assert q.dtype == torch.int8 and scale.dtype == torch.float32
    assert torch.equal(scale, scale.to(torch.bfloat16).float())  # exact in the kernel's bf16
    err = (q.float() * scale[:, None] - w).abs()
    assert (err <= scale[:, None] * 0.5 + 1e-6).all()  # at most half a step per weight
    assert q.abs().max() >= 126  # the largest weight of a row uses the range


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_output_is_the_dequantized_weight_applied_to_bf16_input(dtype):
    torch.manual_seed(1)
    lin = nn.Linear(64, 40)
    mod = Int8PackLinear.from_linear(lin)
    x = torch.randn(2, 3, 64, dtype=dtype)
    y = mod(x)
    assert y.shape == (2, 3, 40) and y.dtype == dtype
    w = mod.weight_int8.float() * mod.weight_scale[:, None]
    ref = F.linear(x.to(torch.bfloat16).float(), w, lin.bias.detach())
    assert (y.float() - ref).abs().max() <= 0.01 * ref.abs().max()
    full = lin(x.float()).detach()
    assert (y.float() - full).abs().max() <= 0.03 * full.abs().max()  # int8 + bf16 cost


def test_widths_the_kernel_cannot_take_are_not_taken():
    assert fits(nn.Linear(32, 7)) and fits(nn.Linear(48, 5))
    assert not fits(nn.Linear(37, 8)) and not fits(nn.Linear(24, 8))


def test_weights_read_from_a_file_at_any_address_are_safe(tmp_path):
    """A safetensors tensor can sit at an unaligned address: the module copies it."""
    torch.manual_seed(2)
    lin = nn.Linear(64, 32, bias=False)
    mod = Int8PackLinear.from_linear(lin)
    odd = torch.zeros(3, dtype=torch.int8)  # shifts the next tensor's offset in the file
    save_file({"a": odd, "q": mod.weight_int8, "s": mod.weight_scale}, tmp_path / "w.st")
    state = load_file(tmp_path / "w.st")
    again = Int8PackLinear(state["q"], state["s"], None)
    x = torch.randn(4, 64)
    assert torch.equal(again(x), mod(x))
