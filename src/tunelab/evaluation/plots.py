"""Pictures of a run a person would rather see than read: the training curve.

`curves.png` in a run folder shows the training loss by optimizer step and, when the run was
validated, the validation loss and the selection metric, with the best step marked.
"""

from __future__ import annotations

import json
from pathlib import Path

from tunelab.evaluation.metrics import lower_is_better


def plot_curves(log_path: Path, out_png: Path, metric: str) -> Path | None:
    """Draw `log.jsonl` as a PNG; returns its path, or None when the log has no loss yet."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in records if "loss" in r and "step" in r]
    evals = [(r["step"], r["eval"]) for r in records if "eval" in r]
    if not train and not evals:
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        ax.plot(*zip(*train, strict=True), label="training loss", color="tab:blue")
    if evals and all("loss" in e for _, e in evals):
        steps = [s for s, _ in evals]
        ax.plot(
            steps, [e["loss"] for _, e in evals], "o-", label="validation loss", color="tab:orange"
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if evals and all(metric in e for _, e in evals):
        right = ax.twinx()
        steps, values = [s for s, _ in evals], [e[metric] for _, e in evals]
        right.plot(steps, values, "s--", color="tab:green", label=f"validation {metric}")
        best = (min if lower_is_better(metric) else max)(range(len(values)), key=values.__getitem__)
        right.annotate(
            f"best {values[best]:.4f}",
            (steps[best], values[best]),
            textcoords="offset points",
            xytext=(-10, 8),
            color="tab:green",
        )
        right.set_ylabel(metric)
        h2, l2 = right.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="center right")
    ax.set_title(f"training curve ({log_path.parent.name.strip('.').removesuffix('.partial')})")
    fig.tight_layout()
    tmp = out_png.with_name(out_png.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out_png)
    return out_png
