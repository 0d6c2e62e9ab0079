"""Baselines beside the model on whole verbs: finetune writes them to metrics.json and prints
them, eval fits them on the run's own training data (or says why it cannot)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import toy_examples, write_csv
from tunelab.cli import main


@pytest.fixture(scope="module")
def toy_run(tiny_models, tmp_path_factory):
    """A tiny encoder trained 2 steps on the toy topics from its own train/test files."""
    root = tmp_path_factory.mktemp("baselines")
    rows = toy_examples(120)
    train = write_csv(root / "train.csv", rows[:90])
    test = write_csv(root / "test.csv", rows[90:])
    args = [
        "finetune",
        "--model",
        str(tiny_models["encoder"]),
        "--data.train_file",
        str(train),
        "--data.test_file",
        str(test),
        "--data.val_size",
        "0",
        "--data.max_length",
        "32",
        "--train.max_steps",
        "2",
        "--train.batch_size",
        "8",
        "--train.threads",
        "1",
        "--output",
        str(root / "runs"),
        "--name",
        "toy",
    ]
    return root, args


def test_finetune_writes_and_prints_baselines_and_eval_uses_the_run_data(toy_run, capsys):
    root, args = toy_run
    assert main(args) == 0
    printed = capsys.readouterr().out
    run = root / "runs" / "toy"
    metrics = json.loads((run / "metrics.json").read_text())
    baselines = metrics["baselines"]
    assert set(baselines) == {"majority", "tfidf_lr"}
    # the toy topics have their own words: a bag of words separates them all
    assert baselines["tfidf_lr"]["macro_f1"] == 1.0 and baselines["tfidf_lr"]["n"] == 30
    assert baselines["majority"]["accuracy"] == pytest.approx(1 / 3)
    assert baselines["majority"]["labels"] == metrics["test"]["labels"]
    assert isinstance(metrics["warnings"], list) and "baseline_notes" not in metrics
    # two steps of a random model cannot reach the perfect TF-IDF baseline
    assert any("does not beat TF-IDF" in w for w in metrics["warnings"])
    assert "baselines on the same test rows" in printed
    assert "TF-IDF + logistic regression" in printed and "warning: the model" in printed

    out = root / "eval.json"
    test = root / "test.csv"
    assert main(["eval", str(run), "--data", str(test), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    m = json.loads(out.read_text())
    assert m["baselines"]["tfidf_lr"]["macro_f1"] == 1.0  # fitted on the run's train.csv
    assert m["baselines"]["tfidf_lr"]["accuracy"] == baselines["tfidf_lr"]["accuracy"]
    assert m["accuracy"] == metrics["test"]["accuracy"]
    assert "baselines on the same eval rows" in printed

    # the training file is gone: majority class of the eval rows themselves, and a note
    (root / "train.csv").rename(root / "moved.csv")
    assert main(["eval", str(run), "--data", str(test), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    m = json.loads(out.read_text())
    assert set(m["baselines"]) == {"majority"}
    assert m["baselines"]["majority"]["accuracy"] == pytest.approx(1 / 3)
    assert "no training data for the baselines" in m["baseline_notes"][0]
    assert "note: no training data for the baselines" in printed
