"""Before/after of the SmolLM2 dialog LoRA (docs/dialog-smollm2.md): train, then answer the
held-out test questions with the base model and the tuned one (greedy decoding).

    nice -n 10 .venv/bin/python docs/dialog-smollm2/demo.py [--run reports/dialog-smollm2/NAME]

Writes docs/dialog-smollm2/{answers.jsonl, answers.md, metrics.json, log.jsonl, curves.png}.
With --run an existing run folder is reused instead of training again.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from tunelab import api
from tunelab.decoding import DecodingOptions, generate
from tunelab.models.load import load_lm
from tunelab.runs.open import open_lm
from tunelab.tasks.causal_lm import prompt_text
from tunelab.tasks.generative import load_pair_splits

HERE = Path(__file__).parent
CONFIG = HERE.parent.parent / "configs" / "dialog-smollm2.yaml"
QUESTIONS = 12


def answer(model, tok, pairs, max_new_tokens: int = 32) -> list[str]:
    ids = [tok(prompt_text(p, tok), add_special_tokens=False)["input_ids"] for p in pairs]
    outs = generate(model, tok, ids, DecodingOptions(max_new_tokens=max_new_tokens), batch_size=12)
    return [o.text.strip() for o in outs]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or "(nothing)"


def markdown_table(rows: list[dict]) -> str:
    """The before/after answers as a Markdown table (one row per held-out question)."""
    lines = [
        "| question | a reference answer | SmolLM2 before | after the LoRA |",
        "|---|---|---|---|",
    ]
    for r in rows:
        cells = [r["question"], r["reference"][0], r["before"], r["after"]]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def plot(log: Path, metrics: dict, out: Path) -> None:
    """Training loss, validation loss by step, and the base model's validation loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r["eval"]["loss"]) for r in records if "eval" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    label = "training loss (one batch every 10 steps)"
    ax.plot(*zip(*train, strict=True), color="tab:blue", alpha=0.6, label=label)
    base = metrics["base"]["validation"]["loss"]
    evals = [(0, base), *evals]  # step 0: the model before tuning
    ax.plot(*zip(*evals, strict=True), "o-", color="tab:orange", label="validation loss")
    ax.axhline(base, ls="--", color="tab:gray", label=f"validation loss before tuning ({base:.2f})")
    ax.set_xlabel("optimizer step (8 pairs each)")
    ax.set_ylabel("loss per answer token")
    ax.set_title("SmolLM2-135M-Instruct + LoRA on chatterbot Q/A pairs")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", help="reuse this finished run folder")
    args = ap.parse_args()
    cfg = api.build_config(CONFIG)
    if args.run:
        run = Path(args.run)
    else:
        t0 = time.time()
        run = api.finetune(cfg).run_dir
        print(f"trained in {time.time() - t0:.0f} s: {run}")
    test = load_pair_splits(cfg.data, cfg.train.seed, quiet=True)["test"]
    held, seen = [], set()
    for p in test:  # one row per question (a question may have several reference answers)
        if p["prompt"] not in seen:
            seen.add(p["prompt"])
            held.append(p)
    held = held[:QUESTIONS]
    refs = {q["prompt"]: [p["response"] for p in test if p["prompt"] == q["prompt"]] for q in held}

    base = load_lm("smollm2-135m")
    before = answer(base.model, base.tokenizer, held)
    del base
    tuned, _ = open_lm(str(run))
    model = tuned.model
    if hasattr(model, "merge_and_unload"):  # the same weights, as one plain model
        model = model.merge_and_unload()
    after = answer(model.eval(), tuned.tokenizer, held)
    rows = [
        {"question": q["prompt"], "reference": refs[q["prompt"]], "before": b, "after": a}
        for q, b, a in zip(held, before, after, strict=True)
    ]
    (HERE / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    shutil.copy(run / "metrics.json", HERE / "metrics.json")
    plot(run / "log.jsonl", json.loads((run / "metrics.json").read_text()), HERE / "curves.png")
    shutil.copy(run / "log.jsonl", HERE / "log.jsonl")
    (HERE / "answers.md").write_text(markdown_table(rows))
    print(json.dumps(json.loads((run / "metrics.json").read_text()), indent=1))
    for r in rows:
        print(f"Q: {r['question']}\n  before: {r['before']}\n  after:  {r['after']}")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
