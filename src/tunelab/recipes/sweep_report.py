"""A sweep's report: report.json, report.md (best config, a table of trials) and sweep.png
(the validation metric against each parameter), written from the Optuna study."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.config.sweep import Param
from tunelab.runs.workdir import write_json, write_text


@dataclass
class SweepResult:
    folder: Path
    """OUTPUT/SWEEP: study.db, report.md/json, sweep.png and one run folder per trial."""
    metric: str
    direction: str
    """maximize or minimize."""
    trials: list[dict[str, Any]]
    """One row per trial: trial, state, value, params, run (its folder name, when finished)."""
    best: dict[str, Any] | None
    """The best finished trial's row (None before any finished)."""


def _rows(study) -> list[dict[str, Any]]:
    """report.json's trials: a run folder only for a finished trial (pruned ones are removed)."""
    return [
        {
            "trial": t.number,
            "state": t.state.name.lower(),
            "value": t.value,
            "params": dict(t.params),
            "last_step": t.last_step,
            "run": t.user_attrs.get("run") if t.state.name == "COMPLETE" else None,
        }
        for t in study.get_trials(deepcopy=False)
    ]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def write_report(study, plan, metric: str) -> SweepResult:
    """report.json, report.md and sweep.png in the sweep folder, from the study (`plan`: the
    sweep's folder, name, params and trials asked)."""
    direction = study.direction.name.lower()
    rows = _rows(study)
    complete = [r for r in rows if r["state"] == "complete"]
    pick = min if direction == "minimize" else max
    best = pick(complete, key=lambda r: r["value"]) if complete else None
    keys = [p.key for p in plan.params]
    report = {
        "study": plan.name,
        "metric": metric,
        "direction": direction,
        "space": [p.spec() for p in plan.params],
        "trials_asked": plan.trials,
        "best": best,
        "trials": rows,
    }
    write_json(plan.folder / "report.json", report)
    lines = [f"# Sweep {plan.name}", ""]
    lines += [
        f"{len(rows)} trials ({len(complete)} complete, "
        f"{sum(r['state'] == 'pruned' for r in rows)} pruned) searching "
        + ", ".join(f"`{s}`" for s in report["space"])
        + f" for the {'lowest' if direction == 'minimize' else 'highest'} validation {metric}.",
        "",
    ]
    if best is not None:
        flags = " ".join(f"--{k} {_fmt(v)}" for k, v in best["params"].items())
        lines += [
            f"**Best: trial {best['trial']}, validation {metric} {best['value']:.4f}**, "
            f"run folder `{best['run']}`; its settings as flags: `{flags}`",
            "",
        ]
    lines += [
        "| trial | state | " + " | ".join(keys) + f" | {metric} | run |",
        "|---|---|" + "---|" * len(keys) + "---|---|",
    ]
    for r in rows:
        cells = [str(r["trial"]), r["state"], *(_fmt(r["params"].get(k)) for k in keys)]
        cells += ["" if r["value"] is None else f"{r['value']:.4f}", r["run"] or ""]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "![metric against each parameter](sweep.png)", ""]
    write_text(plan.folder / "report.md", "\n".join(lines))
    plot_sweep(rows, plan.params, metric, best, plan.folder / "sweep.png")
    return SweepResult(plan.folder, metric, direction, rows, best)


def plot_sweep(rows, params: list[Param], metric: str, best, out: Path) -> Path:
    """One panel per parameter: the validation metric of each trial against its value (log x
    for a log range, one slot per choice), pruned trials hollow, the best one a star."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    from tunelab.evaluation.plots import save_figure

    cols = min(3, len(params))
    nrows = -(-len(params) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), dpi=110)
    axes = list(getattr(axes, "flat", [axes]))
    for ax, p in zip(axes, params, strict=False):
        slot = {c: i for i, c in enumerate(p.choices)}

        def x_of(v, p=p, slot=slot):
            return slot[v] if p.kind == "choice" else v

        for state, style in (("complete", {"color": "tab:blue"}), ("pruned", {"marker": "x"})):
            pts = [
                (x_of(r["params"][p.key]), r["value"])
                for r in rows
                if r["state"] == state and p.key in r["params"] and r["value"] is not None
            ]
            if pts:
                ax.scatter(*zip(*pts, strict=True), label=state, alpha=0.8, **style)
        if best is not None and p.key in best["params"]:
            ax.scatter(
                [x_of(best["params"][p.key])],
                [best["value"]],
                marker="*",
                s=220,
                color="tab:red",
                label="best",
                zorder=3,
            )
        if p.kind == "choice":
            ax.set_xticks(range(len(p.choices)), [str(c) for c in p.choices])
            ax.set_xlim(-0.5, len(p.choices) - 0.5)
        else:  # the whole range searched, so one sees where the trials went
            if p.log:
                ax.set_xscale("log")
                pad = (p.high / p.low) ** 0.05
                ax.set_xlim(p.low / pad, p.high * pad)
            else:
                pad = (p.high - p.low) * 0.05
                ax.set_xlim(p.low - pad, p.high + pad)
        ax.set_xlabel(p.key)
        ax.set_ylabel(f"validation {metric}")
        ax.grid(alpha=0.3)
    for ax in axes[len(params) :]:
        ax.set_visible(False)
    axes[0].legend(loc="best", fontsize="small")
    fig.suptitle(f"{metric} by parameter ({len(rows)} trials)")
    return save_figure(fig, out)
