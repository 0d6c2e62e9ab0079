"""Describe a data set: rows, label balance and text-length percentiles."""

from __future__ import annotations

from collections import Counter
from typing import Any

PERCENTILES = (50, 90, 95, 99)
_BATCH = 256


def percentile(values: list[int], p: int) -> int:
    """Nearest-rank percentile: the smallest value with at least ``p`` % of values at or below it.

    Args:
        values: The numbers (any order); an empty list gives 0.
        p: Percentile in (0, 100].

    Returns:
        One of the values, so lengths stay whole numbers.
    """
    if not values:
        return 0
    ordered = sorted(values)
    # Integer ceil(p * n / 100): float arithmetic could land just above a whole rank.
    rank = max(1, -(-p * len(ordered) // 100))
    return ordered[rank - 1]


def _stats(lengths: list[int]) -> dict[str, int]:
    stats = {f"p{p}": percentile(lengths, p) for p in PERCENTILES}
    stats["max"] = max(lengths, default=0)
    return stats


def _token_lengths(texts: list[str], tokenizer: Any) -> list[int]:
    lengths: list[int] = []
    for start in range(0, len(texts), _BATCH):
        # No truncation, special tokens included: the point is to see what max_length cuts off.
        # verbose=False silences the "longer than the maximum" warning for exactly those texts.
        encoded = tokenizer(texts[start : start + _BATCH], truncation=False, verbose=False)
        lengths += [len(ids) for ids in encoded["input_ids"]]
    return lengths


def inspect_examples(examples: list[dict[str, str]], tokenizer: Any = None) -> dict[str, Any]:
    """Count rows and labels and measure text lengths.

    Args:
        examples: Dicts with ``"text"`` and optionally ``"label"``.
        tokenizer: A Hugging Face tokenizer; when given, token lengths are measured too.

    Returns:
        ``{"rows", "columns", "labels", "chars", "words"[, "tokens"]}``: ``labels`` maps each
        label to its count, most frequent first (absent for unlabelled data); each length entry
        maps ``p50``, ``p90``, ``p95``, ``p99`` and ``max`` to a whole number.
    """
    texts = [example.get("text") or "" for example in examples]
    info: dict[str, Any] = {
        "rows": len(examples),
        "columns": sorted({key for example in examples for key in example}),
    }
    if any("label" in example for example in examples):
        counts = Counter(example.get("label", "") for example in examples)
        # Most frequent first; ties alphabetical so the output does not depend on row order.
        info["labels"] = dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
    info["chars"] = _stats([len(text) for text in texts])
    info["words"] = _stats([len(text.split()) for text in texts])
    if tokenizer is not None:
        info["tokens"] = _stats(_token_lengths(texts, tokenizer))
    return info


def format_inspection(info: dict[str, Any]) -> str:
    """Render :func:`inspect_examples` output as a plain-text table.

    Args:
        info: The dict returned by :func:`inspect_examples`.

    Returns:
        Several lines: rows and columns, label counts with percentages (and the ratio of the
        largest to the smallest class), then a percentile table of text lengths.
    """
    rows = info["rows"]
    lines = [f"rows: {rows:,}    columns: {', '.join(info['columns'])}"]
    labels: dict[str, int] = info.get("labels", {})
    if labels:
        width = max(len("label"), *(len(label) for label in labels))
        lines += ["", f"{'label':<{width}}  {'count':>8}  {'share':>6}"]
        for label, count in labels.items():
            share = 100 * count / rows if rows else 0.0
            lines.append(f"{label:<{width}}  {count:>8,}  {share:>5.1f}%")
        smallest = min(labels.values())
        if smallest:
            # Imbalance matters for the choice of metric (macro F1 vs accuracy).
            lines.append(
                f"{len(labels)} classes, largest/smallest = {max(labels.values()) / smallest:.1f}"
            )
    columns = [f"p{p}" for p in PERCENTILES] + ["max"]
    measures = [name for name in ("chars", "words", "tokens") if name in info]
    lines += ["", f"{'length':<8}" + "".join(f"{column:>9}" for column in columns)]
    for name in measures:
        lines.append(f"{name:<8}" + "".join(f"{info[name][column]:>9,}" for column in columns))
    return "\n".join(lines)
