"""The columns of a data source as they are in it: their types, a few values, and a guess at
which one holds the text and which the label (for `tunelab data inspect` without
--text-column).

Guesses: the text column is the first of the usual names (text, sentence, review ...) that
holds strings, else the string column with the longest values; the label column is the first
of the usual names (label, class, category ...), else the column with the fewest distinct
values (2 up to 100, and fewer than half the rows). Only the first `SAMPLE` rows are looked
at, so a guess on a huge file stays quick.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tunelab.data.table import Table

SAMPLE = 2000
TEXT_NAMES = (
    "text",
    "sentence",
    "content",
    "review",
    "document",
    "body",
    "comment",
    "tweet",
    "utterance",
    "question",
    "abstract",
    "description",
    "title",
)
LABEL_NAMES = (
    "label",
    "labels",
    "class",
    "category",
    "target",
    "sentiment",
    "topic",
    "intent",
    "stars",
    "rating",
    "score",
    "y",
)


@dataclass
class Column:
    """What one column of a source holds (over the sampled rows)."""

    name: str
    type: str
    examples: list[str]
    distinct: int
    filled: int
    """Rows with a value (not missing or empty)."""
    mean_chars: float
    """Mean length of the string values (0 when there are none)."""


def _type_name(values: list[Any]) -> str:
    names = sorted({type(v).__name__ for v in values}) or ["empty"]
    rename = {"str": "str", "int": "int", "float": "float", "bool": "bool"}
    rename |= {"list": "list", "dict": "dict", "NoneType": "empty"}
    out = "|".join(rename.get(n, n) for n in names)
    if out == "str" and all(_is_number(v) for v in values):
        return "str (numbers)"
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _shown(value: Any, width: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def describe_columns(table: Table, sample: int = SAMPLE) -> list[Column]:
    """Each column of `table` with its type (as the source declares it, else read off the
    values), three distinct example values and counts."""
    rows = table.head(sample)
    out = []
    for name in table.columns:
        values = [r.get(name) for r in rows]
        filled = [v for v in values if v is not None and v != ""]
        keys = {json.dumps(v, sort_keys=True, default=str) for v in filled}
        examples: list[str] = []
        for v in filled:
            shown = _shown(v)
            if shown not in examples:
                examples.append(shown)
            if len(examples) == 3:
                break
        strings = [v for v in filled if isinstance(v, str)]
        mean = sum(map(len, strings)) / len(strings) if strings else 0.0
        kind = table.types.get(name) or _type_name(filled)
        out.append(Column(name, kind, examples, len(keys), len(filled), mean))
    return out


def guess_text_column(columns: list[Column], exclude: str | None = None) -> str | None:
    """The column most likely to hold the text (None if no column holds strings)."""
    strings = [c for c in columns if c.name != exclude and c.mean_chars > 0]
    strings = [c for c in strings if c.type.startswith("str") and c.type != "str (numbers)"]
    by_name = {c.name.lower(): c for c in strings}
    for name in TEXT_NAMES:
        if name in by_name:
            return by_name[name].name
    return max(strings, key=lambda c: c.mean_chars).name if strings else None


def guess_label_column(columns: list[Column], rows: int, exclude: str | None = None) -> str | None:
    """The column most likely to hold the class label (None: the data looks unlabelled). A
    usual label name wins even if it is `exclude` (the text column): naming the label column
    as the text is a mistake to report, not to work around."""
    scalar = [c for c in columns if c.type not in ("list", "dict")]
    by_name = {c.name.lower(): c for c in scalar}
    for name in LABEL_NAMES:
        if name in by_name and by_name[name].filled:
            return by_name[name].name
    limit = min(100, max(2, min(rows, SAMPLE) // 2))
    few = [c for c in scalar if c.name != exclude and 2 <= c.distinct <= limit]
    few = [c for c in few if c.distinct < c.filled]
    return min(few, key=lambda c: c.distinct).name if few else None


def format_columns(columns: list[Column]) -> str:
    """A table of the columns: name, type, examples."""
    width = max([len("column"), *(len(c.name) for c in columns)])
    kinds = max([len("type"), *(len(c.type) for c in columns)])
    lines = [f"{'column':<{width}}  {'type':<{kinds}}  examples"]
    for c in columns:
        shown = " | ".join(c.examples) if c.examples else "(empty)"
        lines.append(f"{c.name:<{width}}  {c.type:<{kinds}}  {shown}")
    return "\n".join(lines)
