"""One matrix product for the projections that read the same input (q/k/v, gate/up), for
inference in the packed bf16 and int8 precisions.

A decoder block of the Llama family calls `q_proj(x)`, `k_proj(x)` and `v_proj(x)` on one
hidden state, then `gate_proj(y)` and `up_proj(y)` on another: five products where two do the
same work. `fuse_projections` replaces each group by one product over the rows of all its
weights, stacked (int8 rows keep their own scales, so the numbers are the same), whose output
slices are handed to the original call sites: the transformers modules stay the model
definition, unchanged. The group's first member (q_proj, gate_proj: the modules call it first)
computes the fused product; the others take their slice when called on that same tensor
(anything else recomputes). Inference tensors carry no version counter, so this relies on the
modules not changing the input in place between the calls, which they do not.

Why: at batch 1 a decode step of SmolLM2-135M makes 211 matrix products of ~30 us each, and
each call costs Python and dispatch work besides the kernel; fusing removes 90 of them and
gives the kernels wider matrices (docs/generation.md has the measured step before and after).
"""

from __future__ import annotations

import torch
from torch import nn

from tunelab.compress.int8_linear import Int8PackLinear
from tunelab.models.packed import PackedLinear

GROUPS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


class _Fused:
    """The stacked product of a group and the slices of its latest output."""

    def __init__(self, module: nn.Module, sizes: list[int]) -> None:
        self.module = module
        self.sizes = sizes
        self.input: torch.Tensor | None = None  # held, so its id cannot be reused meanwhile
        self.parts: tuple[torch.Tensor, ...] = ()
        self.taken = 0

    def part(self, x: torch.Tensor, index: int) -> torch.Tensor:
        # the first member (q_proj, gate_proj: what the modules call first) always computes
        if index == 0 or self.input is not x:
            self.parts = self.module(x).split(self.sizes, dim=-1)
            self.input, self.taken = x, 0
        out = self.parts[index]
        self.taken += 1
        if self.taken == len(self.sizes):  # every member served: let go of x and the output
            self.input, self.parts = None, ()
        return out


class FusedSlice(nn.Module):
    """Stands where one projection of a fused group was; returns its slice of the product."""

    def __init__(self, fused: _Fused, index: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self._fused = fused
        self.index = index
        self.in_features, self.out_features = in_features, out_features

    @property
    def fused(self) -> nn.Module:
        return self._fused.module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fused.part(x, self.index)

    def extra_repr(self) -> str:
        return f"part {self.index} of a fused product, out_features={self.out_features}"


def _stack(mods: list[nn.Module]) -> nn.Module | None:
    """One module computing the rows of all `mods` (all of one kind), else None."""
    biases = [m.bias for m in mods]
    if any(b is None for b in biases) and not all(b is None for b in biases):
        return None
    bias = torch.cat([b.detach() for b in biases]) if biases[0] is not None else None
    if all(isinstance(m, Int8PackLinear) for m in mods):
        q = torch.cat([m.weight_int8 for m in mods])
        scale = torch.cat([m.weight_scale for m in mods])
        return Int8PackLinear(q, scale, bias)
    if all(isinstance(m, PackedLinear) for m in mods):
        return PackedLinear(torch.cat([m.weight for m in mods]), bias)
    return None


def fuse_projections(model: nn.Module) -> int:
    """Fuse every q/k/v and gate/up group of int8 or packed bf16 projections in `model`, in
    place; returns how many groups were fused."""
    count = 0
    for parent in list(model.modules()):
        for names in GROUPS:
            mods = [getattr(parent, n, None) for n in names]
            if any(m is None for m in mods):
                continue
            if len({m.in_features for m in mods}) != 1:
                continue
            stacked = _stack(mods)
            if stacked is None:
                continue
            fused = _Fused(stacked, [m.out_features for m in mods])
            parent.add_module("fused_" + "_".join(n.split("_")[0] for n in names), stacked)
            for i, (n, m) in enumerate(zip(names, mods, strict=True)):
                setattr(parent, n, FusedSlice(fused, i, m.in_features, m.out_features))
            count += 1
    return count
