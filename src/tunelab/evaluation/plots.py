"""Pictures of a run a person would rather see than read: the training curve.

`curves.png` in a run folder shows the training loss by optimizer step and, when the run was
validated, the validation loss and the selection metric, with the best step marked.
"""

from __future__ import annotations

import json
import math
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
    if metric != "loss" and evals and all(metric in e for _, e in evals):
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
    return save_figure(fig, out_png)


def _pos(x: float, log: bool) -> float:
    return math.log10(x) if log and x > 0 else x


def _span(xs: list[float], log: bool) -> tuple[float, float]:
    """(lowest, highest) of `xs` on the axis' own scale."""
    values = [_pos(x, log) for x in xs]
    return min(values), max(values)


_REFERENCE_STYLES = [("--", "black"), (":", "tab:gray"), ("-.", "tab:brown")]
"""Line style and colour of each reference line of a scatter plot, in order."""


def save_figure(fig, path: Path) -> Path:
    """Lay out `fig`, write it to `path` atomically (a temp file, then rename) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_tradeoffs(
    rows: list[dict], folder: Path, references: dict[str, float] | None = None
) -> list[Path]:
    """Two scatter plots of a strategy comparison: macro-F1 against trainable parameters (log
    x) and against training time, each point labelled with its strategy; `references` (name ->
    macro-F1: the baselines, the chance level) as horizontal lines. Returns the PNGs."""
    axes_spec = [
        ("trainable_params", "trainable parameters (log scale)", True, "tradeoff-params.png"),
        ("train_seconds", "training wall time (s)", False, "tradeoff-time.png"),
    ]
    return plot_scatter(
        rows, folder, "strategy", "macro_f1", "test macro-F1", axes_spec, references
    )


def plot_scatter(
    rows: list[dict],
    folder: Path,
    label_key: str,
    y_key: str,
    y_label: str,
    axes_spec: list[tuple[str, str, bool, str]],
    references: dict[str, float] | None = None,
) -> list[Path]:
    """One labelled scatter plot per (x key, x label, log x, file name) of `axes_spec`: `y_key`
    against that x for every row that has both, each point labelled with row[label_key];
    each of `references` (name -> y) a dashed horizontal line named in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    for key, xlabel, logx, name in axes_spec:
        shown = [r for r in rows if r.get(key) is not None and r.get(y_key) is not None]
        if not shown:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
        points = sorted(shown, key=lambda r: r[key])
        lo, hi = _span([r[key] for r in points], logx)
        for i, r in enumerate(points):
            dot = ax.scatter(r[key], r[y_key], s=36)
            # labels of the right half point left, so they stay inside the frame; neighbours
            # take turns at four heights so close labels do not overlap
            left = (_pos(r[key], logx) - lo) > 0.5 * (hi - lo) if hi > lo else False
            ax.annotate(
                r[label_key],
                (r[key], r[y_key]),
                textcoords="offset points",
                xytext=(-5 if left else 5, (6, -13, 17, -24)[i % 4]),
                ha="right" if left else "left",
                fontsize=9,
                color=dot.get_facecolor()[0],
            )
        for (ref, y), style in zip((references or {}).items(), _REFERENCE_STYLES, strict=False):
            ax.axhline(y, linestyle=style[0], color=style[1], linewidth=1.2, label=ref)
        if references:
            ax.legend(loc="best", fontsize=8, framealpha=0.8)
        if logx:
            ax.set_xscale("log")
        # room inside the frame for the point labels at the edges
        ax.margins(x=0.15, y=0.12)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(y_label)
        ax.grid(True, alpha=0.3)
        ax.set_title(f"{y_label} vs {xlabel.split(' (')[0]}")
        out.append(save_figure(fig, folder / name))
    return out
