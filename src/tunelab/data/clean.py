"""Clean examples: normalise unicode and whitespace, drop empty rows and duplicate texts."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from tunelab.errors import TunelabError

_FORMS = ("NFC", "NFKC", "NFD", "NFKD")


@dataclass
class CleanReport:
    """What :func:`clean_examples` kept and dropped, in numbers of rows.

    Attributes:
        kept: Rows returned.
        empty_dropped: Rows with an empty text or label.
        duplicates_dropped: Repeated copies of a text whose copies agree on the label.
        conflicting_dropped: Every copy of a text whose copies disagree on the label.
    """

    kept: int
    empty_dropped: int
    duplicates_dropped: int
    conflicting_dropped: int

    @property
    def total(self) -> int:
        """Rows given to the cleaning step."""
        return self.kept + self.empty_dropped + self.duplicates_dropped + self.conflicting_dropped

    def summary(self) -> str:
        """One line, e.g. ``cleaning: kept 2,126 of 2,225 (98 duplicates, 1 empty dropped)``."""
        parts = [
            _count(self.duplicates_dropped, "duplicate", "duplicates"),
            _count(self.conflicting_dropped, "with conflicting labels", "with conflicting labels"),
            _count(self.empty_dropped, "empty", "empty"),
        ]
        dropped = ", ".join(part for part in parts if part)
        detail = f"{dropped} dropped" if dropped else "nothing dropped"
        return f"cleaning: kept {self.kept:,} of {self.total:,} ({detail})"


def _count(n: int, singular: str, plural: str) -> str:
    return f"{n:,} {singular if n == 1 else plural}" if n else ""


def normalize_text(text: str, normalize: str | None = "NFKC") -> str:
    """Apply unicode normalisation and collapse every whitespace run to one space.

    Newlines go too: tokenizers treat them as plain whitespace, and one form per text makes
    duplicates that differ only in layout compare equal.

    Args:
        text: The raw text.
        normalize: ``NFC``, ``NFKC``, ``NFD``, ``NFKD`` or ``None`` to skip normalisation.

    Returns:
        The cleaned text, stripped at both ends.
    """
    if normalize is not None:
        text = unicodedata.normalize(normalize, text)
    return " ".join(text.split())


def clean_examples(
    examples: list[dict[str, str]], normalize: str | None = "NFKC", dedupe: bool = True
) -> tuple[list[dict[str, str]], CleanReport]:
    """Normalise texts, strip labels, drop empty rows and (optionally) duplicate texts.

    Duplicates are found on the normalised text. The first copy is kept when all copies share
    one label; when they disagree no copy can be trusted, so all of them are dropped. Order is
    preserved and the input is not changed.

    Args:
        examples: Dicts with ``"text"`` and, for labelled data, ``"label"``.
        normalize: Unicode normalisation form, or ``None`` to skip it.
        dedupe: Drop duplicate texts.

    Returns:
        The cleaned examples (new dicts) and a report of what was dropped.

    Raises:
        TunelabError: If ``normalize`` is not a unicode normalisation form.
    """
    if normalize is not None and normalize not in _FORMS:
        raise TunelabError(
            f"unknown unicode normalisation '{normalize}'; use one of {', '.join(_FORMS)} or none"
        )
    cleaned: list[dict[str, str]] = []
    empty = 0
    for example in examples:
        row = {**example, "text": normalize_text(example.get("text") or "", normalize)}
        if "label" in example:
            row["label"] = (example["label"] or "").strip()
        if not row["text"] or ("label" in row and not row["label"]):
            empty += 1
            continue
        cleaned.append(row)
    if not dedupe:
        return cleaned, CleanReport(len(cleaned), empty, 0, 0)

    labels_by_text: dict[str, set[str | None]] = {}
    for row in cleaned:
        labels_by_text.setdefault(row["text"], set()).add(row.get("label"))
    kept: list[dict[str, str]] = []
    seen: set[str] = set()
    duplicates = conflicting = 0
    for row in cleaned:
        if len(labels_by_text[row["text"]]) > 1:
            conflicting += 1
        elif row["text"] in seen:
            duplicates += 1
        else:
            seen.add(row["text"])
            kept.append(row)
    return kept, CleanReport(len(kept), empty, duplicates, conflicting)
