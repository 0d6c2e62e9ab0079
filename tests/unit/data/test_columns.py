"""Tests for `data inspect`'s look at a source (tunelab.data.columns, data.inspect.inspect_source):
the real columns, their types and values, and the guessed text and label columns."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tunelab.data.columns import describe_columns, guess_label_column, guess_text_column
from tunelab.data.inspect import inspect_source
from tunelab.data.options import DataOptions
from tunelab.data.readers import read_source
from tunelab.errors import TunelabError

REVIEWS = [
    {"id": i, "body": f"a long review text number {i} about the film", "stars": i % 3 + 1}
    for i in range(12)
]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_columns_as_they_are_in_the_file(tmp_path):
    columns = describe_columns(read_source(_jsonl(tmp_path / "r.jsonl", REVIEWS)))
    assert [c.name for c in columns] == ["id", "body", "stars"]  # not renamed to text/label
    assert [c.type for c in columns] == ["int", "str", "int"]
    assert columns[2].examples == ["1", "2", "3"] and columns[2].distinct == 3


def test_declared_types_of_parquet(tmp_path):
    pd.DataFrame({"t": ["a", "b"], "x": [1.5, 2.0], "tags": [["a"], []]}).to_parquet(
        tmp_path / "d.parquet"
    )
    columns = describe_columns(read_source(tmp_path / "d.parquet"))
    assert [c.type for c in columns] == ["str", "float", "list"]


def test_csv_numbers_are_shown_as_such(tmp_path):
    (tmp_path / "d.csv").write_text("comment,score\nnice one,4\nbad,1\n")
    columns = describe_columns(read_source(tmp_path / "d.csv"))
    assert [c.type for c in columns] == ["str", "str (numbers)"]


def test_guesses_prefer_usual_names_then_shape():
    columns = describe_columns(read_source(REVIEWS))
    assert guess_label_column(columns, len(REVIEWS)) == "stars"  # a usual label name
    assert guess_text_column(columns, exclude="stars") == "body"  # the only text
    unnamed = [{"a": r["body"], "b": ["x", "y"][i % 2], "c": i} for i, r in enumerate(REVIEWS)]
    columns = describe_columns(read_source(unnamed))
    assert guess_label_column(columns, len(unnamed), exclude="a") == "b"  # fewest values
    assert guess_text_column(columns, exclude="b") == "a"  # the longest strings


def test_inspect_guesses_and_reports_the_real_columns(tmp_path):
    report = inspect_source(_jsonl(tmp_path / "r.jsonl", REVIEWS))
    lines = report.splitlines()
    header = next(line for line in lines if line.startswith("column"))
    assert header.split() == ["column", "type", "examples"]
    assert [line.split()[:2] for line in lines[lines.index(header) + 1 :][:3]] == [
        ["id", "int"],
        ["body", "str"],
        ["stars", "int"],
    ]
    for line in ("text column: body (guessed;", "label column: stars (guessed;"):
        assert line in report
    assert "12 rows" in report
    assert "columns: label, text" not in report  # the stats part names no renamed keys


def test_inspect_with_given_columns_and_bins(tmp_path):
    path = _jsonl(tmp_path / "r.jsonl", REVIEWS)
    report = inspect_source(path, "body", "stars", data=DataOptions(bins="[2]"))
    assert "text column: body (set" in report and "<2" in report and ">=2" in report


def test_inspect_unknown_column_names_the_flag(tmp_path):
    path = _jsonl(tmp_path / "r.jsonl", REVIEWS)
    with pytest.raises(TunelabError, match=r"'review' not found.*--data\.text_column"):
        inspect_source(path, text_column="review")


def test_inspect_without_text_is_one_line(tmp_path):
    with pytest.raises(TunelabError, match=r"no column of .* holds text.*--data\.text_column"):
        inspect_source([{"a": 1, "b": 2}, {"a": 3, "b": 4}])


def test_inspect_chat_data_reports_its_format(tmp_path):
    row = {
        "conversations": [
            {"from": "human", "value": "hi"},
            {"from": "gpt", "value": "hello"},
            {"from": "human", "value": "bye"},
            {"from": "gpt", "value": "see you"},
        ]
    }
    report = inspect_source(_jsonl(tmp_path / "c.jsonl", [row, row]))
    assert "format: sharegpt" in report and "2 conversations, 4 assistant turns" in report
    assert "conversations  list" in report
    assert "response chars" in report


def test_inspect_fasttext_lines(tmp_path):
    (tmp_path / "d.txt").write_text("__label__a one two\n__label__b three\n")
    report = inspect_source(tmp_path / "d.txt")
    assert "(fasttext)" in report and "columns made from the fasttext: label, text" in report
    assert "label column: label" in report
