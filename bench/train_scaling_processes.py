"""1 vs 2 processes on the quickstart job: samples/s and peak memory of DDP and FSDP2.

What is measured
    `tunelab finetune` with its defaults (MiniLM on the embedded BBC News topics, strategy
    full, fp32 here so every configuration computes the same thing), limited to `--steps`
    optimizer steps, with the same global batch in every configuration: one process with
    batch 2B, and 2 processes (`--nproc 2`) with batch B each, under `--distributed ddp` and
    `--distributed fsdp`. Per configuration:

    - samples/s: training examples per second of training time (metrics.json's
      train.samples_per_second: all ranks' examples, loading and evaluation left out);
    - peak MiB (rank 0): rank 0's peak resident memory (metrics.json's peak_memory_mib; on a
      GPU, the allocator's peak): FSDP2 shards parameters, gradients and AdamW's state, so it
      holds less per process than DDP once the model is large next to the activations;
    - wall s: the whole command, launch and model loading included.

    Ratios are against the one-process run. On a 2-core machine two processes share the cores
    one process used: expect no speed-up there; the memory column is what transfers.

Run
    .venv/bin/python bench/train_scaling_processes.py                 # 1, ddp, fsdp; 20 steps
    .venv/bin/python bench/train_scaling_processes.py --steps 50 --batch 8 --configs 1,fsdp
    .venv/bin/python bench/train_scaling_processes.py --smoke         # 2 steps, 60 rows
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = ("1", "ddp", "fsdp")
"""1: one process; ddp / fsdp: two processes (--nproc 2 --distributed MODE)."""


def run(
    config: str, steps: int, batch: int, threads: int | None, out: Path, extra: list[str]
) -> dict:
    """One configuration as a `tunelab finetune` subprocess; its row of the table."""
    two = config != "1"
    cmd = [
        *(sys.executable, "-m", "tunelab.cli", "finetune"),
        *("--train.max_steps", str(steps), "--train.precision", "fp32"),
        *("--train.batch_size", str(batch if two else 2 * batch)),
        *("--output", str(out), "--name", config),
        *(["--train.threads", str(threads)] if threads else []),
        *(["--nproc", "2", "--distributed", config] if two else []),
        *extra,
    ]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"config": config, "error": " | ".join(tail)}
    train = json.loads((out / config / "metrics.json").read_text())["train"]
    return {
        "config": config,
        "processes": 2 if two else 1,
        "samples_per_second": train["samples_per_second"],
        "peak_memory_mib": train["peak_memory_mib"],
        "wall_seconds": round(wall, 1),
    }


def report(rows: list[dict]) -> None:
    base = next((r for r in rows if r["config"] == "1" and "error" not in r), None)
    print(
        f"{'config':<8}{'procs':>6}{'samples/s':>11}{'x':>7}{'peak MiB':>10}{'x':>7}{'wall s':>8}"
    )
    for r in rows:
        if "error" in r:
            print(f"{r['config']:<8} failed: {r['error']}")
            continue
        sx = f"{r['samples_per_second'] / base['samples_per_second']:.2f}" if base else "-"
        mx = f"{r['peak_memory_mib'] / base['peak_memory_mib']:.2f}" if base else "-"
        print(
            f"{r['config']:<8}{r['processes']:>6}{r['samples_per_second']:>11.2f}{sx:>7}"
            f"{r['peak_memory_mib']:>10.0f}{mx:>7}{r['wall_seconds']:>8.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS), help="of 1, ddp, fsdp")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per config")
    parser.add_argument("--batch", type=int, default=8, help="batch per process (1: twice)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process")
    parser.add_argument(
        "--smoke", action="store_true", help="2 steps, batch 2, 60 rows of 64 tokens, 1 and fsdp"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    extra = []
    if args.smoke:
        args.steps, args.batch, args.configs = 2, 2, "1,fsdp"
        extra = ["--data.limit", "60", "--data.max_length", "64"]
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown config {unknown[0]!r}: choose from {', '.join(CONFIGS)}")
    print(
        f"quickstart (tunelab finetune defaults), fp32, {args.steps} steps, global batch "
        f"{2 * args.batch}",
        flush=True,
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for config in configs:
            rows.append(run(config, args.steps, args.batch, args.threads, Path(tmp), extra))
            print(f"  {config}: done", flush=True)
    report(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
