"""Describe a data set: its real columns, rows, label balance and text-length percentiles
(`tunelab data inspect`)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from tunelab.data.options import DataOptions
from tunelab.data.table import Table
from tunelab.errors import TunelabError

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


def format_inspection(info: dict[str, Any], show_columns: bool = True) -> str:
    """Render :func:`inspect_examples` output as a plain-text table.

    Args:
        info: The dict returned by :func:`inspect_examples`.
        show_columns: Name the example keys (text, label) on the first line.

    Returns:
        Several lines: rows and columns, label counts with percentages (and the ratio of the
        largest to the smallest class), then a percentile table of text lengths.
    """
    rows = info["rows"]
    lines = [f"rows: {rows:,}" + (f"    columns: {', '.join(info['columns'])}" * show_columns)]
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


def _pair_report(table: Table, d: DataOptions, fmt: str, tokenizer: Any) -> list[str]:
    """The generative part of a report: format, pairs, turns, prompt/response lengths."""
    from tunelab.data.chat import table_pairs

    pairs = table_pairs(table, d.prompt_column, d.response_column, fmt)
    turns = sum(
        1 + sum(m["role"] == "assistant" and m.get("weight", 1) for m in p.get("messages") or [])
        for p in pairs
    )
    how = {
        "pairs": f"{d.prompt_column} -> {d.response_column}",
        "alpaca": "instruction (+ input) -> output",
        "sharegpt": "conversations of {from, value}",
        "messages": "OpenAI {role, content} messages",
    }[fmt]
    lines = [
        f"format: {fmt} ({how}): generative data, for --task causal_lm or seq2seq",
        f"{len(pairs):,} prompt/response pairs"
        if turns == len(pairs)
        else f"{len(pairs):,} conversations, {turns:,} assistant turns "
        "(each one trains with --data.train_all_turns true)",
        "",
        f"{'length':<14}" + "".join(f"{c:>9}" for c in [*(f"p{p}" for p in PERCENTILES), "max"]),
    ]
    for side in ("prompt", "response"):
        texts = [p[side] for p in pairs]
        measures = {"chars": [len(t) for t in texts], "words": [len(t.split()) for t in texts]}
        if tokenizer is not None:
            measures["tokens"] = _token_lengths(texts, tokenizer)
        for name, values in measures.items():
            stats = _stats(values)
            lines.append(f"{side + ' ' + name:<14}" + "".join(f"{v:>9,}" for v in stats.values()))
    return lines


def inspect_source(
    source: Any,
    text_column: str | None = None,
    label_column: str | None = None,
    tokenizer: Any = None,
    data: DataOptions | None = None,
) -> str:
    """The report of `tunelab data inspect`: the source's real columns (types, a few values),
    the text and label columns (guessed unless given), label counts and length percentiles;
    for instruction / chat data its format, conversations and prompt/response lengths.

    Args:
        source: Any source `load_examples` or `load_pairs` reads (also data in memory).
        text_column: The text column; None guesses it.
        label_column: The label column; None guesses it (none found: unlabelled data).
        tokenizer: Counts tokens too when given.
        data: Other data options (encoding, label_map, bins, format, prompt/response columns).

    Raises:
        TunelabError: an unreadable source, a column not found, labels that do not map.
    """
    from tunelab.data.chat import detect_format
    from tunelab.data.columns import (
        describe_columns,
        format_columns,
        guess_label_column,
        guess_text_column,
    )
    from tunelab.data.labels import Labeler
    from tunelab.data.memory import source_name
    from tunelab.data.pairs import EMBEDDED_PAIRS
    from tunelab.data.readers import empty_error, load_examples, read_source, table_examples

    d = data or DataOptions()
    if isinstance(source, str) and source in EMBEDDED_PAIRS:
        pairs = EMBEDDED_PAIRS[source]()
        table = Table(source, "embedded pairs", ["prompt", "response"], records=pairs)
    else:
        table = read_source(source, None, d.encoding)
    if table.kind == "class-folders":
        rows = load_examples(table.source, label_column="label", encoding=d.encoding)
        table = Table(table.source, table.kind, ["text", "label"], records=rows, fixed=True)
    if not len(table):
        raise empty_error(table)
    lines = [f"source: {source_name(source)} ({table.kind}), {len(table):,} rows"]
    if table.fixed:
        lines[0] += f"; columns made from the {table.kind}: {', '.join(table.columns)}"
    columns = describe_columns(table)
    lines += ["", format_columns(columns)]
    if table.note:
        lines += ["", f"note: {table.note}"]
    fmt = d.format if table.fixed else detect_format(table.columns, d.prompt_column, d.format)
    has_pairs = d.prompt_column in table.columns and d.response_column in table.columns
    if (
        fmt in ("alpaca", "sharegpt", "messages")
        or d.format != "auto"
        or (fmt == "pairs" and has_pairs and text_column is None)
    ):
        return "\n".join([*lines, "", *_pair_report(table, d, fmt, tokenizer)])
    guessed = []
    if table.fixed:
        text_column, label_column = "text", ("label" if "label" in table.columns else None)
    else:
        if label_column is None:
            label_column = guess_label_column(columns, len(table), exclude=text_column)
            guessed.append("label")
        if text_column is None:
            text_column = guess_text_column(columns, exclude=label_column)
            guessed.append("text")
            if text_column is None:
                raise TunelabError(
                    f"no column of {source_name(source)} holds text: name it with "
                    "--data.text_column"
                )
    lines.append("")
    for key, column in (("text", text_column), ("label", label_column)):
        how = "guessed; " if key in guessed else ""
        shown = column if column is not None else "none found (unlabelled data)"
        lines.append(f"{key} column: {shown} ({how}set --data.{key}_column to choose)")
    examples = table_examples(table, text_column, label_column)
    if label_column is not None:
        examples = Labeler(d.label_map, d.bins, d.bin_names)(examples)
    info = inspect_examples(examples, tokenizer)
    lines += ["", format_inspection(info, show_columns=False)]
    return "\n".join(lines)
