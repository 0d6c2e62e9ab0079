"""The configuration of `tunelab compress RUN --methods ...`: which methods, where the report
goes, and the budgets of the methods that train (pruning recovery, distillation)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.config.parse import read_yaml, update_dataclass
from tunelab.errors import TunelabError

DEFAULT_METHODS = ["bf16", "int8-dynamic", "prune-30", "prune-heads-25", "distill-half", "onnx"]


@dataclass
class CompressOptions:
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    """Compression methods, comma-separated: bf16, int8-dynamic, int8-weight, int4-weight,
    prune-N (N% unstructured magnitude; prune-N-layer: per layer), wanda-N, prune-heads-N,
    prune-ffn-N, prune-layers-N, distill-half (or distill-N layers), onnx, onnx-int8,
    gguf-f16, gguf-q8_0."""
    output_dir: str = "reports/compress"
    """Report folder: one run folder per method under runs/, results, table and plots."""
    recovery_steps: int = 150
    """Optimizer steps of fine-tuning after structured pruning (heads, ffn, layers) and of
    unstructured pruning above 50% (0: none)."""
    recovery_strategy: str = "full"
    """Strategy of that recovery fine-tune (any of `tunelab finetune --strategy`; peft ones
    are merged back)."""
    recovery_lr: float = 3e-5
    """Learning rate of the recovery fine-tune."""
    distill_epochs: float = 3.0
    """Passes over the run's training split to train a distilled student."""
    distill_lr: float = 1e-4
    """Learning rate of the student."""
    temperature: float = 2.0
    """Distillation: softmax temperature of teacher and student logits."""
    alpha: float = 0.5
    """Distillation: weight of the soft-target loss (1 - alpha on the task loss)."""
    hidden_weight: float = 0.0
    """Distillation: weight of the hidden-state matching loss (0: logits only)."""
    distill_loss: str = "kl"
    """Distillation loss on the logits: kl (forward KL) or jsd (generalized JSD, as in GKD)."""
    batch_size: int = 16
    """Examples per step of recovery and distillation training."""
    calibration_examples: int = 128
    """Training examples used to score heads, neurons and layers (and Wanda's activations)."""
    latency_examples: int = 64
    """Test examples timed one at a time (batch 1) and in batches of 32."""
    eval_limit: int | None = None
    """Evaluate on at most this many test examples (none: the whole test split)."""
    threads: int | None = None
    """CPU threads for torch in every method's process (default: torch's own choice)."""
    seed: int = 0
    """Seed of every method that trains or samples."""


def build_compress_config(
    yaml_path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> CompressOptions:
    """Defaults < YAML (a `compress:` section, or the options at the top level) < overrides
    (`{"methods": "int8-dynamic,onnx", "recovery_steps": "100"}`), validated."""
    from tunelab.compress import parse_method

    raw = read_yaml(yaml_path)
    values = dict(raw.get("compress", raw))
    values.update(overrides or {})
    methods = values.get("methods")
    if isinstance(methods, str | list):
        parts = methods.split(",") if isinstance(methods, str) else ",".join(methods).split(",")
        values["methods"] = [m.strip() for m in parts if m.strip()]
    cfg = update_dataclass(CompressOptions(), values, "compress")
    if not cfg.methods:
        raise TunelabError("no compression methods: pass --methods int8-dynamic,prune-30,...")
    specs = [parse_method(m).spec for m in cfg.methods]
    if len(set(specs)) != len(specs):
        raise TunelabError("a method is listed twice in --methods: list each once")
    checks = [
        (cfg.recovery_steps >= 0, "--recovery-steps must be 0 or more"),
        (cfg.distill_epochs > 0, "--distill-epochs must be positive"),
        (cfg.temperature > 0, "--temperature must be positive"),
        (0 <= cfg.alpha <= 1, "--alpha must be in [0, 1]"),
        (cfg.distill_loss in ("kl", "jsd"), "--distill-loss must be kl or jsd"),
        (cfg.batch_size >= 1, "--batch-size must be at least 1"),
        (cfg.calibration_examples >= 1, "--calibration-examples must be at least 1"),
        (cfg.latency_examples >= 1, "--latency-examples must be at least 1"),
    ]
    for ok, msg in checks:
        if not ok:
            raise TunelabError(f"{msg}: fix the flag or the config")
    return cfg
