"""Tests for the file formats people have: fastText and label<TAB>text lines (found by content),
parquet, file encodings, and data in memory (DataFrame, Dataset, rows), for classification."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pandas as pd
import pytest

from tunelab.data import memory
from tunelab.data.files import file_kind, read_file
from tunelab.data.options import DataOptions
from tunelab.data.readers import load_examples, read_texts
from tunelab.errors import TunelabError

FASTTEXT = (
    "__label__neg this film was awful\n"
    "__label__pos __label__fun great fun, really\n"
    "\n"
    "__label__neg   dull and long\n"
)


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


# --- text lines ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["train.txt", "train.cor", "train", "train.ft.data"])
def test_fasttext_lines_are_found_by_content_whatever_the_extension(tmp_path, name):
    path = _write(tmp_path / name, FASTTEXT)
    assert file_kind(path) == "fasttext"
    assert load_examples(path) == [
        {"text": "this film was awful", "label": "neg"},
        {"text": "great fun, really", "label": "pos"},  # several labels: the first one
        {"text": "dull and long", "label": "neg"},
    ]


def test_fasttext_notes_lines_with_several_labels_and_ignores_column_options(tmp_path):
    table = read_file(_write(tmp_path / "d.txt", FASTTEXT))
    assert "1 of 3 lines have several labels" in table.note
    # the columns of a line format are made by tunelab: the column options do not apply
    examples = load_examples(tmp_path / "d.txt", text_column="review", label_column="stars")
    assert [e["label"] for e in examples] == ["neg", "pos", "neg"]


def test_fasttext_line_without_label_gets_an_empty_label(tmp_path):
    path = _write(tmp_path / "d.txt", "__label__a one\n__label__b two\nno label here\n")
    assert load_examples(path)[2] == {"text": "no label here", "label": ""}


def test_label_tab_text_lines_with_a_header(tmp_path):
    path = _write(tmp_path / "d.txt", "label\ttext\nneg\tbad\tvery bad\npos\tgood\n")
    assert load_examples(path) == [
        {"text": "bad\tvery bad", "label": "neg"},  # split at the first tab only
        {"text": "good", "label": "pos"},
    ]


def test_text_tab_label_lines_are_recognised_by_the_repeating_side(tmp_path):
    lines = ["awful film\tneg", "great fun\tpos", "dull\tneg", "loved it\tpos", "meh\tneg"]
    table = read_file(_write(tmp_path / "d.txt", "\n".join(lines) + "\n"))
    assert table.kind == "tab-lines" and "after the last tab" in table.note
    assert table.rows()[0] == {"label": "neg", "text": "awful film"}


def test_plain_lines_have_no_labels(tmp_path):
    path = _write(tmp_path / "d.txt", "first text\nsecond text\n")
    unlabelled = load_examples(path, label_column=None)
    assert unlabelled == [{"text": "first text"}, {"text": "second text"}]
    with pytest.raises(TunelabError, match=r"text lines without labels.*__label__NAME"):
        load_examples(path)


def test_unknown_extension_without_a_known_content_is_refused(tmp_path):
    with pytest.raises(TunelabError, match=r"unsupported file type '\.md'.*\.parquet.*\.txt"):
        load_examples(_write(tmp_path / "d.md", "just words\n"))


def test_read_texts_strips_fasttext_labels_and_reads_parquet(tmp_path):
    assert read_texts(_write(tmp_path / "in.txt", "__label__a one two\n__label__b three\n")) == [
        "one two",
        "three",
    ]
    pd.DataFrame({"body": ["x", "y"]}).to_parquet(tmp_path / "in.parquet")
    assert read_texts(tmp_path / "in.parquet", text_column="body") == ["x", "y"]


# --- parquet ------------------------------------------------------------------------------


def test_parquet_from_pandas_with_a_gap_in_an_integer_column(tmp_path):
    frame = pd.DataFrame({"review": ["good", "bad", "odd"], "stars": [5, 1, None], "n": [1, 2, 3]})
    frame.to_parquet(tmp_path / "d.parquet")
    examples = load_examples(tmp_path / "d.parquet", text_column="review", label_column="stars")
    # the gap made the column float: 5.0 reads as "5", the missing value as "" (dropped later)
    assert examples == [
        {"text": "good", "label": "5"},
        {"text": "bad", "label": "1"},
        {"text": "odd", "label": ""},
    ]


def test_parquet_written_by_datasets_keeps_class_names(tmp_path):
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    ds = datasets.Dataset.from_dict({"text": ["a", "b"], "label": [1, 0]}, features=features)
    ds.to_parquet(str(tmp_path / "d.pq"))
    assert load_examples(tmp_path / "d.pq") == [
        {"text": "a", "label": "pos"},
        {"text": "b", "label": "neg"},
    ]


def test_parquet_is_known_by_its_magic_bytes(tmp_path):
    pd.DataFrame({"text": ["a"], "label": ["x"]}).to_parquet(tmp_path / "data.bin")
    assert file_kind(tmp_path / "data.bin") == "parquet"


def test_garbage_parquet_is_one_line(tmp_path):
    path = _write(tmp_path / "g.parquet", b"PAR1 this is not parquet")
    with pytest.raises(TunelabError, match=r"g\.parquet is not a readable parquet file") as err:
        load_examples(path)
    assert "\n" not in str(err.value)


def test_parquet_missing_column_names_the_flag(tmp_path):
    pd.DataFrame({"body": ["a"], "label": ["x"]}).to_parquet(tmp_path / "d.parquet")
    with pytest.raises(TunelabError, match=r"'text' not found.*body, label.*--data\.text_column"):
        load_examples(tmp_path / "d.parquet")


# --- encodings ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["d.csv", "d.tsv", "d.txt", "d.jsonl"])
def test_latin1_files_read_with_the_encoding_option(tmp_path, name):
    content = {
        "d.csv": "text,label\ncafé crème,x\nnaïve,y\n",
        "d.tsv": "text\tlabel\ncafé crème\tx\nnaïve\ty\n",
        "d.txt": "__label__x café crème\n__label__y naïve\n",
        "d.jsonl": '{"text": "café crème", "label": "x"}\n{"text": "naïve", "label": "y"}\n',
    }[name]
    path = _write(tmp_path / name, content.encode("latin-1"))
    with pytest.raises(TunelabError) as err:
        load_examples(path)
    message = str(err.value)
    assert "not valid UTF-8" in message and "--data.encoding" in message and "\n" not in message
    examples = load_examples(path, encoding="latin-1")
    assert [e["text"] for e in examples] == ["café crème", "naïve"]


def test_unknown_encoding_names_the_flag(tmp_path):
    path = _write(tmp_path / "d.csv", "text,label\na,b\n")
    with pytest.raises(TunelabError, match=r"unknown encoding 'latin-42'.*--data\.encoding"):
        load_examples(path, encoding="latin-42")


def test_class_folders_use_the_encoding(tmp_path):
    (tmp_path / "tree" / "x").mkdir(parents=True)
    (tmp_path / "tree" / "x" / "a.txt").write_bytes("prix £ 5".encode("latin-1"))
    assert load_examples(tmp_path / "tree", encoding="latin-1")[0]["text"] == "prix £ 5"


# --- data in memory -----------------------------------------------------------------------

ROWS = [{"text": "good film", "label": "pos"}, {"text": "bad film", "label": "neg"}]


@pytest.mark.parametrize(
    "make",
    [
        lambda: pd.DataFrame(ROWS),
        lambda: datasets.Dataset.from_list(ROWS),
        lambda: datasets.DatasetDict(train=datasets.Dataset.from_list(ROWS)),
        lambda: list(ROWS),
        lambda: {"text": [r["text"] for r in ROWS], "label": [r["label"] for r in ROWS]},
    ],
    ids=["DataFrame", "Dataset", "DatasetDict", "rows", "columns"],
)
def test_data_in_memory_reads_like_a_file(make):
    assert load_examples(make()) == ROWS


def test_dataframe_with_nan_and_integer_labels():
    frame = pd.DataFrame({"text": ["a", "b", None], "label": [0, 1, 1]})
    assert load_examples(frame) == [
        {"text": "a", "label": "0"},
        {"text": "b", "label": "1"},
        {"text": "", "label": "1"},
    ]


def test_dataframe_missing_column_is_one_line():
    with pytest.raises(TunelabError, match=r"'text' not found in the DataFrame.*review"):
        load_examples(pd.DataFrame({"review": ["a"], "label": ["x"]}))


def test_other_objects_are_refused():
    with pytest.raises(TunelabError, match="data of type int is not readable"):
        memory.memory_table(3)


def test_materialize_writes_the_same_data_to_the_same_parquet_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
    frame = pd.DataFrame(ROWS * 3)
    options = memory.materialize(DataOptions(source=frame, test_file=list(ROWS)))
    again = memory.materialize(DataOptions(source=frame.copy()))
    assert options.source == again.source and options.source.endswith(".parquet")
    assert Path(options.source).parent == tmp_path / "cache" / "data"
    assert load_examples(options.source) == ROWS * 3
    assert load_examples(options.test_file) == ROWS
    assert options.train_file is None
    files = sorted(p.name for p in (tmp_path / "cache" / "data").iterdir())
    assert len(files) == 2 and all(f.endswith(".parquet") for f in files)  # no temp left


def test_materialize_overrides_only_touches_data_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path))
    frame = pd.DataFrame(ROWS)
    out = memory.materialize_overrides({"data.source": frame, "train.lr": "1e-3"})
    assert out["train.lr"] == "1e-3" and Path(out["data.source"]).is_file()
    assert json.loads(json.dumps(out))  # plain values only: the config can be saved as YAML
