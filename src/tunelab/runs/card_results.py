"""The Training and Evaluation sections of a run's model card (`runs.card`): what the
training took, and the test metrics beside the baselines (metrics.json's `baselines`,
`warnings` and `baseline_notes`, when the recipe wrote them) or the base model before
training (generative runs)."""

from __future__ import annotations

from typing import Any

from tunelab.runs.marker import RunMarker

BASELINES = {"majority": "majority class", "tfidf_lr": "TF-IDF + logistic regression"}
"""Baseline key in metrics.json -> how the card names it."""
_NOT_METRICS = {"n", "labels", "per_class", "confusion_matrix", "predicts", "fit_seconds"}


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec} s"
    return f"{minutes // 60} h {minutes % 60} min"


def training_section(marker: RunMarker, config: dict[str, Any], metrics: dict) -> str:
    train = metrics.get("train") or {}
    cfg = config.get("train") or {}
    if not train and not cfg:
        return ""
    rows = []
    if "steps" in train:
        rows.append(("Steps", f"{train['steps']:,}"))
    if "epochs" in train:
        rows.append(("Epochs", train["epochs"]))
    if "seconds" in train:
        rows.append(("Training time", _duration(float(train["seconds"]))))
    if "samples_per_second" in train:
        rows.append(("Throughput", f"{train['samples_per_second']} examples/s"))
    if train.get("best_step") is not None:
        best = train.get("best_validation")
        best = f" (validation {cfg.get('metric')} {_num(best)})" if best is not None else ""
        rows.append(("Kept checkpoint", f"step {train['best_step']}{best}"))
    if train.get("stopped_early"):
        rows.append(("Stopped early", "yes"))
    for key, title in (
        ("lr", "Learning rate"),
        ("batch_size", "Batch size"),
        ("grad_accum", "Gradient accumulation"),
        ("schedule", "Schedule"),
        ("warmup_ratio", "Warm-up ratio"),
        ("weight_decay", "Weight decay"),
        ("precision", "Precision"),
        ("seed", "Seed"),
    ):
        if cfg.get(key) is not None:
            rows.append((title, cfg[key]))
    if train.get("peak_memory_mib"):
        rows.append(("Peak memory", f"{train['peak_memory_mib']:,} MiB"))
    return "## Training\n\n" + table(("", ""), rows) if rows else ""


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.4f}"


def _scalars(block: dict) -> dict[str, Any]:
    return {
        k: v
        for k, v in block.items()
        if k not in _NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def evaluation_section(marker: RunMarker, metrics: dict) -> str:
    test = metrics.get("test")
    out = []
    if isinstance(test, dict):
        baselines = {
            k: v for k, v in (metrics.get("baselines") or {}).items() if isinstance(v, dict)
        }
        base_lm = (metrics.get("base") or {}).get("test")
        head = ["metric", "this model"]
        head += [BASELINES.get(k, k) for k in baselines]
        if isinstance(base_lm, dict):
            head.append("base model, before training")
        rows = []
        for key, value in _scalars(test).items():
            row = [key, _num(value)]
            row += [_num(b[key]) if key in b else "–" for b in baselines.values()]
            if isinstance(base_lm, dict):
                row.append(_num(base_lm[key]) if key in base_lm else "–")
            rows.append(row)
        n = test.get("n")
        out.append(f"On the test split{f' ({n:,} rows)' if isinstance(n, int) else ''}:\n")
        out.append(table(head, rows))
        per_class = test.get("per_class") or {}
        if per_class:
            keys = ("precision", "recall", "f1", "support")
            rows = [[lab, *(_num(v.get(k, "")) for k in keys)] for lab, v in per_class.items()]
            out.append("Per label:\n\n" + table(("label", *keys), rows))
        if "majority" in baselines and "predicts" in baselines["majority"]:
            out.append(
                f"The majority baseline always answers `{baselines['majority']['predicts']}`.\n"
            )
    for key in ("validation",):
        block = metrics.get(key)
        if isinstance(block, dict) and _scalars(block) and not isinstance(test, dict):
            out.append(
                f"On the {key} split:\n\n"
                + table(("metric", "value"), [(k, _num(v)) for k, v in _scalars(block).items()])
            )
    warnings = [str(w) for w in metrics.get("warnings") or []]
    notes = [str(w) for w in metrics.get("baseline_notes") or []]
    if warnings:
        out.append("**Warnings**\n\n" + "".join(f"- {w}\n" for w in warnings))
    if notes:
        out.append("Notes:\n\n" + "".join(f"- {w}\n" for w in notes))
    if not out and marker.compression:
        return (
            "## Evaluation\n\n`tunelab compress` measured this run beside the one it was "
            "compressed from: see its report (report.md, report.json).\n"
        )
    if not out:
        return "## Evaluation\n\nmetrics.json holds no test metrics for this run.\n"
    return "## Evaluation\n\n" + "\n".join(out)


def table(head, rows) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in head) + " |"]
    lines.append("|" + "---|" * len(head))
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
