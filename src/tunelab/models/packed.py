"""bf16 Linear layers whose weights are packed once for oneDNN, for inference on CPU.

Why by hand: `F.linear` on bf16 CPU tensors hands the weight to oneDNN in its plain layout,
and oneDNN reorders it into its blocked layout on every call. For the small matrices of
decoding that reorder is most of the call: on SmolLM2-135M's shapes (this 2-core AVX-512-BF16
machine, `bench/generate_throughput.py --layers`) a packed weight runs 1.5-2.7x faster at
batch 1 and 16 (e.g. 576x1536: 24 against 42-66 us at batch 1; the 49,152-wide LM head: 0.65-0.85
against 1.7-2.6 ms), with bit-identical outputs. PyTorch packs weights this way only inside
torch.compile's freezing pass (`torch.ops.mkldnn._reorder_linear_weight` +
`_linear_pointwise`, the ops used here); no eager module or library exposes it, and compiling
the model took minutes and gained nothing in eager-vs-compiled measurements
(docs/generation.md). fp32 is left alone: MKL's packed fp32 GEMM was no faster here and not
bit-identical to `F.linear`, which the exact mode must be.

The packed weight is an opaque oneDNN tensor: it is not in `state_dict()` and cannot be saved;
`weight` gives a plain bf16 copy for code that reads it. Inference only (no autograd).
"""

from __future__ import annotations

import torch
from torch import nn


def can_pack(device: torch.device | str = "cpu") -> bool:
    """Whether this torch build and CPU run packed bf16 Linears (oneDNN with native bf16)."""
    if torch.device(device).type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    ops = torch.ops.mkldnn
    if not (hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise")):
        return False
    try:
        return bool(ops._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def pack(weight: torch.Tensor) -> torch.Tensor:
    """`weight` (out, in) as a packed bf16 oneDNN tensor."""
    w = weight.detach().to(torch.bfloat16).contiguous()
    return torch.ops.mkldnn._reorder_linear_weight(w, None)


def packed_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None = None):
    """x @ W.T (+ bias) for a bf16 `x` of any leading shape and a weight from `pack`."""
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), packed, bias, "none", [], "")


class PackedLinear(nn.Module):
    """A bf16 nn.Linear with its weight packed for oneDNN; the same outputs, faster."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.packed = pack(weight)  # a plain attribute: opaque, not saved, not moved
        self.bias = (
            nn.Parameter(bias.detach().to(torch.bfloat16), requires_grad=False)
            if bias is not None
            else None
        )

    @classmethod
    def from_linear(cls, mod: nn.Linear) -> PackedLinear:
        return cls(mod.weight, mod.bias)

    @property
    def weight(self) -> torch.Tensor:
        """A plain bf16 copy of the weight (for code that reads a Linear's weight)."""
        return self.packed.to_dense()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if x.dtype == torch.bfloat16 else x.to(torch.bfloat16)
        y = packed_linear(h, self.packed, self.bias)
        return y if y.dtype == x.dtype else y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed bf16"


def pack_linears(model: nn.Module) -> int:
    """Replace every bf16 nn.Linear of `model` (on CPU) by a PackedLinear, in place; returns
    how many (quantized weights, which are tensor subclasses, stay as they are). A Linear
    sharing its weight with another module (a tied LM head) is packed as a copy; the
    embedding keeps the original."""
    swaps = []
    for mod in model.modules():
        for child_name, child in mod.named_children():
            w = getattr(child, "weight", None)
            plain = type(w) in (torch.Tensor, nn.Parameter)  # not a quantized tensor subclass
            if type(child) is nn.Linear and plain and w.dtype == torch.bfloat16:
                swaps.append((mod, child_name, child))
    for parent, child_name, child in swaps:
        setattr(parent, child_name, PackedLinear.from_linear(child))
    return len(swaps)
