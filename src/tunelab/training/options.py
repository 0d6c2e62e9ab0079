"""The `train` section: everything the one training loop is told (shared by finetune and
pretrain, which only changes the defaults)."""

from __future__ import annotations

from dataclasses import dataclass

from tunelab.errors import TunelabError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
OPTIMIZERS: tuple[str, ...] = ("adamw", "lamb", "adafactor", "sgd", "adamw8bit")
TRACKERS: tuple[str, ...] = ("none", "tensorboard", "mlflow", "wandb")
DISTRIBUTED: tuple[str, ...] = ("ddp", "fsdp")
SCHEDULES: tuple[str, ...] = ("constant", "linear", "cosine", "step", "exponential")


@dataclass
class TrainOptions:
    epochs: float = 3.0
    """Passes over the training split (fractions allowed); ignored when max_steps is set."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (overrides epochs)."""
    min_steps: int | None = None
    """Train at least this many optimizer steps, adding epochs when the data is small (0:
    exactly `epochs`; none: 150 when fine-tuning a classifier, else 0). A few hundred examples
    give a few dozen steps per epoch, which left the recipe predicting only the majority
    class (docs/small-data.md)."""
    batch_size: int = 16
    """Examples per forward pass (per process under torchrun / --nproc: the global batch is
    batch_size x processes)."""
    grad_accum: int = 1
    """Forward passes per optimizer step (effective batch = batch_size x grad_accum)."""
    eval_batch_size: int = 64
    """Examples per forward pass during evaluation and prediction."""
    lr: float = 1e-4
    """Peak learning rate."""
    optimizer: str = "adamw"
    """adamw (fused), lamb (layer-wise trust ratio, for large batches), adafactor
    (transformers', factored second moments: less memory), sgd (with momentum) or adamw8bit
    (torchao's 8-bit optimizer states: about a quarter of AdamW's state memory)."""
    momentum: float = 0.9
    """sgd: momentum factor (0: plain SGD)."""
    weight_decay: float = 0.01
    """Weight decay (decoupled for adamw/lamb/adamw8bit; never applied to biases and
    normalisation weights)."""
    schedule: str = "linear"
    """Learning-rate schedule: constant, linear, cosine, step or exponential."""
    warmup_ratio: float = 0.06
    """Fraction of the optimizer steps spent in linear warmup."""
    step_size: int | None = None
    """step/exponential schedules: optimizer steps per factor of gamma (default: a third of
    the run after warmup)."""
    gamma: float = 0.5
    """step/exponential schedules: the lr is multiplied by gamma every step_size steps."""
    max_grad_norm: float | None = 1.0
    """Clip the gradient norm to this value (none to disable)."""
    precision: str = "auto"
    """fp32, bf16 (autocast), fp16 (autocast with loss scaling, torch.amp.GradScaler) or auto
    (bf16 where the CPU/GPU has native bf16, else fp32)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass instead of keeping them: less memory for
    about a third more compute (models that support it: transformers' own switch)."""
    eval_every: int | None = None
    """Evaluate on the validation split every N optimizer steps (default: after each epoch)."""
    metric: str = "macro_f1"
    """Validation metric that picks the best checkpoint and drives early stopping."""
    patience: int | None = None
    """Stop after this many evaluations without improvement of `metric` (none: never)."""
    keep_best: bool = True
    """Restore the weights of the best evaluation before testing and saving."""
    seed: int = 0
    """Seed for the split, the shuffling, dropout and new weights."""
    threads: int | None = None
    """CPU threads for torch (default: torch's own choice)."""
    log_every: int = 10
    """Log loss, learning rate and gradient norm every N optimizer steps (log.jsonl and the
    trackers)."""
    track: str | None = None
    """Experiment trackers, comma-separated: tensorboard, mlflow (a local SQLite store in the
    run folder unless MLFLOW_TRACKING_URI is set), wandb (offline unless logged in), none."""
    distributed: str = "ddp"
    """Under torchrun (or --nproc N): ddp (every rank holds the whole model) or fsdp (FSDP2
    fully_shard: parameters, gradients and optimizer state sharded across ranks)."""


def check_train(t: TrainOptions) -> None:
    """Choices and ranges of the train section (every recipe that trains), one-line errors."""
    if t.min_steps is not None and t.min_steps < 0:
        raise TunelabError(f"--train.min_steps must be 0 or more, got {t.min_steps}")
    if t.schedule not in SCHEDULES:
        raise TunelabError(f"unknown schedule {t.schedule!r}: choose one of {', '.join(SCHEDULES)}")
    if t.optimizer not in OPTIMIZERS:
        raise TunelabError(
            f"unknown optimizer {t.optimizer!r}: set --train.optimizer to one of "
            f"{', '.join(OPTIMIZERS)}"
        )
    bad = [n for n in track_names(t.track) if n not in TRACKERS]
    if bad:
        raise TunelabError(
            f"unknown tracker {bad[0]!r}: set --train.track to some of {', '.join(TRACKERS)} "
            "(comma-separated)"
        )
    if t.distributed not in DISTRIBUTED:
        raise TunelabError(
            f"unknown distributed mode {t.distributed!r}: set --train.distributed to "
            f"{' or '.join(DISTRIBUTED)}"
        )
    if t.precision not in PRECISIONS:
        raise TunelabError(
            f"unknown precision {t.precision!r}: choose one of {', '.join(PRECISIONS)}"
        )
    checks = [
        (t.batch_size >= 1, "train.batch_size must be at least 1"),
        (t.eval_batch_size >= 1, "train.eval_batch_size must be at least 1"),
        (t.grad_accum >= 1, "train.grad_accum must be at least 1"),
        (t.lr > 0, "train.lr must be positive"),
        (t.epochs > 0 or (t.max_steps or 0) > 0, "train.epochs or train.max_steps must be > 0"),
        (t.max_steps is None or t.max_steps >= 1, "train.max_steps must be at least 1 (or none)"),
        (0 <= t.warmup_ratio < 1, "train.warmup_ratio must be in [0, 1)"),
        (t.patience is None or t.patience >= 1, "train.patience must be at least 1 (or none)"),
        (t.eval_every is None or t.eval_every >= 1, "train.eval_every must be at least 1"),
        (t.threads is None or t.threads >= 1, "train.threads must be at least 1 (or none)"),
        (t.log_every >= 1, "train.log_every must be at least 1"),
        (0 <= t.momentum < 1, "train.momentum must be in [0, 1)"),
    ]
    for ok, msg in checks:
        if not ok:
            raise TunelabError(f"{msg}: fix the config or flag")


def track_names(track: str | None) -> list[str]:
    """The trackers a `track` value names ("tensorboard,mlflow" -> both; "none" -> none)."""
    names = [n.strip().lower() for n in str(track or "none").split(",") if n.strip()]
    return [n for n in names if n != "none"]
