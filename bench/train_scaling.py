"""Memory levers of training, measured: gradient checkpointing on/off, LoRA vs QLoRA (and
full fine-tuning), then 1 vs 2 processes (bench/train_scaling_processes.py).

What is measured
    Causal-LM fine-tuning of the embedded SmolLM2-135M-Instruct (`smollm2-135m`, fp32 weights
    dequantized from its GGUF) through tunelab's own loop (`training.loop.train`), on fixed
    batches of random token ids (`--batch` x `--seq` tokens: speed and memory do not depend
    on what the tokens say). Each configuration is a strategy (`full`, `lora`, `qlora`, with
    LoRA's default targets q_proj,v_proj, r 8) with `--train.gradient_checkpointing` off or
    on, fp32, AdamW.

How
    Each configuration runs in a fresh subprocess (this script re-invokes itself with
    `--worker CONFIG`), so no run's memory or caches leak into another. Per configuration:

    - weights MiB: bytes of every parameter after the strategy (NF4 weights count their packed
      codes and scales), i.e. what the frozen base and the adapter hold;
    - kept activations MiB: bytes autograd keeps between one training forward and its
      backward (a `saved_tensors_hooks` counter; tensors inside a checkpointed block are
      recomputed, not kept): exactly what checkpointing trades for compute;
    - train peak MiB: the process's peak resident memory during training only (Linux: the
      peak is reset through /proc/self/clear_refs after loading; where that is refused, the
      lifetime peak `ru_maxrss`, loading included, is shown with a `*`);
    - samples/s: steady rate from optimizer step `--warmup-steps` to the last (torch's global
      optimizer step-post-hook), so the first steps' one-off costs are left out.

    Ratios are against the same strategy without checkpointing, and QLoRA against LoRA.
    QLoRA's one-off quantization (torchao `to_nf4`, tens of seconds for 135M on 2 cores) is
    part of loading, not of samples/s.

    On a 2-core machine every number comes from the same two cores that the other helpers'
    work also uses: rates are noisy there (repeat, compare medians) while the byte counts are
    exact. The 1-vs-2-process part cannot show a speed-up on 2 cores (two processes split
    the same cores); it shows what DDP/FSDP2 cost per process and, for FSDP2, the memory
    each process saves.

Run
    .venv/bin/python bench/train_scaling.py                    # all 6 configs, then processes
    .venv/bin/python bench/train_scaling.py --configs lora,qlora,lora+gc --steps 8
    .venv/bin/python bench/train_scaling.py --smoke --no-processes   # tiny model, < 60 s
    .venv/bin/python bench/train_scaling.py --processes-args "--steps 50 --configs 1,fsdp"
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CONFIGS = ("full", "full+gc", "lora", "lora+gc", "qlora", "qlora+gc")
"""strategy[+gc]: +gc turns gradient checkpointing on."""
MODEL = "smollm2-135m"
MIB = 2**20


def _rss_mib(field: str) -> float | None:
    """A field of /proc/self/status (VmRSS, VmHWM) in MiB, or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _load(smoke: bool):
    """(causal LM, vocab size): SmolLM2-135M, or for --smoke a tiny random Llama."""
    import torch

    if smoke:
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        config = LlamaConfig(
            vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        )  # fmt: skip
        return LlamaForCausalLM(config), config.vocab_size
    from tunelab.tasks.generative import load_base

    loaded = load_base(MODEL, "causal_lm")
    return loaded.model, loaded.model.config.vocab_size


def _param_bytes(model) -> int:
    from tunelab.strategies.qlora import tensor_bytes

    return sum(tensor_bytes(p) for p in model.parameters())


