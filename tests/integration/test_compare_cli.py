"""`tunelab compare` on a tiny model: a report with every strategy, failures recorded, resumable."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import toy_examples, write_csv
from tunelab.cli import main
from tunelab.config.compare import load_compare_config
from tunelab.errors import TunelabError


@pytest.fixture
def config(tiny_models, tmp_path):
    data = write_csv(tmp_path / "toy.csv", toy_examples(90))
    cfg = {
        "model": {"name": str(tiny_models["encoder"])},
        "data": {"source": str(data), "max_length": 32, "test_size": 0.2, "val_size": 0.1},
        "train": {"max_steps": 6, "batch_size": 8, "lr": 3e-3, "threads": 1},
        "lora": {"r": 4, "target_modules": "nowhere"},
        "compare": {"latency_examples": 4},
    }
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_strategy_sections_become_overrides_and_budget_stays_shared(config):
    cc, base = load_compare_config(config, {"train.lr": "1e-3"}, "full,lora", None)
    assert cc.strategies == ["full", "lora"]
    assert cc.overrides["lora"] == {"lora.r": 4, "lora.target_modules": "nowhere"}
    assert "lora" not in base and base["train"]["lr"] == "1e-3"
    with pytest.raises(TunelabError, match="unknown strategy 'nope'"):
        load_compare_config(config, {}, "full,nope", None)
    with pytest.raises(TunelabError, match="twice"):
        load_compare_config(config, {}, "full,full", None)
    raw = yaml.safe_load(config.read_text())
    raw["compare"]["overrides"] = {"full": {"train.max_steps": 3}}
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(TunelabError, match="step budget"):
        load_compare_config(config, {}, "full", None)


def test_compare_writes_report_records_failures_and_resumes(config, tmp_path, capsys):
    out = tmp_path / "report"
    args = ["compare", str(config), "--strategies", "full,features,lora", "--output", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr()
    assert "2 of 3 strategies finished" in printed.out
    report = json.loads((out / "report.json").read_text())
    rows = {r["strategy"]: r for r in report["results"]}
    # a strategy that cannot run (lora on modules the model lacks) is recorded; the others go on
    assert rows["full"]["status"] == rows["features"]["status"] == "ok"
    assert rows["lora"]["status"] == "failed" and "target_modules" in rows["lora"]["reason"]
    full, feats = rows["full"], rows["features"]
    assert full["trainable_pct"] == 100.0 and 0 < feats["trainable_pct"] < 50
    assert feats["checkpoint_mib"] < full["checkpoint_mib"]
    assert full["steps"] == feats["steps"] == 6  # the same budget
    for r in (full, feats):
        assert 0 <= r["accuracy"] <= 1 and r["latency_ms_median"] > 0 and r["peak_memory_mib"] > 0
    md = (out / "report.md").read_text()
    assert "| features |" in md and "**lora** failed" in md
    for png in ("tradeoff-params.png", "tradeoff-time.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"

    # re-run: finished strategies are skipped (their results untouched), the failed one retried
    stamp = (out / "results" / "full.json").stat().st_mtime_ns
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "full: done before, skipped" in printed and "features: done before, skipped" in printed
    assert (out / "results" / "full.json").stat().st_mtime_ns == stamp
    assert "[3/3] lora" in printed

    # a different shared config must not be mixed into this report
    assert main([*args, "--train.lr", "1e-2"]) == 2
    assert "another shared config" in capsys.readouterr().err
