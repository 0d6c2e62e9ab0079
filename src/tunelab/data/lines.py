"""Classification data as one example per line of a text file, recognised by its content.

- fastText: `__label__sports __label__news The match ended 2-1`. The labels are the leading
  `__label__` words; the first one is the example's label (tunelab trains one label per
  text), the others are dropped and counted in the table's note. A line without a label
  prefix gets an empty label, which cleaning drops and counts.
- `label<TAB>text`: split at the first tab. When the part after the LAST tab repeats more
  than the part before the first (fewer distinct values), the file is `text<TAB>label` and is
  split at the last tab instead. A first line naming the two columns (label/text, class/
  sentence ...) is a header and skipped.
- anything else: plain text lines, one unlabelled text per line.

A file is fastText when most of its first lines start with `__label__`, tab lines when every
one of them holds a tab.
"""

from __future__ import annotations

import re

from tunelab.data.table import Table

PREFIX = "__label__"
SAMPLE = 200
"""Non-blank lines looked at to tell the formats apart."""
_LEADING = re.compile(r"^((?:__label__\S*\s+)*__label__\S*)(?:\s+(.*))?$", re.DOTALL)
_LABEL_NAMES = {"label", "labels", "class", "category", "target", "y", "tag", "sentiment"}
_TEXT_NAMES = {"text", "sentence", "review", "document", "content", "body", "tweet", "x"}


def sniff(lines: list[str]) -> str:
    """fasttext, tab-lines or lines, from the first non-blank lines."""
    sample = [line for line in lines if line.strip()][:SAMPLE]
    if not sample:
        return "lines"
    if sum(line.lstrip().startswith(PREFIX) for line in sample) * 2 > len(sample):
        return "fasttext"
    if all("\t" in line for line in sample):
        return "tab-lines"
    return "lines"


def read_lines(text: str, source: str, kind: str) -> Table:
    """The Table of a line format (`kind` from `sniff`); blank lines are skipped."""
    lines = [line.rstrip("\r") for line in text.split("\n")]
    lines = [line for line in lines if line.strip()]
    if kind == "fasttext":
        return _fasttext(lines, source)
    if kind == "tab-lines":
        return _tab_lines(lines, source)
    rows = [{"text": line.strip()} for line in lines]
    return Table(source, "lines", ["text"], records=rows, fixed=True)


def _fasttext(lines: list[str], source: str) -> Table:
    rows, several = [], 0
    for line in lines:
        match = _LEADING.match(line.strip())
        if match is None:
            rows.append({"label": "", "text": line.strip()})
            continue
        labels = [w[len(PREFIX) :] for w in match.group(1).split()]
        several += len(set(labels)) > 1
        rows.append({"label": labels[0], "text": (match.group(2) or "").strip()})
    note = (
        f"{several} of {len(rows)} lines have several labels: each example keeps its first"
        if several
        else ""
    )
    return Table(source, "fasttext", ["label", "text"], records=rows, fixed=True, note=note)


def _tab_lines(lines: list[str], source: str) -> Table:
    first = [line.split("\t", 1) for line in lines]
    last = [line.rsplit("\t", 1) for line in lines]
    label_first = len({f[0] for f in first}) <= len({f[1] for f in last})
    pairs = [(a, b) for a, b in first] if label_first else [(b, a) for a, b in last]
    label, text = pairs[0]
    if label.strip().lower() in _LABEL_NAMES and text.strip().lower() in _TEXT_NAMES:
        pairs = pairs[1:]  # a header line
    rows = [{"label": a.strip(), "text": b.strip()} for a, b in pairs]
    note = "" if label_first else "the label is after the last tab (text<TAB>label lines)"
    return Table(source, "tab-lines", ["label", "text"], records=rows, fixed=True, note=note)


def strip_fasttext_labels(lines: list[str]) -> list[str]:
    """The texts of fastText lines (labels removed), for verbs that read texts to predict."""
    out = []
    for line in lines:
        match = _LEADING.match(line.strip())
        out.append((match.group(2) or "").strip() if match else line.strip())
    return out
