"""The compare report names what it really ran on and shows the baselines beside the
strategies (table rows, reference lines on the plots)."""

from __future__ import annotations

import json

from tests.conftest import toy_examples, write_csv
from tunelab.evaluation.baselines import MAJORITY, TFIDF, fit_baselines
from tunelab.recipes.compare import markdown_table, report_baselines, write_report


def _row(strategy: str, macro_f1: float, warnings: list[str] | None = None) -> dict:
    return {
        "strategy": strategy,
        "status": "ok",
        "accuracy": 0.7,
        "macro_f1": macro_f1,
        "trainable_params": 1000,
        "total_params": 4000,
        "trainable_pct": 25.0,
        "train_seconds": 3.0,
        "wall_seconds": 5.0,
        "peak_memory_mib": 300.0,
        "checkpoint_mib": 0.5,
        "latency_ms_median": 1.5,
        "steps": 5,
        "warnings": warnings or [],
    }


def _toy_files(tmp_path):
    rows = toy_examples(60)
    return write_csv(tmp_path / "my-train.csv", rows[:45]), write_csv(
        tmp_path / "my-test.csv", rows[45:]
    )


def test_report_names_the_real_files_and_batch_and_shows_baselines(tmp_path):
    train, test = _toy_files(tmp_path)
    base = {
        "model": {"name": "minilm"},
        "data": {"train_file": str(train), "test_file": str(test)},
        "train": {"max_steps": 5},  # batch size left at its default
    }
    rows = [
        _row("full", 0.9),
        _row("lora", 0.3, ["the model predicts only 'money' for every test example"]),
        {"strategy": "prompt", "status": "failed", "reason": "boom"},
    ]
    baselines = report_baselines(base, rows)  # no strategy measured them: fitted here
    assert set(baselines) == {MAJORITY, TFIDF}
    write_report(tmp_path, base, rows, baselines)

    md = (tmp_path / "report.md").read_text()
    title = md.splitlines()[0]
    assert (
        title == "# Strategy comparison: minilm on my-train.csv + my-test.csv, 5 steps of batch 16"
    )
    assert "bbc-news" not in md and "None" not in md
    assert f"train `{train}`, test `{test}`" in md
    assert "| *baseline: TF-IDF + logistic regression* | 100.00% | 1.0000 |" in md
    assert "| *baseline: majority class (" in md
    assert "- **lora**: the model predicts only 'money'" in md and "**prompt** failed" in md
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["meta"]["batch_size"] == 16 and report["meta"]["data_files"]["test"] == str(test)
    assert report["baselines"][TFIDF]["macro_f1"] == 1.0
    for png in ("tradeoff-params.png", "tradeoff-time.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"


def test_baselines_come_from_a_strategy_when_it_measured_them(tmp_path):
    rows = toy_examples(30)
    labels = sorted({r["label"] for r in rows})
    measured = fit_baselines(rows[:20], rows[20:], labels, tfidf=False)[0]
    ok = {**_row("full", 0.9), "baselines": measured}
    assert report_baselines({"data": {"source": "nowhere.csv"}}, [ok]) is measured
    # unreadable data and no measured baselines: none, and the table still renders
    assert report_baselines({"data": {"source": str(tmp_path / "gone.csv")}}, [_row("a", 1)]) == {}
    table = markdown_table([ok], measured)
    assert "*baseline: majority class" in table and "TF-IDF" not in table


def test_source_title_and_accumulated_batch(tmp_path):
    data = write_csv(tmp_path / "reviews.csv", toy_examples(30))
    base = {
        "data": {"source": str(data), "limit": 20},
        "train": {"batch_size": 8, "grad_accum": 2, "epochs": 1},
    }
    write_report(tmp_path, base, [_row("full", 0.5)], {})
    title = (tmp_path / "report.md").read_text().splitlines()[0]
    assert title == (
        "# Strategy comparison: minilm on reviews.csv (a sample of 20), 1 epochs of batch "
        "8 x 2 accumulated"
    )
