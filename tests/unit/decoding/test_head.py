"""The bf16-screened greedy head returns exactly the fp32 argmax."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunelab.decoding.head import GreedyHead, greedy_head


def test_screened_argmax_equals_fp32_argmax_on_close_races():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(5000, 64, generator=g) * 0.1
    weight[100] = weight[4000]  # an exact tie: the lower id wins, as with torch.argmax
    head = GreedyHead(weight)
    h = torch.randn(64, 64, generator=g)
    h[0] = weight[4000] * 5  # makes rows 100 and 4000 the joint best
    # near-ties: tokens whose logits differ by less than bf16 resolution
    weight2 = weight.clone()
    weight2[7] = weight2[8] + 1e-4
    h2 = h + 0.01
    h2[1] = weight2[8] * 5  # rows 7 and 8 race for this one
    assert set(F.linear(h2[1:2], weight2).topk(2).indices[0].tolist()) == {7, 8}
    for w, hh in ((weight, h), (weight2, h2)):
        assert torch.equal(GreedyHead(w).argmax(hh), F.linear(hh, w).argmax(-1))
    assert int(head.argmax(h[:1])) == 100


def test_cached_head_follows_in_place_weight_updates():
    weight = torch.nn.Parameter(torch.randn(300, 16))
    h = torch.randn(4, 16)
    first = greedy_head(weight)
    assert greedy_head(weight) is first
    with torch.no_grad():
        weight.mul_(-1)  # an optimizer step changes the weights in place
    assert greedy_head(weight) is not first
    assert torch.equal(greedy_head(weight).argmax(h), F.linear(h, weight).argmax(-1))


def test_argmax_among_allowed_tokens_equals_masked_fp32_argmax():
    """Constrained greedy keeps the screen: with a mask, the winner is the fp32 argmax of the
    allowed tokens, also for rows allowing fewer tokens than another row's candidates, and for
    unconstrained rows (all True) in the same batch."""
    torch.manual_seed(3)
    weight = torch.randn(500, 32)
    h = torch.randn(6, 32)
    allowed = torch.rand(6, 500) < 0.3
    allowed[0] = True  # an unconstrained row
    allowed[1] = False
    allowed[1, [7, 499]] = True  # only two tokens allowed
    allowed[2] = False
    allowed[2, 123] = True  # exactly one
    want = F.linear(h, weight).masked_fill(~allowed, float("-inf")).argmax(-1)
    got = GreedyHead(weight).argmax(h, allowed)
    assert torch.equal(got, want)
    assert got[2].item() == 123
    assert got[1].item() in (7, 499)
    assert torch.equal(GreedyHead(weight).argmax(h, None), F.linear(h, weight).argmax(-1))
