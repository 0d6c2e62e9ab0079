"""Property tests of the logits processors on random logits."""

from __future__ import annotations

import pytest
import torch

from tunelab.decoding import processors as P


@pytest.fixture
def logits() -> torch.Tensor:
    return torch.randn(8, 50, generator=torch.Generator().manual_seed(0)) * 3


def test_top_k_one_keeps_only_the_argmax(logits):
    out = P.top_k(logits, 1)
    kept = torch.isfinite(out)
    assert kept.sum(-1).tolist() == [1] * 8
    assert kept.float().argmax(-1).tolist() == logits.argmax(-1).tolist()


def test_top_k_per_row(logits):
    ks = torch.tensor([0, 1, 2, 3, 5, 10, 49, 50])
    kept = torch.isfinite(P.top_k(logits, ks)).sum(-1)
    assert kept.tolist() == [50, 1, 2, 3, 5, 10, 49, 50]


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9, 0.99, 1.0])
def test_top_p_keeps_the_smallest_set_above_p(logits, p):
    probs = logits.softmax(-1)
    kept = torch.isfinite(P.top_p(logits, p))
    for row in range(logits.shape[0]):
        k = kept[row]
        mass = probs[row][k].sum()
        assert mass >= p - 1e-6
        # the kept tokens are the most likely ones
        if (~k).any():
            assert probs[row][k].min() >= probs[row][~k].max()
        # without its least likely member the set falls below p (it is the smallest)
        if p < 1.0:  # p = 1 keeps everything (off)
            assert mass - probs[row][k].min() < p or k.sum() == 1


def test_top_p_per_row_threshold(logits):
    p = torch.tensor([[0.1], [0.9]] * 4)
    both = torch.isfinite(P.top_p(logits, p))
    for row in range(8):
        alone = torch.isfinite(P.top_p(logits[row : row + 1], float(p[row])))
        assert torch.equal(both[row], alone[0])


@pytest.mark.parametrize("mp", [0.01, 0.1, 0.5])
def test_min_p_drops_tokens_below_fraction_of_the_best(logits, mp):
    probs = logits.softmax(-1)
    kept = torch.isfinite(P.min_p(logits, mp))
    limit = probs.max(-1, keepdim=True).values * mp
    assert torch.equal(kept, probs >= limit)


def test_temperature_to_zero_approaches_greedy(logits):
    peaks = [P.temperature(logits, t).softmax(-1).max(-1).values.min() for t in (2, 1, 0.3, 0.01)]
    assert peaks == sorted(peaks)  # sharper as t falls
    assert peaks[-1] > 0.999
    g = torch.Generator().manual_seed(1)
    draws = torch.stack([P.sample(P.temperature(logits, 1e-3), g) for _ in range(20)])
    assert (draws == logits.argmax(-1)).all()


def test_repetition_penalty_only_touches_seen_tokens(logits):
    hist = torch.tensor([[-1, -1, 4, 7]] * 8)
    out = P.repetition_penalty(logits, hist, 2.0)
    seen = torch.zeros(50, dtype=torch.bool)
    seen[[4, 7]] = True
    assert torch.equal(out[:, ~seen], logits[:, ~seen])
    want = torch.where(logits[:, seen] < 0, logits[:, seen] * 2, logits[:, seen] / 2)
    assert torch.allclose(out[:, seen], want)


def test_no_repeat_ngram_bans_completions_of_seen_ngrams():
    logits = torch.zeros(2, 10)
    hist = torch.tensor([[1, 2, 3, 1, 2], [-1, -1, 5, 6, 7]])
    out = P.no_repeat_ngram(logits, hist, 3)
    assert torch.isinf(out[0, 3]) and torch.isfinite(out[0]).sum() == 9  # 1 2 -> 3 is banned
    assert torch.isfinite(out[1]).all()  # no earlier "6 7"
    out2 = P.no_repeat_ngram(logits, hist, 2)
    assert torch.isinf(out2[0, 3]) and torch.isfinite(out2[0]).sum() == 9  # 2 -> 3
    assert torch.isfinite(out2[1]).all()  # padding (-1) never matches


def test_sample_is_reproducible_with_a_seeded_generator(logits):
    a = P.sample(logits, torch.Generator().manual_seed(3))
    b = P.sample(logits, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
