"""The validation curves of docs/pretraining.md in one PNG, from the runs' log.jsonl files.

usage: python docs/pretraining/plot_validation.py RUNS_DIR OUT_PNG [UNIGRAM_MLM [UNIGRAM_CLM]]
(RUNS_DIR holds mlm-small, rtd-small and clm-small; UNIGRAM_* draw the cross-entropy of the
training unigram distribution on the validation tokens as a reference: unigram.py)
"""

from __future__ import annotations

import json
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


root, out = Path(sys.argv[1]), Path(sys.argv[2])
fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), dpi=110)
ax = axes[0]
runs = (
    ("mlm-small", "loss", "tab:blue", "MLM small (BERT)"),
    ("rtd-small", "gen_loss", "tab:red", "RTD small: generator's MLM loss"),
)
for name, key, colour, label in runs:
    if (root / name / "log.jsonl").is_file():
        _, ev = read(root / name)
        ax.plot([s for s, _ in ev], [e[key] for _, e in ev], "o-", color=colour, label=label)
if len(sys.argv) > 3:
    ax.axhline(float(sys.argv[3]), color="grey", ls=":", label="unigram frequencies")
ax.set(title="masked-token loss on held-out news", xlabel="optimizer step", ylabel="loss")
ax.legend()
ax = axes[1]
if (root / "rtd-small" / "log.jsonl").is_file():
    _, ev = read(root / "rtd-small")
    steps = [s for s, _ in ev]
    ax.plot(steps, [e["disc_loss"] for _, e in ev], "o-", color="tab:red", label="disc. BCE")
    ax.set(title="RTD discriminator (validation)", xlabel="optimizer step", ylabel="BCE")
    right = ax.twinx()
    right.plot(
        steps, [e["disc_accuracy"] for _, e in ev], "s--", color="tab:green", label="disc. accuracy"
    )
    right.plot(
        steps,
        [e["disc_replaced_recall"] for _, e in ev],
        "^--",
        color="tab:purple",
        label="recall on replaced tokens",
    )
    right.set_ylabel("accuracy / recall")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = right.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="center right")
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
