"""Training throughput: tunelab's loop against transformers' Trainer, same job, same machine.

What is measured
    Full fine-tuning of the embedded all-MiniLM-L6-v2 (`minilm`) as a 5-class classifier on the
    training split of the embedded BBC News (`bbc-news`, split by
    `tasks.classification.load_splits` with
    tunelab's default config), twice:

    - `tunelab`: `tunelab.training.loop.train(...)` with no validation and no progress bar;
    - `trainer`: `transformers.Trainer.train()` with the equivalent TrainingArguments.

    Both paths get the same model (loaded by `tunelab.models.load_classifier`, which is
    `AutoModelForSequenceClassification.from_pretrained` plus the label config, after the same
    seed), the same tokenized examples (`encode_examples`, dynamic padding by
    `DataCollatorWithPadding`), batch size, max_length, number of optimizer steps, precision,
    and AdamW (lr, betas, eps, weight decay 0.01 off biases/norms, clipping at 1.0) with a
    linear schedule and no warmup. The order of the examples differs (each path shuffles its
    own way); at max_length 256 almost every BBC article is truncated, so nearly every batch
    is padded to the full length either way (the mean padded length is reported).

    By default both keep the checkpoint's attention dropout (0.1), so the comparison is
    same-model. tunelab's own default turns attention dropout off (a non-zero dropout sends
    torch's scaled_dot_product_attention down its slow math path on CPU); `--tunelab-defaults`
    adds a third row, "tunelab (own defaults)", that runs tunelab with attention dropout 0.

How
    Each path runs in its own subprocess (this script re-invokes itself with `--worker NAME`),
    so peak RSS (`getrusage(RUSAGE_SELF).ru_maxrss`: loading, tokenizing and training) is that
    path's own and no path warms caches for another. Steps are timed identically for both
    paths with two hooks and nothing else: a forward-pre-hook on the model (one forward per
    optimizer step, grad_accum 1; it also records the batch shape) and torch's global
    optimizer step-post-hook (`register_optimizer_step_post_hook`). Step i spans from the end
    of optimizer step i-1 to the end of optimizer step i.

    - samples/s (steady): samples of steps `--warmup-steps`..end divided by the time from the
      end of step `--warmup-steps` - 1 to the end of the last optimizer step. Both paths run
      the same total number of steps; the first ones are only left out of the rate.
    - total seconds: wall time of the whole `train(...)` call, or of `Trainer(...)` plus
      `trainer.train()` (each includes creating its Accelerator and optimizer; tunelab's also
      writes its final resumable checkpoint, which is outside the steady window).

    The parent runs the workers (trainer first, then tunelab; with `--repeats`, the order
    alternates each round), prints a table (medians over repeats), the tunelab/trainer ratios
    of samples/s (higher is better) and of peak RSS (lower is better), and tunelab's rate
    beside this machine's compute limit from /work/shared/BASELINES.md (~190 GFLOP/s fp32,
    ~425 GFLOP/s bf16 matmul), using 6 x Linear params x tokens + the attention matmuls as
    the FLOPs of one training sample.

Run
    make bench                                   # = .venv/bin/python bench/train_throughput.py
    .venv/bin/python bench/train_throughput.py --repeats 3 --tunelab-defaults --json out.json
    .venv/bin/python bench/train_throughput.py --steps 4 --warmup-steps 1   # smoke test

Defaults match BASELINES.md: 60 steps, batch 16, max_length 256, fp32, torch's own threads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODEL = "minilm"
DATA = "bbc-news"
ROWS = {
    "trainer": "transformers Trainer",
    "tunelab": "tunelab train()",
    "tunelab-own": "tunelab (own defaults)",
}
# /work/shared/BASELINES.md, "The machine's limits (roofline)": large-matmul throughput.
PEAK_GFLOPS = {"fp32": 190.0, "bf16": 425.0}
WORKER_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Fine-tuning throughput and peak RSS: tunelab's loop vs transformers Trainer "
        "(MiniLM on BBC News, each path in its own subprocess)."
    )
    p.add_argument("--steps", type=int, default=60, help="optimizer steps per run (default 60)")
    p.add_argument(
        "--warmup-steps",
        type=int,
        default=5,
        help="first optimizer steps left out of the steady samples/s (default 5)",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4)")
    p.add_argument(
        "--attention-dropout",
        type=float,
        default=None,
        help="attention dropout for the trainer and tunelab rows (default: the checkpoint's 0.1)",
    )
    p.add_argument(
        "--tunelab-defaults",
        action="store_true",
        help='add a row "tunelab (own defaults)": tunelab with attention dropout 0',
    )
    p.add_argument("--repeats", type=int, default=1, help="rounds of runs (order alternates)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--worker", choices=tuple(ROWS), default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 1 or not 0 <= args.warmup_steps < args.steps:
        p.error("need --steps >= 1 and 0 <= --warmup-steps < --steps")
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    return args


# ----------------------------------------------------------------------------- worker side


class StepClock:
    """Timestamps of every forward call and every optimizer step, the same for any loop."""

    def __init__(self, model) -> None:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.forwards: list[float] = []
        self.samples: list[int] = []
        self.tokens: list[int] = []
        self.step_ends: list[float] = []
        self.optimizer: str | None = None
        self._handles = [
            model.register_forward_pre_hook(self._on_forward, with_kwargs=True),
            register_optimizer_step_post_hook(self._on_step),
        ]

    def _on_forward(self, module, args, kwargs) -> None:
        self.forwards.append(time.perf_counter())
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        self.samples.append(int(ids.shape[0]))
        self.tokens.append(int(ids.numel()))

    def _on_step(self, optimizer, args, kwargs) -> None:
        self.step_ends.append(time.perf_counter())
        if self.optimizer is None:
            d = optimizer.defaults
            impl = "fused" if d.get("fused") else "foreach" if d.get("foreach") else "default"
            self.optimizer = f"{type(optimizer).__module__}.{type(optimizer).__name__} ({impl})"

    def close(self) -> None:
        for h in self._handles:
            h.remove()

    def steady(self, warmup: int) -> tuple[int, float]:
        """(samples, seconds) of optimizer steps warmup..end."""
        steps = len(self.step_ends)
        if steps <= warmup or len(self.samples) < steps:
            raise RuntimeError(
                f"saw {steps} optimizer steps and {len(self.forwards)} forwards: "
                f"cannot skip {warmup} warmup steps"
            )
        start = self.step_ends[warmup - 1] if warmup else self.forwards[0]
        return sum(self.samples[warmup:steps]), self.step_ends[-1] - start


def train_flops_per_sample(model, seq_len: float) -> float:
    """FLOPs of one training sample: 6 x Linear weights x tokens + the attention matmuls."""
    from torch import nn

    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    cfg = model.config
    # forward QK^T and AV: 4 T^2 d per layer; backward twice that
    attention = 12 * cfg.num_hidden_layers * seq_len**2 * cfg.hidden_size
    return 6 * linear * seq_len + attention


def run_tunelab(model, data, collate, args: argparse.Namespace, workdir: Path) -> int:
    from tunelab import api
    from tunelab.training.loop import train

    cfg = api.build_config(
        overrides={
            "train.max_steps": args.steps,
            "train.batch_size": args.batch_size,
            "train.grad_accum": 1,
            "train.lr": args.lr,
            "train.weight_decay": 0.01,
            "train.schedule": "linear",
            "train.warmup_ratio": 0.0,
            "train.max_grad_norm": 1.0,
            "train.precision": args.precision,
            "train.seed": args.seed,
            "train.threads": args.threads,
        }
    ).train
    result = train(model, data, collate, cfg, workdir, evaluate=None, show_progress=False)
    return result.steps


def run_trainer(model, data, collate, args: argparse.Namespace, workdir: Path) -> int:
    import torch
    from transformers import PrinterCallback, Trainer, TrainingArguments

    cuda = torch.cuda.is_available()
    targs = TrainingArguments(
        output_dir=str(workdir),
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        max_steps=args.steps,
        learning_rate=args.lr,
        weight_decay=0.01,
        lr_scheduler_type="linear",
        warmup_steps=0,
        max_grad_norm=1.0,
        bf16=args.precision == "bf16",
        use_cpu=not cuda,
        seed=args.seed,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_steps=args.steps + 1,
        dataloader_num_workers=0,
        dataloader_pin_memory=cuda,
        remove_unused_columns=False,  # the examples hold only input_ids/attention_mask/labels
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=targs, train_dataset=data, data_collator=collate)
    trainer.remove_callback(PrinterCallback)  # it prints the final log dict to stdout
    return trainer.train().global_step


def worker(args: argparse.Namespace) -> None:
    for key, value in WORKER_ENV.items():
        os.environ.setdefault(key, value)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    from tunelab import api
    from tunelab.data.split import check_labels
    from tunelab.models.load import load_classifier
    from tunelab.tasks.classification import encode_examples, load_splits, make_collate

    name = args.worker
    cfg = api.build_config(
        overrides={
            "data.source": DATA,
            "data.max_length": args.max_length,
            "train.seed": args.seed,
        }
    )
    splits = load_splits(cfg.data, cfg.train.seed, quiet=True)
    labels = check_labels(splits["train"])
    dropout = 0.0 if name == "tunelab-own" else args.attention_dropout
    transformers.set_seed(args.seed)
    loaded = load_classifier(MODEL, labels, attention_dropout=dropout)
    model, tok = loaded.model, loaded.tokenizer
    data = encode_examples(splits["train"], tok, labels, args.max_length)
    collate = make_collate(tok)

    clock = StepClock(model)
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        t0 = time.perf_counter()
        if name == "trainer":
            reported = run_trainer(model, data, collate, args, Path(tmp))
        else:
            reported = run_tunelab(model, data, collate, args, Path(tmp))
        total = time.perf_counter() - t0
    clock.close()

    samples, seconds = clock.steady(args.warmup_steps)
    steps = len(clock.step_ends)
    mean_len = sum(clock.tokens) / max(1, sum(clock.samples))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    record = {
        "path": name,
        "label": ROWS[name],
        "samples_per_s": samples / seconds,
        "tokens_per_s": mean_len * samples / seconds,
        "steady_steps": steps - args.warmup_steps,
        "steady_seconds": seconds,
        "total_seconds": total,
        "total_samples_per_s": sum(clock.samples) / total,
        "first_steps_seconds": (
            clock.step_ends[args.warmup_steps - 1] - t0 if args.warmup_steps else 0.0
        ),
        "peak_rss_mib": peak_kib / 1024,
        "steps": steps,
        "forwards": len(clock.forwards),
        "reported_steps": reported,
        "samples": sum(clock.samples),
        "mean_padded_length": mean_len,
        "train_gflop_per_sample": train_flops_per_sample(model, mean_len) / 1e9,
        "attention_dropout": model.config.attention_probs_dropout_prob,
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "optimizer": clock.optimizer,
        "torch_threads": torch.get_num_threads(),
        "device": str(next(model.parameters()).device),
        "train_examples": len(data),
    }
    print(json.dumps(record), flush=True)


# ----------------------------------------------------------------------------- parent side


def worker_command(name: str, args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name]
    cmd += ["--steps", str(args.steps), "--warmup-steps", str(args.warmup_steps)]
    cmd += ["--batch-size", str(args.batch_size), "--max-length", str(args.max_length)]
    cmd += ["--precision", args.precision, "--lr", repr(args.lr), "--seed", str(args.seed)]
    if args.attention_dropout is not None:
        cmd += ["--attention-dropout", repr(args.attention_dropout)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    return cmd


def run_worker(name: str, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, **WORKER_ENV}
    proc = subprocess.run(worker_command(name, args), env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise SystemExit(f"worker {name} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(lines[-1])


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def spread(runs: list[dict], key: str, fmt: str) -> str:
    mid = format(median(runs, key), fmt)
    if len(runs) == 1:
        return mid
    lo, hi = min(r[key] for r in runs), max(r[key] for r in runs)
    return f"{mid} ({format(lo, fmt)}-{format(hi, fmt)})"


def environment() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    env = {"python": platform.python_version(), "cpus": os.cpu_count()}
    for pkg in ("torch", "transformers", "accelerate", "tunelab"):
        try:
            env[pkg] = version(pkg)
        except PackageNotFoundError:
            env[pkg] = None
    return env


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return

    rows = ["trainer", "tunelab"] + (["tunelab-own"] if args.tunelab_defaults else [])
    runs: dict[str, list[dict]] = {r: [] for r in rows}
    env = environment()
    dropout = "checkpoint's" if args.attention_dropout is None else args.attention_dropout
    print(
        f"{MODEL} on {DATA}: {args.steps} steps x batch {args.batch_size}, max_length "
        f"{args.max_length}, {args.precision}, attention dropout {dropout}, "
        f"{args.warmup_steps} warmup steps not timed | torch {env['torch']}, "
        f"transformers {env['transformers']}, {env['cpus']} CPUs",
        flush=True,
    )
    for rep in range(args.repeats):
        for name in rows if rep % 2 == 0 else rows[::-1]:
            print(f"  round {rep + 1}/{args.repeats}: {ROWS[name]} ...", end=" ", flush=True)
            rec = run_worker(name, args)
            runs[name].append(rec)
            print(
                f"{rec['samples_per_s']:.2f} samples/s, {rec['peak_rss_mib']:.0f} MiB", flush=True
            )

    head = (
        f"{'path':<24} {'samples/s (steady)':>20} {'samples/s (whole)':>18} "
        f"{'total s':>8} {'peak RSS MiB':>14} {'threads':>7} {'attn drop':>9}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for name in rows:
        rs = runs[name]
        print(
            f"{ROWS[name]:<24} {spread(rs, 'samples_per_s', '.2f'):>20} "
            f"{spread(rs, 'total_samples_per_s', '.2f'):>18} {median(rs, 'total_seconds'):>8.1f} "
            f"{spread(rs, 'peak_rss_mib', '.0f'):>14} {rs[0]['torch_threads']:>7} "
            f"{rs[0]['attention_dropout']:>9g}"
        )
    for name in rows:
        r = runs[name][0]
        print(
            f"  {ROWS[name]}: mean padded length {r['mean_padded_length']:.1f} tokens, "
            f"{r['steps']} optimizer steps / {r['forwards']} forwards, {r['optimizer']}, "
            f"attention {r['attn_implementation']}"
        )

    base = runs["trainer"]
    ratios: dict[str, dict[str, float]] = {}
    for name in rows[1:]:
        ratios[name] = {
            "samples_per_s": median(runs[name], "samples_per_s") / median(base, "samples_per_s"),
            "peak_rss": median(runs[name], "peak_rss_mib") / median(base, "peak_rss_mib"),
        }
        print(
            f"{ROWS[name]} / Trainer: samples/s x{ratios[name]['samples_per_s']:.2f} "
            f"(higher is better), peak RSS x{ratios[name]['peak_rss']:.2f} (lower is better)"
        )

    limit = None
    tl = runs["tunelab"]
    if tl[0]["device"] == "cpu":
        gflop = median(tl, "train_gflop_per_sample")
        peak = PEAK_GFLOPS[args.precision]
        limit = {"gflops": peak, "gflop_per_sample": gflop, "samples_per_s": peak / gflop}
        for name in rows[1:]:
            rate = median(runs[name], "samples_per_s")
            print(
                f"{ROWS[name]}: {rate:.2f} samples/s = {100 * rate / limit['samples_per_s']:.0f}% "
                f"of this machine's {args.precision} limit ~{limit['samples_per_s']:.1f} samples/s "
                f"(BASELINES.md: ~{peak:.0f} GFLOP/s matmul; ~{gflop:.1f} GFLOP per training "
                f"sample at {tl[0]['mean_padded_length']:.0f} tokens)"
            )

    if args.json:
        settings = {k: v for k, v in vars(args).items() if k not in ("json", "worker")}
        summary = {
            name: {
                k: median(runs[name], k)
                for k in ("samples_per_s", "total_samples_per_s", "total_seconds", "peak_rss_mib")
            }
            for name in rows
        }
        out = {
            "settings": {**settings, "model": MODEL, "data": DATA},
            "environment": env,
            "summary": summary,
            "ratios_vs_trainer": ratios,
            "limit": limit,
            "runs": runs,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
