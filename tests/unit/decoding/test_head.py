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
