"""Generation throughput: tunelab's decoding engine against transformers' generate().

What is measured
    Greedy decoding with the embedded SmolLM2-135M-Instruct (`smollm2-135m`, fp32), exactly
    `--new-tokens` (default 128) new tokens per sequence, at batch 1 and batch 16, by:

    - `transformers`: `model.generate(input_ids, attention_mask, do_sample=False,
      max_new_tokens=N, min_new_tokens=N)` on a left-padded batch (min_new_tokens suppresses EOS,
      so every row makes N tokens);
    - `tunelab`: `tunelab.decoding.generate(model, tok, prompts, DecodingOptions(
      max_new_tokens=N, ignore_eos=True), batch_size=B)`.

    Both get the same model object (loaded once by `tunelab.models.load.load_lm`), the same prompts
    (16 short instructions in SmolLM2's chat template, ~30-40 tokens; batch 1 uses the first)
    and the same thread count (torch's default unless --threads). tokens/s counts generated
    tokens only: batch x N / wall seconds of the whole call (prefill included). Each
    configuration runs once as a warm-up (8 tokens), then `--repeats` times, the two engines
    alternating; the table shows medians. It also shows the ratio of tokens per CPU-second of
    the process (time.process_time): on a shared, busy machine that is the steadier figure,
    with --threads 1 (with more threads CPU time also counts threads spinning while waiting).

    The batch-1 line puts the figures beside this machine's memory-bandwidth limit
    (/work/shared/BASELINES.md: ~36 GB/s read): every decode step reads all weights once, so
    the limit is bandwidth / bytes of weights (fp32 SmolLM2: 538 MB -> ~67 tokens/s).

Run
    .venv/bin/python bench/generate_throughput.py                   # 3 repeats, writes docs/
    .venv/bin/python bench/generate_throughput.py --repeats 1 --new-tokens 16   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BANDWIDTH_GBS = 36.0  # /work/shared/BASELINES.md, "memory read bandwidth"
QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in one sentence.",
    "Give me three tips for learning Python.",
    "What causes rain?",
    "Summarise the plot of Romeo and Juliet.",
    "How do vaccines work?",
    "Name five animals that live in the Arctic.",
    "Why is the sky blue?",
    "Describe a cat to someone who has never seen one.",
    "What is the difference between weather and climate?",
    "Write a short thank-you note to a teacher.",
    "How does a bicycle stay upright?",
    "List the planets of the solar system.",
    "What is a prime number?",
    "Suggest a name for a coffee shop.",
]
DOCS = Path(__file__).resolve().parents[1] / "docs"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", type=Path, default=DOCS / "bench-generate-throughput.json")
    p.add_argument("--plot", type=Path, default=DOCS / "generation" / "throughput.png")
    return p.parse_args(argv)


def run_transformers(model, tok, prompts: list[str], n: int) -> tuple[float, float]:
    import torch

    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True)
    start, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        out = model.generate(
            **enc,
            do_sample=False,
            max_new_tokens=n,
            min_new_tokens=n,
            pad_token_id=tok.pad_token_id,
        )
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert out.shape[1] - enc["input_ids"].shape[1] == n
    return seconds, cpu


def run_tunelab(model, tok, prompts: list[str], n: int) -> tuple[float, float]:
    from tunelab.decoding import DecodingOptions, generate

    opts = DecodingOptions(max_new_tokens=n, ignore_eos=True)
    start, cpu = time.perf_counter(), time.process_time()
    outs = generate(model, tok, prompts, opts, batch_size=len(prompts))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert all(len(o.token_ids) == n for o in outs)
    return seconds, cpu


ENGINES = {"transformers": run_transformers, "tunelab": run_tunelab}


def _rate(rows: list[dict], engine: str, batch: int, key: str = "tokens_per_s") -> float:
    return next(r[key] for r in rows if r["batch"] == batch and r["engine"] == engine)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r["batch"] for r in results["rows"]})
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.38
    for k, engine in enumerate(ENGINES):
        vals = [_rate(results["rows"], engine, b) for b in batches]
        xs = [i + (k - 0.5) * width for i in range(len(batches))]
        ax.bar(xs, vals, width, label=engine)
    limit = results["batch1_limit_tokens_per_s"]
    if 1 in batches:  # the memory-bandwidth limit applies to batch 1 only
        x = batches.index(1)
        ax.hlines(limit, x - 0.45, x + 0.45, color="grey", ls="--", lw=1)
        ax.text(x, limit * 1.03, f"bandwidth limit {limit:.0f}", ha="center", fontsize=8)
    top = max([limit] + [r["tokens_per_s"] for r in results["rows"]])
    ax.set_ylim(0, top * 1.18)
    ax.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
    ax.set_ylabel("generated tokens/s")
    ax.set_title(f"SmolLM2-135M fp32, greedy, {results['new_tokens']} new tokens")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch
    import transformers

    from tunelab.decoding import chat_prompt
    from tunelab.models.load import load_lm

    transformers.logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_lm("smollm2-135m")
    model, tok = loaded.model, loaded.tokenizer
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    limit = BANDWIDTH_GBS * 1e9 / weight_bytes
    prompts = [chat_prompt(tok, q) for q in QUESTIONS]
    rows = []
    for batch in args.batches:
        batch_prompts = [prompts[i % len(prompts)] for i in range(batch)]
        for fn in ENGINES.values():
            fn(model, tok, batch_prompts, 8)  # warm-up
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in ENGINES}
        tokens = batch * args.new_tokens
        for rep in range(args.repeats):
            order = list(ENGINES) if rep % 2 == 0 else list(reversed(ENGINES))
            for name in order:
                times[name].append(ENGINES[name](model, tok, batch_prompts, args.new_tokens))
                wall, cpu = times[name][-1]
                print(
                    f"  batch {batch:>2} round {rep + 1}/{args.repeats} {name:<12} "
                    f"{tokens / wall:7.1f} tokens/s  ({tokens / cpu:.1f} per CPU-second)",
                    flush=True,
                )
        for name in ENGINES:
            walls, cpus = [t[0] for t in times[name]], [t[1] for t in times[name]]
            rows.append(
                {
                    "engine": name,
                    "batch": batch,
                    "seconds": [round(t, 3) for t in walls],
                    "cpu_seconds": [round(t, 3) for t in cpus],
                    "tokens_per_s": round(tokens / statistics.median(walls), 2),
                    "tokens_per_cpu_s": round(tokens / statistics.median(cpus), 2),
                }
            )
    results = {
        "model": "smollm2-135m (fp32)",
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "weight_bytes": weight_bytes,
        "batch1_limit_tokens_per_s": round(limit, 1),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "rows": rows,
    }
    head = (
        f"{'batch':>5}  {'transformers tok/s':>18}  {'tunelab tok/s':>13}  {'ratio':>6}"
        f"  {'ratio per CPU-second':>20}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for batch in args.batches:
        hf, tl = _rate(rows, "transformers", batch), _rate(rows, "tunelab", batch)
        hf_c, tl_c = (
            _rate(rows, e, batch, "tokens_per_cpu_s") for e in ("transformers", "tunelab")
        )
        results[f"ratio_batch{batch}"] = round(tl / hf, 3)
        results[f"cpu_ratio_batch{batch}"] = round(tl_c / hf_c, 3)
        print(f"{batch:>5}  {hf:>18.1f}  {tl:>13.1f}  {tl / hf:>5.2f}x  {tl_c / hf_c:>19.2f}x")
    if 1 in args.batches:
        tl1, hf1 = _rate(rows, "tunelab", 1), _rate(rows, "transformers", 1)
        print(
            f"\nbatch-1 memory-bandwidth limit: {BANDWIDTH_GBS:.0f} GB/s / "
            f"{weight_bytes / 1e6:.0f} MB of weights = {limit:.1f} tokens/s; "
            f"tunelab reaches {100 * tl1 / limit:.0f}%, transformers {100 * hf1 / limit:.0f}%"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.plot)
    print(f"results written to {args.json} and {args.plot}")


if __name__ == "__main__":
    main()
