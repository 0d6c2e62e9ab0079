"""Streaming text-generation metrics: BLEU, chrF, ROUGE-1/2/L, exact match, distinct-n.

    m = TextMetrics()
    for preds, refs in batches:
        m.update(preds, refs)
    m.compute()  # {"bleu": 31.2, "chrf": 52.0, "rouge1": 0.48, ..., "n": 500}

The scores come from the libraries people cite them from: corpus BLEU and chrF from sacrebleu
(default settings: BLEU 13a tokenization, chrF2), ROUGE F-measures from rouge_score (Porter
stemming on, averaged over examples, as rouge_score's own aggregation does). Streaming keeps
sacrebleu's sufficient statistics (n-gram match and length counts) summed across batches,
exactly what sacrebleu sums inside `corpus_score`, so the result equals one corpus call on
everything. Scales follow each library: BLEU and chrF 0-100, ROUGE, exact match and distinct-n
0-1. Exact match compares SQuAD-normalised strings (lower case, no punctuation, no English
articles, single spaces). distinct-n (Li et al., 2016) = unique n-grams / total n-grams over all
predictions, on whitespace tokens; its set of seen n-grams is the one thing that grows.
"""

from __future__ import annotations

import re
import string
from typing import Any

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, punctuation and articles removed, spaces collapsed."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def _add(total: list | None, stats: list) -> list:
    return list(stats) if total is None else [a + b for a, b in zip(total, stats, strict=True)]


class TextMetrics:
    """Accumulates (prediction, reference) pairs batch by batch; `compute` gives the scores.

    Args:
        distinct_orders: the n of each distinct-n reported.
    """

    def __init__(self, distinct_orders: tuple[int, ...] = (1, 2)) -> None:
        from rouge_score.rouge_scorer import RougeScorer
        from sacrebleu.metrics import BLEU, CHRF

        self._bleu, self._chrf = BLEU(), CHRF()
        self._rouge = RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
        self.distinct_orders = distinct_orders
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far."""
        self.n = 0
        self._exact = 0
        self._bleu_stats: list | None = None
        self._chrf_stats: list | None = None
        self._rouge_sum = dict.fromkeys(ROUGE_TYPES, 0.0)
        self._seen: dict[int, set] = {k: set() for k in self.distinct_orders}
        self._total: dict[int, int] = dict.fromkeys(self.distinct_orders, 0)

    def update(self, predictions: list[str], references: list[str]) -> None:
        """Add a batch: one reference string per prediction.

        Raises:
            ValueError: the two lists differ in length (a caller bug).
        """
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
        if not predictions:
            return
        preds, refs = [str(p) for p in predictions], [str(r) for r in references]
        # sacrebleu's per-segment sufficient statistics; summing them is what corpus_score does
        for metric, attr in ((self._bleu, "_bleu_stats"), (self._chrf, "_chrf_stats")):
            stats = metric._extract_corpus_statistics(preds, [refs])
            total = getattr(self, attr)
            for s in stats:
                total = _add(total, s)
            setattr(self, attr, total)
        for p, r in zip(preds, refs, strict=True):
            scores = self._rouge.score(r, p)  # rouge_score takes (target, prediction)
            for k in ROUGE_TYPES:
                self._rouge_sum[k] += scores[k].fmeasure
            self._exact += normalize_answer(p) == normalize_answer(r)
            tokens = p.split()
            for k in self.distinct_orders:
                grams = _ngrams(tokens, k)
                self._seen[k].update(grams)
                self._total[k] += len(grams)
        self.n += len(preds)

    def compute(self) -> dict[str, Any]:
        """The scores so far, as a JSON-serialisable dict (zeros before any update)."""
        n = self.n
        out: dict[str, Any] = {
            "bleu": self._bleu._compute_score_from_stats(self._bleu_stats).score if n else 0.0,
            "chrf": self._chrf._compute_score_from_stats(self._chrf_stats).score if n else 0.0,
        }
        for k in ROUGE_TYPES:
            out[k] = self._rouge_sum[k] / n if n else 0.0
        out["exact_match"] = self._exact / n if n else 0.0
        for k in self.distinct_orders:
            out[f"distinct_{k}"] = len(self._seen[k]) / self._total[k] if self._total[k] else 0.0
        out["n"] = n
        return out


def distinct_n(texts: list[str], n: int) -> float:
    """Unique n-grams / total n-grams over `texts` (whitespace tokens); 0 when there are none."""
    grams = [g for t in texts for g in _ngrams(t.split(), n)]
    return len(set(grams)) / len(grams) if grams else 0.0
