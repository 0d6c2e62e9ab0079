"""The training-curve picture of a run."""

from __future__ import annotations

import json

from tunelab.evaluation.plots import plot_curves


def test_curves_png_from_a_log(tmp_path):
    log = tmp_path / "log.jsonl"
    rows = [{"step": s, "loss": 1.0 / s, "lr": 1e-4} for s in range(10, 60, 10)]
    rows += [{"step": s, "eval": {"loss": 0.5 / s, "macro_f1": 0.8 + s / 1000}} for s in (25, 50)]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = plot_curves(log, tmp_path / "curves.png", "macro_f1")
    assert out == tmp_path / "curves.png"
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert not list(tmp_path.glob("*.tmp.png"))


def test_no_picture_without_records(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps({"event": "resumed", "step": 3}) + "\n")
    assert plot_curves(log, tmp_path / "curves.png", "macro_f1") is None
    assert not (tmp_path / "curves.png").exists()
