"""Exact greedy argmax of a large LM head, screened in bf16.

At batch 1 the LM head is most of a decode step for a small model with a large vocabulary:
SmolLM2-135M's tied head is a 49,152 x 576 fp32 matrix (113 MB, read once per step), about
as many bytes as all 30 transformer blocks together. Greedy decoding only needs the argmax, so
`GreedyHead` multiplies by a bf16 copy of the head (half the bytes, and this CPU's bf16 dot
products), bounds the bf16 error of every logit rigorously, keeps the tokens whose upper
bound reaches the best lower bound (median 2, at most 18 of 49,152 on SmolLM2 while
generating) and recomputes those few in fp32. The winner is the fp32 argmax: the same token
as the full fp32 head (ties go to the lowest id, as `torch.argmax`), at the cost of a 56 MB
bf16 copy.

Error bound per logit (u = 2**-8, the unit roundoff of bf16; n = hidden size): rounding the
weights and the hidden state costs at most (2u + u^2) * sum_j |w_ij h_j| <= (2u + u^2) *
||w_i|| ||h|| (Cauchy-Schwarz), fp32 accumulation in either product at most n * 2**-24 each,
and rounding the bf16 result u * |logit| / (1 - u). The largest error seen on SmolLM2 was 12% of
this bound.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

from tunelab.models.packed import can_pack, pack, packed_linear

U = 2.0**-8


class GreedyHead:
    """argmax(h @ weight.T) per row, exact, via a bf16 screen and an fp32 recheck."""

    def __init__(self, weight: torch.Tensor) -> None:
        w = weight.detach()
        self.weight = w  # (vocab, hidden) fp32
        self.w16 = w.to(torch.bfloat16)
        # packed once for oneDNN: the same products, 2-3x faster than F.linear (models.packed)
        self.w16_packed = pack(self.w16) if can_pack(w.device) else None
        n = w.shape[1]
        self.rel = 2 * U + U * U + 2 * n * 2.0**-24
        self.row_norms = w.float().norm(dim=1)  # (vocab,)

    def argmax(self, h: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
        """h: (batch, hidden) fp32 -> (batch,) int64 token ids; with `allowed` ((batch, vocab)
        bool, constrained decoding's mask) the argmax among the allowed tokens only, as
        `F.linear(h, weight).masked_fill(~allowed, -inf).argmax(-1)`."""
        h16 = h.to(torch.bfloat16)
        if self.w16_packed is not None:
            approx = packed_linear(h16, self.w16_packed).float()  # (batch, vocab)
        else:
            approx = F.linear(h16, self.w16).float()
        bound = (
            approx.abs()
            .mul_(U * 1.01)
            .add_(self.row_norms[None, :] * (self.rel * h.float().norm(dim=1, keepdim=True)))
        )
        upper = approx + bound
        lower = approx.sub_(bound)
        if allowed is not None:  # a forbidden token can be neither a candidate nor the bar
            upper.masked_fill_(~allowed, float("-inf"))
            lower.masked_fill_(~allowed, float("-inf"))
        best_lower = lower.max(dim=-1, keepdim=True).values
        k = int((upper >= best_lower).sum(-1).max())
        idx = torch.topk(upper, k, dim=-1).indices.sort(dim=-1).values  # (batch, k), by id
        exact = torch.bmm(self.weight[idx], h.unsqueeze(-1)).squeeze(-1)  # (batch, k)
        if allowed is not None:  # rows with fewer than k candidates took forbidden ones
            exact.masked_fill_(~allowed.gather(1, idx), float("-inf"))
        return idx.gather(1, exact.argmax(-1, keepdim=True)).squeeze(1)


PLAIN_HEAD_MODELS = (
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
)
# id(weight) -> (weakref to it, (version, data_ptr), GreedyHead); a cache, dropped with the weight
_HEADS: dict[int, tuple] = {}


def plain_head_base(model):
    """The base model under an LM head that is a plain bias-free fp32 Linear on the last
    hidden state (no logit scaling or soft-capping), else None."""
    if type(model).__name__ not in PLAIN_HEAD_MODELS:
        return None
    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear) or head.bias is not None:
        return None
    if head.weight.dtype != torch.float32:
        return None
    return getattr(model, model.base_model_prefix, None)


def greedy_head(weight: torch.Tensor) -> GreedyHead:
    """The GreedyHead of an LM head weight, rebuilt whenever the weight changed in place."""
    key = (weight._version, weight.data_ptr())
    hit = _HEADS.get(id(weight))
    if hit is None or hit[0]() is not weight or hit[1] != key:
        if hit is None or hit[0]() is not weight:
            weakref.finalize(weight, _HEADS.pop, id(weight), None)
        hit = (weakref.ref(weight), key, GreedyHead(weight))
        _HEADS[id(weight)] = hit
    return hit[2]