def worker(config: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train one configuration; its measurements as a dict (printed as JSON)."""
    import gc

    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from tunelab.strategies import get_strategy
    from tunelab.training import loop
    from tunelab.training.options import TrainOptions

    if args.threads:
        torch.set_num_threads(args.threads)
    strategy_name, _, lever = config.partition("+")
    t0 = time.perf_counter()
    model, vocab = _load(args.smoke)
    strategy = get_strategy(strategy_name)
    model = strategy.build(model, strategy.options(), "decoder", args.steps)
    load_s = time.perf_counter() - t0
    gc.collect()
    checkpointing = lever == "gc"
    if checkpointing:
        loop.enable_gradient_checkpointing(model)

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (args.batch * (args.steps + 1), args.seq), generator=g)
    data = [{"input_ids": row} for row in ids]

    def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
        x = torch.stack([r["input_ids"] for r in rows])  # (batch, seq)
        return {"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x.clone()}

    # what autograd keeps between one forward and its backward
    kept: list[int] = []
    model.train()
    batch = collate(data[: args.batch])
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: kept.append(t.numel() * t.element_size()) or t, lambda t: t
    ):
        loss = model(**batch).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    del loss, batch
    gc.collect()

    rss_before = _rss_mib("VmRSS")
    reset = _reset_peak()
    stamps: list[float] = []
    handle = register_optimizer_step_post_hook(lambda *a: stamps.append(time.perf_counter()))
    options = TrainOptions(
        precision="fp32", batch_size=args.batch, lr=1e-4, max_steps=args.steps, keep_best=False,
        warmup_ratio=0.0, log_every=args.steps, seed=0,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as work:
        loop.train(model, data, collate, options, Path(work), show_progress=False)
    handle.remove()
    peak = _rss_mib("VmHWM") if reset else None
    warm = min(args.warmup_steps, len(stamps) - 2)
    steady = (len(stamps) - 1 - warm) * args.batch / (stamps[-1] - stamps[warm])
    return {
        "config": config,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "weights_mib": _param_bytes(model) / MIB,
        "kept_activations_mib": sum(kept) / MIB,
        "rss_before_train_mib": rss_before,
        "train_peak_mib": peak,
        "lifetime_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "samples_per_s": steady,
        "load_and_strategy_s": load_s,
    }


def _run_worker(config: str, argv: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", config, *argv]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"config": config, "error": " | ".join(tail)}
    return json.loads(lines[-1])


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def report(rows: list[dict[str, Any]]) -> None:
    """A table, then each lever's ratios."""
    head = (
        f"{'config':<10} {'trainable':>11} {'weights MiB':>12} {'kept act. MiB':>14} "
        f"{'train peak MiB':>15} {'samples/s':>10}"
    )
    print(head)
    print("-" * len(head))
    by = {r["config"]: r for r in rows}
    for r in rows:
        if "error" in r:
            print(f"{r['config']:<10} failed: {r['error']}")
            continue
        peak = r["train_peak_mib"]
        peak_text = f"{peak:.0f}" if peak is not None else f"{r['lifetime_peak_mib']:.0f}*"
        print(
            f"{r['config']:<10} {r['trainable_params']:>11,} {r['weights_mib']:>12.1f} "
            f"{r['kept_activations_mib']:>14.1f} {peak_text:>15} {r['samples_per_s']:>10.2f}"
        )
    print()
    for strategy in ("full", "lora", "qlora"):
        off, on = by.get(strategy, {}), by.get(f"{strategy}+gc", {})
        if "samples_per_s" in off and "samples_per_s" in on:
            print(
                f"gradient checkpointing, {strategy}: kept activations "
                f"{_ratio(on['kept_activations_mib'], off['kept_activations_mib'])}, train peak "
                f"{_ratio(on['train_peak_mib'], off['train_peak_mib'])}, samples/s "
                f"{_ratio(on['samples_per_s'], off['samples_per_s'])}"
            )
    lora, qlora = by.get("lora", {}), by.get("qlora", {})
    if "samples_per_s" in lora and "samples_per_s" in qlora:
        print(
            f"qlora vs lora: weights {_ratio(qlora['weights_mib'], lora['weights_mib'])}, "
            f"train peak {_ratio(qlora['train_peak_mib'], lora['train_peak_mib'])}, samples/s "
            f"{_ratio(qlora['samples_per_s'], lora['samples_per_s'])}"
        )
    full = by.get("full", {})
    if "samples_per_s" in full and "samples_per_s" in lora:
        print(
            f"lora vs full: train peak {_ratio(lora['train_peak_mib'], full['train_peak_mib'])}"
            f", samples/s {_ratio(lora['samples_per_s'], full['samples_per_s'])}"
        )


def processes(passthrough: list[str]) -> None:
    """The 1-vs-2-process part (DDP, FSDP2), another script's: run it if it is there."""
    script = Path(__file__).with_name("train_scaling_processes.py")
    if not script.is_file():
        print(f"1 vs 2 processes: {script.name} is missing (not run)")
        return
    print(f"\n1 vs 2 processes ({script.name}):", flush=True)
    subprocess.run([sys.executable, str(script), *passthrough], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs", default=None, help=f"comma-separated, of {', '.join(CONFIGS)} (all)"
    )
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per config")
    parser.add_argument("--warmup-steps", type=int, default=2, help="left out of samples/s")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256, help="tokens per example")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny random model, few steps (processes: --smoke)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--no-processes", action="store_true", help="skip the 1-vs-2 part")
    parser.add_argument(
        "--processes-args", default="", help="arguments for train_scaling_processes.py"
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.warmup_steps, args.seq = min(args.steps, 3), 1, min(args.seq, 64)
        args.configs = args.configs or "lora,qlora+gc"
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return

    configs = [c.strip() for c in (args.configs or ",".join(CONFIGS)).split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown config {unknown[0]!r}: choose from {', '.join(CONFIGS)}")
    argv = [
        *("--steps", str(args.steps), "--warmup-steps", str(args.warmup_steps)),
        *("--batch", str(args.batch), "--seq", str(args.seq)),
        *(["--threads", str(args.threads)] if args.threads else []),
        *(["--smoke"] if args.smoke else []),
    ]
    model = "tiny random Llama (--smoke)" if args.smoke else MODEL
    print(
        f"{model}, causal_lm, batch {args.batch} x {args.seq} tokens, {args.steps} steps, fp32; "
        f"{os.cpu_count()} CPU cores (rates share them with whatever else runs)",
        flush=True,
    )
    rows = []
    for config in configs:
        rows.append(_run_worker(config, argv))
        print(f"  {config}: done", flush=True)
    print()
    report(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if not args.no_processes:
        passthrough = args.processes_args.split()
        if args.smoke and "--smoke" not in passthrough:
            passthrough.append("--smoke")
        processes(passthrough)


if __name__ == "__main__":
    main()
