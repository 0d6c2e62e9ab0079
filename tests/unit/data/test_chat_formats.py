"""Tests for instruction / chat data (tunelab.data.chat through load_pairs): Alpaca, ShareGPT,
OpenAI messages, the format option, and generative data from parquet, saved datasets folders,
the hub and memory."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pandas as pd
import pytest

from tunelab.data.chat import detect_format
from tunelab.data.pairs import load_pairs
from tunelab.errors import TunelabError


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ALPACA = [
    {"instruction": "Translate to French.", "input": "good morning", "output": "bonjour"},
    {"instruction": "Name a colour.", "input": "", "output": "blue"},
]


def test_alpaca_input_is_joined_to_the_instruction(tmp_path):
    first, second = load_pairs(_jsonl(tmp_path / "a.jsonl", ALPACA))
    assert first["prompt"] == "Translate to French.\n\ngood morning"  # the input is not dropped
    assert first["response"] == "bonjour"
    assert first["alpaca"] == {"instruction": "Translate to French.", "input": "good morning"}
    assert second["prompt"] == "Name a colour." and "messages" not in second


def test_alpaca_system_and_history_become_chat_context(tmp_path):
    row = {
        "instruction": "And in German?",
        "input": "",
        "output": "guten Morgen",
        "system": "You translate.",
        "history": [["Translate good morning to French.", "bonjour"]],
    }
    (pair,) = load_pairs(_jsonl(tmp_path / "a.jsonl", [row]))
    assert pair["messages"] == [
        {"role": "system", "content": "You translate."},
        {"role": "user", "content": "Translate good morning to French."},
        {"role": "assistant", "content": "bonjour"},
        {"role": "user", "content": "And in German?"},
    ]
    assert pair["response"] == "guten Morgen" and "alpaca" not in pair


def test_sharegpt_roles_and_system_column(tmp_path):
    row = {
        "system": "Be brief.",
        "conversations": [
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello!"},
            {"from": "human", "value": "Capital of France?"},
            {"from": "gpt", "value": "Paris."},
        ],
    }
    (pair,) = load_pairs(_jsonl(tmp_path / "s.jsonl", [row]))
    assert pair["response"] == "Paris." and pair["prompt"] == "Capital of France?"
    assert [m["role"] for m in pair["messages"]] == ["system", "user", "assistant", "user"]
    assert pair["messages"][0]["content"] == "Be brief."


def test_openai_messages_with_text_parts_and_weights(tmp_path):
    row = {
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            {"role": "assistant", "content": "Hello!", "weight": 0},
            {"role": "user", "content": "Capital?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "Thanks"},  # after the last assistant turn: unused
        ]
    }
    (pair,) = load_pairs(_jsonl(tmp_path / "m.jsonl", [row]))
    assert pair["response"] == "Paris."
    assert pair["messages"][0] == {"role": "system", "content": "Be brief."}
    assert pair["messages"][1]["content"] == "Hi"
    assert pair["messages"][2] == {"role": "assistant", "content": "Hello!", "weight": 0}


def test_last_assistant_turn_with_weight_0_is_not_the_response(tmp_path):
    row = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
            {"role": "assistant", "content": "d", "weight": 0},
        ]
    }
    (pair,) = load_pairs(_jsonl(tmp_path / "m.jsonl", [row]))
    assert pair["response"] == "b" and len(pair["messages"]) == 1


@pytest.mark.parametrize(
    ("row", "words"),
    [
        ({"conversations": [{"from": "tool", "value": "x"}]}, r"row 1: role 'tool' is not supp"),
        ({"conversations": "hi"}, r"row 1: conversations must be a list"),
        ({"conversations": [{"from": "human"}]}, r"row 1: every conversations turn needs"),
        ({"conversations": [{"from": "gpt", "value": "x"}]}, r"row 1: messages need an assis"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            r"row 1: a image_url content part is not text",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "b", "weight": 2},
                ]
            },
            r"row 1: a message weight must be 0 or 1",
        ),
        ({"instruction": "a", "output": "b", "history": "x"}, r"row 1: history must be a list"),
    ],
)
def test_malformed_rows_are_one_line_with_the_row(tmp_path, row, words):
    with pytest.raises(TunelabError, match=words) as err:
        load_pairs(_jsonl(tmp_path / "bad.jsonl", [row]))
    assert "\n" not in str(err.value)


def test_format_detection_and_explicit_formats():
    assert detect_format(["instruction", "input", "output"]) == "alpaca"
    assert detect_format(["conversations"]) == "sharegpt"
    assert detect_format(["messages", "id"]) == "messages"
    assert detect_format(["prompt", "messages"]) == "pairs"  # named columns win
    assert detect_format(["q", "a"]) == "pairs"
    with pytest.raises(TunelabError, match=r"--data\.format 'chatml' is not one of auto, pairs"):
        detect_format(["messages"], fmt="chatml")
    with pytest.raises(TunelabError, match=r"--data\.format alpaca needs .*instruction, output"):
        detect_format(["messages"], fmt="alpaca")


def test_pairs_column_error_mentions_the_chat_formats(tmp_path):
    with pytest.raises(TunelabError, match=r"--data\.prompt_column, or give alpaca, sharegpt"):
        load_pairs(_jsonl(tmp_path / "d.jsonl", [{"q": "a", "a": "b"}]))


def test_classification_lines_are_no_generative_data(tmp_path):
    (tmp_path / "d.txt").write_text("__label__a one\n__label__b two\n")
    with pytest.raises(TunelabError, match=r"holds fasttext lines for classification"):
        load_pairs(tmp_path / "d.txt")


# --- where generative data comes from ------------------------------------------------------


def test_parquet_pairs_and_sharegpt(tmp_path):
    pd.DataFrame({"prompt": ["p1", "p2"], "response": ["r1", "r2"]}).to_parquet(
        tmp_path / "p.parquet"
    )
    assert load_pairs(tmp_path / "p.parquet")[1] == {"prompt": "p2", "response": "r2"}
    convo = [[{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]]
    pd.DataFrame({"conversations": convo}).to_parquet(tmp_path / "s.parquet")
    assert load_pairs(tmp_path / "s.parquet")[0]["response"] == "yo"


def test_saved_dataset_folder_with_splits(tmp_path):
    dd = datasets.DatasetDict(
        train=datasets.Dataset.from_list(ALPACA), test=datasets.Dataset.from_list(ALPACA[:1])
    )
    dd.save_to_disk(str(tmp_path / "saved"))
    assert len(load_pairs(tmp_path / "saved")) == 2
    assert len(load_pairs(tmp_path / "saved", split="test")) == 1
    assert load_pairs(tmp_path / "saved")[0]["prompt"].endswith("good morning")


def test_hub_for_generative_data(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    calls = []

    def fake_load(name, split):
        calls.append((name, split))
        return datasets.Dataset.from_list(ALPACA)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    assert load_pairs("hub:tatsu-lab/alpaca")[1]["response"] == "blue"
    assert calls == [("tatsu-lab/alpaca", "train")]


def test_hub_offline_for_generative_data(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TunelabError, match="hub is unreachable"):
        load_pairs("hub:tatsu-lab/alpaca")


def test_pairs_in_memory():
    assert load_pairs(pd.DataFrame(ALPACA))[0]["response"] == "bonjour"
    assert load_pairs(datasets.Dataset.from_list(ALPACA))[1]["prompt"] == "Name a colour."
    assert load_pairs([{"q": "a", "r": "b"}], "q", "r") == [{"prompt": "a", "response": "b"}]


def test_latin1_pairs_file(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes("prompt,response\ncafé?,crème\n".encode("latin-1"))
    with pytest.raises(TunelabError, match="--data.encoding"):
        load_pairs(path)
    assert load_pairs(path, encoding="latin-1") == [{"prompt": "café?", "response": "crème"}]


def test_a_plain_folder_is_refused(tmp_path):
    with pytest.raises(TunelabError, match="is a folder: pass a .jsonl.*save_to_disk"):
        load_pairs(tmp_path)


def test_split_keeps_conversations_ending_on_the_same_question_apart():
    from tunelab.data.pairs import split_pairs

    convos = [
        {"messages": [{"role": "user", "content": f"topic {i}"}, {"role": "assistant",
                      "content": "ok"}, {"role": "user", "content": "Thanks!"}],
         "prompt": "Thanks!", "response": "You're welcome."}
        for i in range(10)
    ]  # fmt: skip
    splits = split_pairs(convos, 0.2, 0.1, seed=0)
    assert [len(splits[k]) for k in ("train", "validation", "test")] == [7, 1, 2]
