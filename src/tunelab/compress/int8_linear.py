"""A Linear with int8 weights (symmetric, one scale per output row) and bf16 activations, run by
PyTorch's CPU kernel `aten._weight_int8pack_mm`.

Why by hand: torchao's `Int8WeightOnlyConfig` runs, in eager mode, `x @ w.to(x.dtype) * scale`:
it widens the whole int8 matrix on every call, so it is slower than fp32 (0.7-0.95x on
SmolLM2, docs/compression.md; 14.5 against 19.4 tokens/s in transformers' generate()). PyTorch
ships a fused int8-weight kernel for CPU that reads each weight byte once, but no module uses it
outside torch.compile's lowering. At batch 1 it reads a quarter of fp32's bytes: measured per
layer on SmolLM2's shapes (`bench/generate_throughput.py --layers`), 2.5-3.5x fp32 and 1.5-2x
bf16; in the whole decode step see docs/generation.md. The kernel wants bf16 activations and
bf16 scales (fp32 ones run 3-30x slower), so the scale is rounded to bf16 before the weights
are rounded to it: `q * scale` is then exactly the weight every backend reads from the file.
It also wants in_features a multiple of 16 (other widths crash or return garbage): such a
Linear stays bf16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

K_MULTIPLE = 16  # the kernel reads rows in 16s: other widths crash or return garbage


def has_kernel() -> bool:
    """Whether this torch build has the CPU int8-weight kernel."""
    return hasattr(torch.ops.aten, "_weight_int8pack_mm")


def fits(mod: nn.Linear) -> bool:
    """Whether the kernel takes this Linear (in_features a multiple of 16)."""
    return mod.in_features % K_MULTIPLE == 0 and mod.in_features > 0


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q int8 (out, in), scale float32 (out,)) with weight ~= q * scale[:, None]; the scale
    is a bf16 value (exact in fp32) so the kernel's bf16 scale loses nothing."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12).to(torch.bfloat16).float()
    q = torch.round(w / scale[:, None]).clamp(-128, 127).to(torch.int8)
    return q, scale


class Int8PackLinear(nn.Module):
    """y = x @ (q * scale).T + bias, with x rounded to bf16; the output has x's dtype."""

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = q.shape
        # a copy: a tensor from a safetensors file can sit at an unaligned address, and the
        # kernel's vector loads then crash the process
        self.register_buffer("weight_int8", q.contiguous().clone())
        self.register_buffer("weight_scale", scale.float().contiguous())
        self.register_buffer("scale_bf16", scale.to(torch.bfloat16), persistent=False)
        self.bias = nn.Parameter(bias.detach(), requires_grad=False) if bias is not None else None

    @classmethod
    def from_linear(cls, mod: nn.Linear) -> Int8PackLinear:
        q, scale = quantize_rows(mod.weight)
        return cls(q.to(mod.weight.device), scale.to(mod.weight.device), mod.bias)

    @property
    def weight(self) -> torch.Tensor:
        """The int8 values: models that look at a Linear's weight dtype (T5 casts its input to
        it unless it is int8) see an int8 layer."""
        return self.weight_int8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        h = x.reshape(-1, shape[-1]).to(torch.bfloat16).contiguous()
        scale = self.scale_bf16.to(torch.bfloat16)  # a no-op unless model.to() changed it
        if h.device.type == "cpu":
            y = torch.ops.aten._weight_int8pack_mm(h, self.weight_int8, scale)
        else:  # no fused kernel on this device: widen (correct, not fast)
            y = F.linear(h, self.weight_int8.to(h.dtype)) * scale
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.to(x.dtype).reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"
