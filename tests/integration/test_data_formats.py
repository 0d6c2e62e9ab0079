"""The data formats people have, through the verbs: fine-tuning on fastText lines, parquet with
binned labels, a DataFrame through the Python API, ShareGPT and Alpaca chat data; `data
inspect` without --text-column; and bad data options as one line, exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import toy_examples
from tunelab import api
from tunelab.cli import main

FAST = ["--train.max_steps", "1", "--train.batch_size", "8", "--train.threads", "1"]
FAST += ["--data.max_length", "32"]


def _fasttext(path: Path, n: int = 30) -> Path:
    lines = [f"__label__{e['label']} {e['text']}" for e in toy_examples(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _marker(run: Path) -> dict:
    return json.loads((run / "tunelab_run.json").read_text())


def test_finetune_on_fasttext_lines(tiny_models, tmp_path, capsys):
    data = _fasttext(tmp_path / "train.cor")
    args = ["finetune", "--model", str(tiny_models["encoder"]), "--data", str(data), *FAST]
    assert main([*args, "--output", str(tmp_path / "runs"), "--name", "ft"]) == 0
    assert _marker(tmp_path / "runs" / "ft")["labels"] == ["money", "sport", "tech"]
    assert "run saved to" in capsys.readouterr().out


def test_finetune_on_parquet_with_binned_numeric_labels(tiny_models, tmp_path):
    rows = [{"review": e["text"], "stars": i % 5 + 1} for i, e in enumerate(toy_examples(40))]
    pd.DataFrame(rows).to_parquet(tmp_path / "reviews.parquet")
    args = ["finetune", "--model", str(tiny_models["encoder"]), *FAST]
    args += ["--data", str(tmp_path / "reviews.parquet"), "--data.text_column", "review"]
    args += ["--data.label_column", "stars", "--data.bins", "[2.5, 4]"]
    args += ["--data.bin_names", "low,mid,high"]
    assert main([*args, "--output", str(tmp_path / "runs"), "--name", "bins"]) == 0
    assert _marker(tmp_path / "runs" / "bins")["labels"] == ["high", "low", "mid"]


def test_api_takes_a_dataframe_and_the_config_names_a_real_file(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
    frame = pd.DataFrame(toy_examples(30)).rename(columns={"label": "topic"})
    frame["topic"] = frame["topic"].map({"sport": 0, "money": 1, "tech": 2})
    cfg = api.build_config(
        overrides={
            "model.name": str(tiny_models["encoder"]),
            "data.source": frame,
            "data.label_column": "topic",
            "data.label_map": "0=sport,1=money,2=tech",
            "data.max_length": 32,
            "train.max_steps": 1,
            "train.batch_size": 8,
            "train.threads": 1,
            "run.output_dir": str(tmp_path / "runs"),
            "run.name": "df",
        }
    )
    run = api.finetune(cfg, quiet=True).run_dir
    assert _marker(run)["labels"] == ["money", "sport", "tech"]
    saved = yaml.safe_load((run / "config.yaml").read_text())["data"]["source"]
    assert saved.endswith(".parquet") and Path(saved).parent == tmp_path / "cache" / "data"
    # the same data set on the config itself (not through build_config) works too
    cfg.data.source = frame
    cfg.run.name = "df2"
    assert _marker(api.finetune(cfg, quiet=True).run_dir)["labels"] == ["money", "sport", "tech"]
    assert "label column: topic" in api.inspect_data(frame)


SHAREGPT = [
    {
        "conversations": [
            {"from": "human", "value": f"the match {i}"},
            {"from": "gpt", "value": "goal team"},
            {"from": "human", "value": "and the market"},
            {"from": "gpt", "value": "bank price"},
        ]
    }
    for i in range(24)
]
ALPACA = [{"instruction": "report", "input": f"match {i}", "output": "goal"} for i in range(24)]


@pytest.mark.parametrize(
    ("name", "rows"),
    [("chat.parquet", SHAREGPT), ("alpaca.jsonl", ALPACA)],
    ids=["sharegpt", "alpaca"],
)
def test_causal_lm_on_chat_and_instruction_data(tiny_models, tmp_path, name, rows):
    path = tmp_path / name
    if name.endswith(".parquet"):
        pd.DataFrame(rows).to_parquet(path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["finetune", "--task", "causal_lm", "--model", str(tiny_models["decoder"]), *FAST]
    args += ["--data", str(path), "--output", str(tmp_path / "runs"), "--name", "lm"]
    assert main(args) == 0
    metrics = json.loads((tmp_path / "runs" / "lm" / "metrics.json").read_text())
    assert metrics["test"]["tokens"] > 0


def test_data_inspect_guesses_columns(tmp_path, capsys):
    rows = [{"sentence": e["text"], "category": e["label"]} for e in toy_examples(9)]
    frame = pd.DataFrame([{**r, "n": i} for i, r in enumerate(rows)])
    frame.to_csv(tmp_path / "d.csv", index=False)
    assert main(["data", "inspect", str(tmp_path / "d.csv")]) == 0
    out = capsys.readouterr().out
    assert "text column: sentence (guessed" in out and "label column: category (guessed" in out
    assert "sentence" in out.splitlines()[3]  # the real column names, as in the file


@pytest.fixture
def bad(tmp_path) -> Path:
    (tmp_path / "latin.csv").write_bytes("text,label\ncafé,x\nthé,y\n".encode("latin-1"))
    (tmp_path / "stars.csv").write_text("text,label\na b,1\nc d,2\ne f,oops\n")
    _fasttext(tmp_path / "ft.txt", 12)
    (tmp_path / "pairs.jsonl").write_text('{"prompt": "a", "response": "b"}\n')
    (tmp_path / "tool.jsonl").write_text(
        json.dumps({"messages": [{"role": "tool", "content": "x"}]}) + "\n"
    )
    return tmp_path


CASES = [
    ("finetune --data {tmp}/latin.csv", "--data.encoding"),
    ("finetune --data {tmp}/latin.csv --data.encoding nope", "unknown encoding 'nope'"),
    ("finetune --data {tmp}/ft.txt --data.label_map a=b", "not in --data.label_map"),
    ("finetune --data {tmp}/stars.csv --data.bins 2", "--data.bins needs numeric labels"),
    ("finetune --data {tmp}/stars.csv --data.bins 1", "--data.bins 1 is a count"),
    ("finetune --data {tmp}/ft.txt --data.bin_names a,b", "--data.bin_names names the classes"),
    ("finetune --task causal_lm --data {tmp}/pairs.jsonl --data.format x", "--data.format 'x'"),
    ("finetune --task causal_lm --data {tmp}/pairs.jsonl --data.bins 2", "--data.bins makes"),
    ("finetune --task causal_lm --data {tmp}/ft.txt", "holds fasttext lines"),
    ("finetune --task causal_lm --data {tmp}/tool.jsonl", "role 'tool' is not supported"),
    ("data inspect {tmp}/latin.csv", "--data.encoding"),
    ("data inspect {tmp}/stars.csv --text-column nope", "--data.text_column"),
    ("data inspect {tmp}/pairs.jsonl --format alpaca", "--data.format alpaca needs"),
]


@pytest.mark.parametrize(("argv", "message"), CASES)
def test_bad_data_options_are_one_line_exit_2(tiny_models, bad, capsys, argv, message):
    args = argv.format(tmp=bad).split()
    if args[0] == "finetune":
        args += ["--model", str(tiny_models["encoder"]), "--output", str(bad / "runs")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tunelab: error: "), err
    assert message in err[0]
    assert not (bad / "runs").exists()
