"""Whole verbs on a tiny model: finetune -> run folder -> predict / eval, and --resume."""

from __future__ import annotations

import csv
import json

import pytest
from transformers import AutoModelForSequenceClassification

from tests.conftest import toy_examples, write_csv
from tunelab.cli import main
from tunelab.strategies import STRATEGIES


@pytest.fixture
def toy_split(tmp_path):
    rows = toy_examples(120)
    train = write_csv(tmp_path / "train.csv", rows[:90])
    test = write_csv(tmp_path / "test.csv", rows[90:])
    return train, test


def _finetune(tiny_models, train, out, *extra):
    return main(
        [
            "finetune",
            "--model",
            str(tiny_models["encoder"]),
            "--data.train_file",
            str(train),
            "--data.val_size",
            "0.2",
            "--epochs",
            "4",
            "--train.min_steps",
            "0",  # exactly the epochs asked for (resume counts them)
            "--lr",
            "3e-3",
            "--train.batch_size",
            "8",
            "--output",
            str(out),
            "--name",
            "toy",
            *extra,
        ]
    )


def test_finetune_predict_eval(tiny_models, toy_split, tmp_path, capsys):
    train, test = toy_split
    out = tmp_path / "runs"
    assert _finetune(tiny_models, train, out, "--run.predict", "goal match team") == 0
    printed = capsys.readouterr().out
    run = out / "toy"
    assert f"run saved to {run}" in printed and "accuracy" in printed
    assert not list(out.glob(".*partial"))  # the working folder was renamed, not left behind
    for name in (
        "tunelab_run.json",
        "config.yaml",
        "labels.json",
        "metrics.json",
        "log.jsonl",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "curves.png",
    ):
        assert (run / name).is_file(), name
    assert not (run / "checkpoint").exists()
    labels = json.loads((run / "labels.json").read_text())
    assert sorted(labels.values()) == ["money", "sport", "tech"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["n"] == 18 and 0 <= metrics["test"]["accuracy"] <= 1
    # the run folder is a plain transformers checkpoint
    model = AutoModelForSequenceClassification.from_pretrained(run)
    assert model.config.id2label[0] in labels.values()

    # predict: JSONL to stdout, CSV to a file, same labels either way
    assert main(["predict", str(run), "goal team match", "bank market price"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["text"] for x in lines] == ["goal team match", "bank market price"]
    assert all(abs(sum(x["probs"].values()) - 1) < 1e-4 for x in lines)
    dest = tmp_path / "pred.csv"
    assert main(["predict", str(run), "--file", str(test), "--output", str(dest)]) == 0
    with dest.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 30 and set(rows[0]) >= {"text", "label", "score", "sport"}

    # eval on the held-out file gives the metrics table and a JSON copy
    js = tmp_path / "eval.json"
    assert main(["eval", str(run), "--data", str(test), "--json", str(js)]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert json.loads(js.read_text())["n"] == 30


def test_resume_after_interrupt(tiny_models, toy_split, tmp_path, monkeypatch, capsys):
    import tunelab.training.loop as loop

    train, _ = toy_split
    out = tmp_path / "runs"
    real_save, calls = loop.save_checkpoint, []

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed after the second checkpoint (epoch 2 of 4)

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    assert _finetune(tiny_models, train, out) == 130
    assert "--resume" in capsys.readouterr().err
    partial = out / ".toy.partial"
    assert (partial / "checkpoint" / "state.json").is_file() and not (out / "toy").exists()

    # starting the same run afresh is refused with a hint, and leaves the partial run alone
    assert _finetune(tiny_models, train, out) == 2
    assert "--resume" in capsys.readouterr().err and (partial / "checkpoint").is_dir()

    assert main(["finetune", "--output", str(out), "--resume"]) == 0
    assert not partial.exists()
    log = [json.loads(x) for x in (out / "toy" / "log.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "resumed" for r in log)
    metrics = json.loads((out / "toy" / "metrics.json").read_text())
    assert metrics["train"]["epochs"] == 4.0  # finished the whole budget after resuming


def test_lora_merge_opens_with_transformers(tiny_models, toy_split, tmp_path):
    import torch

    from tunelab.runs.open import open_classifier

    train, _ = toy_split
    out = tmp_path / "runs"
    assert _finetune(tiny_models, train, out, "--strategy", "lora", "--merge") == 0
    run = out / "toy"
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    merged = AutoModelForSequenceClassification.from_pretrained(run).eval()
    peft_model, tok, _ = open_classifier(run)
    batch = tok(["goal team match", "bank price"], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.allclose(merged(**batch).logits, peft_model(**batch).logits, atol=1e-4)


def test_same_seed_same_run(tiny_models, toy_split, tmp_path):
    """The seed covers the new head's initial weights too: two runs give identical weights."""
    from safetensors.torch import load_file

    train, _ = toy_split
    weights = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert _finetune(tiny_models, train, out, "--train.precision", "fp32") == 0
        weights.append(load_file(str(out / "toy" / "model.safetensors")))
    assert weights[0].keys() == weights[1].keys()
    assert all(weights[0][k].equal(weights[1][k]) for k in weights[0])


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_every_strategy_through_the_cli(strategy, tiny_models, toy_split, tmp_path, capsys):
    """finetune (hooks, param groups, train views included) -> run folder -> predict, and
    --merge is either honoured or refused in one line."""
    train, _ = toy_split
    out = tmp_path / "runs"
    assert _finetune(tiny_models, train, out, "--strategy", strategy) == 0
    run = out / "toy"
    marker = json.loads((run / "tunelab_run.json").read_text())
    assert marker["strategy"] == strategy
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train"]["steps"] > 0 and metrics["train"]["peak_memory_mib"] > 0
    capsys.readouterr()
    assert main(["predict", str(run), "goal team match"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("money", "sport", "tech")

    code = _finetune(tiny_models, train, tmp_path / "merged", "--strategy", strategy, "--merge")
    if STRATEGIES[strategy].can_merge:
        assert code == 0
        AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged" / "toy")
    else:
        assert code == 2 and "drop --merge" in capsys.readouterr().err
        assert not (tmp_path / "merged").exists()


def test_virtual_tokens_beyond_the_encoders_positions_are_a_one_line_error(
    tiny_models, toy_split, tmp_path, capsys
):
    long_rows = [{**r, "text": " ".join([r["text"]] * 40)} for r in toy_examples(60)]
    train = write_csv(tmp_path / "long.csv", long_rows)
    out = tmp_path / "runs"
    code = _finetune(
        tiny_models, train, out, "--strategy", "prompt", "--data.max_length", "120",
        "--prompt.num_virtual_tokens", "20",
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "120 tokens + 20 virtual tokens exceed the model's 128" in err
    assert "--data.max_length 108" in err
    assert not out.exists() or not any(out.iterdir())


def test_uneven_classes_train_with_a_weighted_loss_and_the_step_floor(
    tiny_models, tmp_path, capsys
):
    rows = toy_examples(120)
    labels = sorted({r["label"] for r in rows})
    keep = {labels[0]: 60, labels[1]: 20, labels[2]: 6}  # ~70 / 23 / 7 %
    seen: dict[str, int] = {}
    uneven = []
    for r in rows:
        if seen.get(r["label"], 0) < keep.get(r["label"], 0):
            seen[r["label"]] = seen.get(r["label"], 0) + 1
            uneven.append(r)
    train = write_csv(tmp_path / "uneven.csv", uneven)
    out = tmp_path / "runs"
    floor = ["--train.epochs", "1", "--train.min_steps", "12", "--data.test_size", "0.2"]
    assert _finetune(tiny_models, train, out, *floor) == 0  # later flags win over _finetune's
    printed = capsys.readouterr().out
    assert "--data.balance auto: class-weighted loss" in printed
    metrics = json.loads((out / "toy" / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 12  # 1 epoch would be fewer: the floor added epochs
