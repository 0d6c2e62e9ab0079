"""Tests for tunelab.data.clean: normalisation, empty rows, duplicates and the report."""

from __future__ import annotations

import copy

import pytest

from tunelab.data.clean import CleanReport, clean_examples, normalize_text
from tunelab.errors import TunelabError


def ex(text: str | None, label: str | None = "a") -> dict:
    return {"text": text, "label": label}


def test_whitespace_collapsed_and_labels_stripped():
    cleaned, report = clean_examples([ex("  two\t\twords \n\n next para ", " pos\n")])
    assert cleaned == [{"text": "two words next para", "label": "pos"}]
    assert report == CleanReport(1, empty_dropped=0, duplicates_dropped=0, conflicting_dropped=0)


def test_nfkc_folds_ligatures_and_none_keeps_them():
    assert normalize_text("\ufb01ne") == "fine"
    assert normalize_text("\ufb01ne", normalize=None) == "\ufb01ne"
    assert normalize_text("cafe\u0301", normalize="NFC") == "caf\u00e9"


def test_empty_rows_dropped_and_counted():
    rows = [ex("keep"), ex(""), ex("   \n"), ex(None), ex("no label", ""), ex("none", None)]
    cleaned, report = clean_examples(rows)
    assert [row["text"] for row in cleaned] == ["keep"]
    assert report.empty_dropped == 5
    assert report.kept == 1


def test_exact_and_near_duplicates_keep_first():
    rows = [
        ex("the \ufb01rst one", "x"),
        ex("other", "y"),
        ex("the first one", "x"),  # same after NFKC
        ex("the  first\none ", "x"),  # same after whitespace collapse
        ex("other", "y"),
    ]
    cleaned, report = clean_examples(rows)
    assert cleaned == [ex("the first one", "x"), ex("other", "y")]
    assert report.duplicates_dropped == 3
    assert report.conflicting_dropped == 0


def test_ligature_duplicate_survives_without_normalisation():
    rows = [ex("\ufb01ne", "x"), ex("fine", "x")]
    assert len(clean_examples(rows, normalize=None)[0]) == 2
    assert len(clean_examples(rows, normalize="NFKC")[0]) == 1


def test_conflicting_labels_drop_every_copy():
    rows = [ex("same", "x"), ex("unique", "x"), ex("same ", "y"), ex("same", "x")]
    cleaned, report = clean_examples(rows)
    assert cleaned == [ex("unique", "x")]
    assert report.conflicting_dropped == 3
    assert report.duplicates_dropped == 0


def test_dedupe_off_keeps_duplicates_but_drops_empties():
    rows = [ex("a"), ex("a"), ex("a", "b"), ex("")]
    cleaned, report = clean_examples(rows, dedupe=False)
    assert len(cleaned) == 3
    assert (report.duplicates_dropped, report.conflicting_dropped, report.empty_dropped) == (
        0,
        0,
        1,
    )


def test_unlabelled_examples_dedupe_on_text_only():
    rows = [{"text": "a"}, {"text": " a"}, {"text": "b"}, {"text": ""}]
    cleaned, report = clean_examples(rows)
    assert cleaned == [{"text": "a"}, {"text": "b"}]
    assert (report.duplicates_dropped, report.empty_dropped) == (1, 1)


def test_order_preserved_input_untouched_and_extra_keys_kept():
    rows = [
        {"text": " c ", "label": "1", "id": "r1"},
        {"text": "b", "label": "2", "id": "r2"},
        {"text": "a", "label": "1", "id": "r3"},
    ]
    before = copy.deepcopy(rows)
    cleaned, _ = clean_examples(rows)
    assert [row["id"] for row in cleaned] == ["r1", "r2", "r3"]
    assert cleaned[0]["text"] == "c"
    assert rows == before


def test_report_counts_add_up():
    rows = [ex("a"), ex("a"), ex("b", "x"), ex("b", "y"), ex(""), ex("c")]
    cleaned, report = clean_examples(rows)
    assert report.total == len(rows)
    assert report.kept == len(cleaned) == 2


def test_summary_mentions_only_what_was_dropped():
    report = CleanReport(kept=2126, empty_dropped=1, duplicates_dropped=98, conflicting_dropped=0)
    text = report.summary()
    assert text.startswith("cleaning: kept 2,126 of 2,225")
    assert "98 duplicates" in text and "1 empty" in text
    assert "conflicting" not in text
    assert "nothing dropped" in CleanReport(3, 0, 0, 0).summary()
    assert "2 with conflicting labels" in CleanReport(1, 0, 1, 2).summary()
    assert "1 duplicate " in CleanReport(1, 0, 1, 0).summary() + " "


def test_unknown_normalisation_form():
    with pytest.raises(TunelabError, match="unknown unicode normalisation 'NFX'.*NFKC"):
        clean_examples([ex("a")], normalize="NFX")
