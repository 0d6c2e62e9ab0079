"""The validation curves of docs/pretraining.md in one PNG, from the runs' log.jsonl files.

usage: python docs/pretraining/plot_validation.py RUNS_DIR OUT_PNG [UNIGRAM_MLM [UNIGRAM_CLM]]
(RUNS_DIR holds the runs of experiment.sh and experiment-followup.sh; UNIGRAM_* draw the
cross-entropy of the training unigram distribution on the validation tokens as a reference:
unigram.py)
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(run: Path) -> tuple[list, list]:
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    evals = [(r["step"], r["eval"]) for r in rows if "eval" in r]
    return train, evals


def curve(ax, run: Path, key: str, style: str, colour: str, label: str) -> list:
    if not (run / "log.jsonl").is_file():
        return []
    _, ev = read(run)
    ax.plot([s for s, _ in ev], [e[key] for _, e in ev], style, color=colour, label=label)
    return ev


root, out = Path(sys.argv[1]), Path(sys.argv[2])
fig, axes = plt.subplots(1, 3, figsize=(16, 4.4), dpi=110)
ax = axes[0]
curve(ax, root / "mlm-small", "loss", "o-", "tab:blue", "MLM (BERT small)")
curve(ax, root / "mlm-small-dropout0.1", "loss", "x--", "tab:cyan", "MLM, dropout 0.1")
curve(ax, root / "mlm30-small", "loss", "^-", "tab:green", "MLM, 30% masked (harder task)")
curve(ax, root / "rtd-small", "gen_loss", "o-", "tab:red", "RTD lr 1e-3: generator")
curve(ax, root / "rtd-small-lr5e-4", "gen_loss", "s-", "tab:orange", "RTD lr 5e-4: generator")
if len(sys.argv) > 3:
    ax.axhline(float(sys.argv[3]), color="grey", ls=":", label="unigram frequencies")
ax.set(title="masked-token loss on held-out news", xlabel="optimizer step", ylabel="loss")
ax.legend()
ax = axes[1]
for name, style, colour, label in (
    ("rtd-small", "o-", "tab:red", "lr 1e-3"),
    ("rtd-small-lr5e-4", "s-", "tab:orange", "lr 5e-4"),
):
    ev = curve(ax, root / name, "disc_loss", style, colour, label)
    if ev:  # the entropy of the replaced fraction: what predicting the base rate scores
        r = ev[-1][1]["replaced_fraction"]
        base = -(r * math.log(r) + (1 - r) * math.log(1 - r))
        ax.axhline(base, color=colour, ls=":", label=f"{label}: base rate ({r:.1%} replaced)")
ax.set(title="RTD discriminator BCE (validation)", xlabel="optimizer step", ylabel="BCE")
ax.legend()
ax = axes[2]
if (root / "clm-small" / "log.jsonl").is_file():
    tr, ev = read(root / "clm-small")
    ax.plot(*zip(*tr, strict=True), color="tab:blue", alpha=0.5, label="training loss")
    ax.plot(
        [s for s, _ in ev],
        [e["loss"] for _, e in ev],
        "o-",
        color="tab:orange",
        label="validation loss",
    )
    if len(sys.argv) > 4:
        ax.axhline(float(sys.argv[4]), color="grey", ls=":", label="unigram frequencies")
    ax.set(title="CLM decoder (Llama-style small)", xlabel="optimizer step", ylabel="loss")
    ax.legend()
for a in axes:
    a.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(out)
print(f"wrote {out}")
