"""TextMetrics against sacrebleu / rouge_score called directly, and by property."""

from __future__ import annotations

import pytest
import sacrebleu
from rouge_score.rouge_scorer import RougeScorer

from tunelab.evaluation.text_metrics import TextMetrics, distinct_n, normalize_answer

PREDS = [
    "The cat sat on the mat.",
    "A quick brown fox jumps over the lazy dog",
    "Stocks fell sharply on Monday",
    "hello there",
    "the the the the",
]
REFS = [
    "The cat is sitting on the mat.",
    "The quick brown fox jumped over the lazy dog.",
    "Shares dropped sharply on Monday morning",
    "Hello there!",
    "a completely different sentence",
]


def _streamed(preds, refs, sizes):
    m, i = TextMetrics(), 0
    for size in sizes:
        m.update(preds[i : i + size], refs[i : i + size])
        i += size
    return m.compute()


def test_streamed_equals_one_corpus_call_of_the_libraries():
    got = _streamed(PREDS, REFS, [2, 1, 2])
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(PREDS, [REFS]).score)
    assert got["chrf"] == pytest.approx(sacrebleu.corpus_chrf(PREDS, [REFS]).score)
    scorer = RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    per = [scorer.score(r, p) for p, r in zip(PREDS, REFS, strict=True)]
    for k in ("rouge1", "rouge2", "rougeL"):
        assert got[k] == pytest.approx(sum(s[k].fmeasure for s in per) / len(per))
    assert got["n"] == 5
    # batch boundaries do not matter
    one = _streamed(PREDS, REFS, [5])
    assert one == pytest.approx(got)


def test_bleu_is_a_corpus_score_not_a_mean_of_sentences():
    got = _streamed(PREDS, REFS, [1] * 5)
    mean_sentence = sum(
        sacrebleu.sentence_bleu(p, [r]).score for p, r in zip(PREDS, REFS, strict=True)
    ) / len(PREDS)
    assert got["bleu"] != pytest.approx(mean_sentence)


def test_identical_predictions_score_perfectly():
    got = _streamed(REFS, REFS, [3, 2])
    assert got["bleu"] == pytest.approx(100.0)
    assert got["chrf"] == pytest.approx(100.0)
    for k in ("rouge1", "rouge2", "rougeL", "exact_match"):
        assert got[k] == pytest.approx(1.0)


def test_exact_match_is_normalised():
    assert normalize_answer("  The Cat, sat!  ") == "cat sat"
    got = _streamed(PREDS, REFS, [5])
    assert got["exact_match"] == pytest.approx(1 / 5)  # only "hello there" vs "Hello there!"


def test_distinct_n_counts_unique_over_total():
    texts = ["a b a b", "a b c"]
    # unigrams: a b a b a b c -> 3 unique of 7; bigrams: ab ba ab ab bc -> 3 unique of 5
    assert distinct_n(texts, 1) == pytest.approx(3 / 7)
    assert distinct_n(texts, 2) == pytest.approx(3 / 5)
    got = _streamed(texts, ["x", "y"], [1, 1])
    assert (got["distinct_1"], got["distinct_2"]) == pytest.approx((3 / 7, 3 / 5))


def test_empty_is_zero_and_mismatch_is_refused():
    assert TextMetrics().compute()["bleu"] == 0.0
    with pytest.raises(ValueError):
        TextMetrics().update(["a"], [])
