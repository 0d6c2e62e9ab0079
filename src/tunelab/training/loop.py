"""The one training loop every strategy and task goes through.

accelerate places the model and runs mixed precision (bf16 autocast where the hardware has
it); the loop adds what a fine-tuning run needs around it: gradient accumulation and clipping,
a schedule, evaluation every N steps or each epoch, early stopping, keep-best, checkpoints
that `--resume` continues from (mid-epoch, skipping the batches already seen), a progress bar
and a JSONL metrics log.

Under torchrun (`--nproc N`) the same loop runs on every rank through `training/distributed.py`
(the process group) and `training/sharding.py` (DDP or FSDP2 instead of accelerate): each
rank trains its slice of every global batch (`--train.batch_size` is per process), logged
losses are averaged over ranks, and only rank 0 draws the bar, writes log.jsonl and
best.safetensors and calls the trackers.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from tunelab.errors import TunelabError
from tunelab.evaluation.metrics import lower_is_better, metric_value
from tunelab.training import distributed, sharding
from tunelab.training.checkpoint import (
    load_checkpoint,
    load_checkpoint_ranks,
    load_weights,
    save_checkpoint,
    save_checkpoint_ranks,
    save_tensors,
    save_weights,
)
from tunelab.training.optim import build_optimizer, build_scheduler
from tunelab.training.options import TrainOptions
from tunelab.training.state import LoopState
from tunelab.training.tracking import Tracker

EvalFn = Callable[[nn.Module], dict[str, Any]]
StepHook = Callable[[nn.Module, int, int], None]
"""(model, step, epoch), called before each optimizer step (see Strategy.before_step)."""
AfterStepHook = Callable[[nn.Module, int], None]
"""(model, step), called after optimizer.step() before the gradients are cleared."""
GroupsFn = Callable[[nn.Module, float, float], list[dict]]
"""(model, lr, weight_decay) -> optimizer parameter groups."""


@dataclass
class LoopResult:
    """What a finished training run reports."""

    steps: int
    epochs: float
    train_seconds: float
    samples_per_second: float
    best_step: int | None = None
    best_metric: float | None = None
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    model: nn.Module | None = None
    """The trained model as a plain module (the best evaluation's weights with keep_best): the
    one passed in, or under FSDP a copy holding the gathered weights; None on ranks other than
    0 of a many-process run, which have nothing left to do."""


def native_bf16() -> bool:
    """Whether the device the loop trains on (the GPU when there is one, else the CPU) runs
    bf16 natively (CPU: oneDNN's check for AVX-512 BF16 / AMX)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(name: str) -> str:
    """accelerate's mixed-precision name ('bf16', 'fp16' or 'no') for fp32 / bf16 / fp16 /
    auto."""
    if name not in ("auto", "fp32", "bf16", "fp16"):
        raise TunelabError(f"unknown precision {name!r}: choose auto, fp32, bf16 or fp16")
    if name == "fp32":
        return "no"
    if name == "fp16":
        return "fp16"
    supported = native_bf16()
    if name == "bf16" and not supported:
        raise TunelabError("this machine has no native bf16: use --train.precision fp32 or auto")
    return "bf16" if supported else "no"


class JsonlLog:
    """Append-only metrics log, one JSON object per line, flushed as it goes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")


def plan_steps(n_examples: int, cfg: TrainOptions, world: int | None = None) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps) of a run over `n_examples` on `world`
    processes (default: torchrun's WORLD_SIZE, 1 outside it), each taking batch_size."""
    world = distributed.world_size() if world is None else world
    batches_per_epoch = math.ceil(n_examples / (cfg.batch_size * world))
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / cfg.grad_accum))
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch), cfg.min_steps or 0)
    return steps_per_epoch, total


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Turn on transformers' activation checkpointing in `model` or the pretrained model it
    wraps (a peft model, a task head); non-reentrant, so frozen inputs (LoRA over a frozen
    embedding) still get gradients.

    Raises:
        TunelabError: Nothing in the model supports it.
    """
    for module in model.modules():
        if getattr(module, "supports_gradient_checkpointing", False):
            module.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
            return
    raise TunelabError(
        f"{type(model).__name__} does not support gradient checkpointing: drop "
        "--train.gradient_checkpointing"
    )


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def _optimizer(model: nn.Module, cfg: TrainOptions, param_groups: GroupsFn | None):
    groups = param_groups(model, cfg.lr, cfg.weight_decay) if param_groups else None
    return build_optimizer(
        model, cfg.lr, cfg.weight_decay, groups=groups, name=cfg.optimizer, momentum=cfg.momentum
    )


def _accelerate_engine(
    model: nn.Module, cfg: TrainOptions, mixed: str, param_groups: GroupsFn | None
) -> sharding.Engine:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    # accelerate keeps its mixed-precision choice in a process-wide singleton; a second run in
    # the same process (the Python API, `compare`) may pick another precision, so start afresh
    # (the process group, PartialState, is kept)
    AcceleratorState._reset_state()
    on_gpu = torch.cuda.is_available()
    # accelerate runs fp16 (autocast + GradScaler) on GPUs only; on a CPU the loop does the
    # same with torch.autocast("cpu", float16) and torch.amp.GradScaler("cpu")
    cpu_fp16 = mixed == "fp16" and not on_gpu
    accel = Accelerator(mixed_precision="no" if cpu_fp16 else mixed, cpu=not on_gpu)
    scaler = torch.amp.GradScaler("cpu") if cpu_fp16 else None
    optimizer = _optimizer(model, cfg, param_groups)
    model, optimizer = accel.prepare(model, optimizer)

    def backward(loss: torch.Tensor) -> None:
        scaler.scale(loss).backward() if scaler is not None else accel.backward(loss)

    def clip(max_norm: float):
        if scaler is not None:
            scaler.unscale_(optimizer)
        return accel.clip_grad_norm_(model.parameters(), max_norm)

    return sharding.Engine(
        model,
        accel.unwrap_model(model),
        optimizer,
        accel.device,
        (lambda: torch.autocast("cpu", dtype=torch.float16)) if cpu_fp16 else nullcontext,
        backward,
        clip,
        sharding.optimizer_step(optimizer, scaler),
        lambda skip: nullcontext(),
    )


def train(
    model: nn.Module,
    train_data: Dataset,
    collate: Callable[[list], dict[str, torch.Tensor]],
    cfg: TrainOptions,
    workdir: Path,
    evaluate: EvalFn | None = None,
    before_step: StepHook | None = None,
    after_step: AfterStepHook | None = None,
    param_groups: GroupsFn | None = None,
    resume: bool = False,
    show_progress: bool = True,
    loss_fn: Callable[[Any, dict[str, torch.Tensor]], torch.Tensor] | None = None,
    tracker: Tracker | None = None,
) -> LoopResult:
    """Train `model` in place on `train_data`; returns counters and the eval history.

    Args:
        model: A model whose forward takes the collated batch (with `labels`) and returns an
            output with `.loss`. Parameters with requires_grad=False stay untouched.
        train_data: Map-style dataset of examples that `collate` turns into a batch.
        collate: Examples -> dict of tensors.
        cfg: Training options.
        workdir: Folder for `checkpoint/`, `best.safetensors` and `log.jsonl`.
        evaluate: Validation callback returning metrics (including cfg.metric), or None.
        before_step: Strategy hook called with (model, step, epoch) before each optimizer
            step's first micro-batch (and so also when a run starts or resumes).
        after_step: Strategy hook called with (model, step) after each optimizer step, while
            the gradients are still there.
        param_groups: The strategy's optimizer groups, or None for the default split.
        resume: Continue from `workdir/checkpoint` when it exists.
        show_progress: Draw a tqdm progress bar.
        loss_fn: The task's training loss from (model output, batch), or None for the
            output's own `.loss` (classification uses it for class-weighted loss).
        tracker: Experiment trackers that receive every log record (`train/loss`,
            `train/lr`, `train/grad_norm`, `eval/<metric>`) at its optimizer step.
    """
    from accelerate.utils import set_seed

    ctx = distributed.context(cfg.distributed)
    rank, world = (ctx.rank, ctx.world) if ctx else (0, 1)
    main = rank == 0
    set_seed(cfg.seed + rank)  # dropout differs between ranks; one process: as before
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    n = len(train_data)
    if n == 0:
        raise TunelabError("the training split is empty: give more data or a smaller test_size")
    per_step = cfg.batch_size * world  # examples of one global batch
    batches_per_epoch = math.ceil(n / per_step)
    steps_per_epoch, total = plan_steps(n, cfg, world)
    warmup = int(cfg.warmup_ratio * total)

    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    mixed = resolve_precision(cfg.precision)
    if ctx is None:
        eng = _accelerate_engine(model, cfg, mixed, param_groups)
    else:
        eng = sharding.engine(model, mixed, ctx, lambda m: _optimizer(m, cfg, param_groups))
    model, optimizer, inner = eng.model, eng.optimizer, eng.inner
    # what checkpoints hold: every parameter the optimizer may update, also ones that a
    # strategy's hook has not unfrozen yet (so keep-best and resume restore a consistent model)
    in_opt = {id(p) for g in optimizer.param_groups for p in g["params"]}
    tracked = {n for n, p in inner.named_parameters() if id(p) in in_opt}
    scheduler = build_scheduler(optimizer, cfg.schedule, total, warmup, cfg.step_size, cfg.gamma)

    if main:
        workdir.mkdir(parents=True, exist_ok=True)
    distributed.barrier()
    log = JsonlLog(workdir / "log.jsonl")
    ckpt, best_path = workdir / "checkpoint", workdir / "best.safetensors"
    st = LoopState()
    if resume and (ckpt / "state.json").is_file():
        if ctx is None:
            saved = load_checkpoint(ckpt, inner, optimizer, scheduler)
        else:
            saved = load_checkpoint_ranks(ckpt, eng.wrapped, ctx, optimizer, scheduler, tracked)
        st = LoopState.from_dict(saved)
        if main:
            log.write({"event": "resumed", "step": st.step})

    higher = not lower_is_better(cfg.metric)
    show_progress = show_progress and main
    bar = tqdm(
        total=total,
        initial=st.step,
        desc="training",
        unit="step",
        disable=not show_progress,
        dynamic_ncols=True,
    )
    stop = st.step >= total or st.stopped_early
    t0, seen0 = time.perf_counter() - st.seconds, st.seen
    t_run = time.perf_counter()
    running, micro, group = 0.0, 0, 1
    window_loss, window_steps = 0.0, 0  # training loss since the last log record

    def checkpoint() -> None:
        st.seconds = time.perf_counter() - t0
        if ctx is None:
            save_checkpoint(ckpt, inner, optimizer, scheduler, st.to_dict(), tracked)
        else:
            save_checkpoint_ranks(
                ckpt, eng.wrapped, ctx, optimizer, scheduler, st.to_dict(), tracked
            )

    def save_best() -> None:
        if ctx is None:
            save_weights(inner, best_path, tracked)
            return
        state = sharding.full_state(eng.wrapped, ctx, tracked)  # collective under FSDP
        if main:
            save_tensors(state, best_path)

    def run_eval() -> bool:
        """Evaluate, track the best, return True when early stopping says stop."""
        if evaluate is None:
            return False
        metrics = None
        # FSDP: every rank in every forward; DDP: rank 0 alone (the weights are the same)
        if ctx is None or main or ctx.sharded:
            model.eval()
            metrics = evaluate(inner)
            model.train()
        metrics = distributed.broadcast(metrics)  # the same decisions on every rank
        value = metric_value(metrics, cfg.metric)
        improved = st.improves(value, higher)
        if improved:
            st.best, st.best_step, st.bad_evals = value, st.step, 0
            if cfg.keep_best:
                save_best()
        else:
            st.bad_evals += 1
        record = {
            "step": st.step,
            "epoch": round(st.step / steps_per_epoch, 3),
            "eval": {k: v for k, v in metrics.items() if isinstance(v, int | float)},
        }
        st.history.append(record)
        if main:
            log.write(record)
            if tracker is not None:
                tracker.log_metrics({f"eval/{k}": v for k, v in record["eval"].items()}, st.step)
        if show_progress:
            bar.write(f"step {st.step}: {cfg.metric} {value:.4f}" + (" (best)" if improved else ""))
        return cfg.patience is not None and st.bad_evals >= cfg.patience

    model.train()
    while not stop:
        epoch = st.epoch
        order = _epoch_order(n, cfg.seed, epoch)
        for start in range(st.batch * per_step, n, per_step):
            step_idx = order[start : start + per_step]  # the global batch
            mine = distributed.shard(step_idx, rank, world) if ctx else step_idx
            batch = collate([train_data[i] for i in mine])
            batch = {k: v.to(eng.device) for k, v in batch.items()}
            if micro == 0:
                # the last group of an epoch may be shorter than grad_accum
                group = min(cfg.grad_accum, batches_per_epoch - st.batch)
                if before_step is not None:
                    before_step(inner, st.step, epoch)
            with eng.no_sync(micro + 1 < group):
                with eng.autocast():
                    out = model(**batch)
                    loss = out.loss if loss_fn is None else loss_fn(out, batch)
                eng.backward(loss.float() / group)
            running += loss.item()
            micro += 1
            st.batch += 1
            st.seen += len(step_idx)
            last_batch = st.batch == batches_per_epoch
            if micro < group:
                continue
            log_due = (st.step + 1) % cfg.log_every == 0 or st.step + 1 == total
            grad_norm = None
            if cfg.max_grad_norm or log_due:
                # an infinite max_norm measures the norm without clipping
                grad_norm = eng.clip(cfg.max_grad_norm or float("inf"))
            eng.step()
            if after_step is not None:
                after_step(inner, st.step)
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            st.step += 1
            lr = float(scheduler.get_last_lr()[0])  # a tensor for some optimizers (torchao)
            bar.update(1)
            bar.set_postfix(loss=f"{running / micro:.4f}", lr=f"{lr:.2e}")
            # the logged loss is the mean over the steps since the last record, not one batch
            window_loss, window_steps = window_loss + running / micro, window_steps + 1
            if log_due:
                elapsed = time.perf_counter() - t_run
                record = {
                    "step": st.step,
                    "loss": distributed.mean(window_loss / window_steps),  # over ranks
                    "lr": lr,
                    "grad_norm": float(grad_norm) if grad_norm is not None else None,
                    "samples_per_s": (st.seen - seen0) / max(elapsed, 1e-9),
                }
                if main:
                    log.write(record)
                if tracker is not None and main:
                    logged = {k: v for k, v in record.items() if k != "step" and v is not None}
                    tracker.log_metrics({f"train/{k}": v for k, v in logged.items()}, st.step)
                window_loss, window_steps = 0.0, 0
            running, micro = 0.0, 0
            if last_batch:
                st.epoch, st.batch = epoch + 1, 0
            done = st.step >= total
            due = (cfg.eval_every and st.step % cfg.eval_every == 0) or (
                not cfg.eval_every and last_batch
            )
            if due or done:
                if run_eval():
                    st.stopped_early = True
                    done = True
                checkpoint()
            if done:
                stop = True
                break
        else:
            st.epoch, st.batch = epoch + 1, 0
    bar.close()
    seconds = time.perf_counter() - t0
    final = inner if ctx is None else sharding.final_model(eng.wrapped, ctx)
    if final is not None and cfg.keep_best and evaluate is not None and best_path.is_file():
        load_weights(final, best_path)
    return LoopResult(
        steps=st.step,
        epochs=st.step / steps_per_epoch,
        train_seconds=seconds,
        samples_per_second=st.seen / max(seconds, 1e-9),
        best_step=st.best_step,
        best_metric=st.best,
        stopped_early=st.stopped_early,
        history=st.history,
        model=final,
    )
