"""The configuration of `tunelab compress RUN --methods ...`: which methods, where the report
goes, and the budgets of the methods that train (pruning recovery, distillation)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.compress.options import DistillOptions, check_options
from tunelab.config.parse import read_yaml, update_dataclass
from tunelab.errors import TunelabError
from tunelab.strategies import STRATEGIES, strategy_info

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


def check_recovery_strategy(name: str) -> None:
    """A registered strategy whose training folds back into a plain (pruned) model."""
    if not strategy_info(name).can_merge:
        mergeable = ", ".join(n for n, i in STRATEGIES.items() if i.can_merge)
        raise TunelabError(
            f"--compress.recovery_strategy {name} adds modules that do not fold back into the "
            f"pruned model: pick one of {mergeable}"
        )


@dataclass
class CompressConfig:
    """`tunelab compress`'s options: its own section and the distillation options."""

    compress: CompressOptions = field(default_factory=CompressOptions)
    distill: DistillOptions = field(default_factory=DistillOptions)


SECTIONS = {"compress": CompressOptions, "distill": DistillOptions}


def build_compress_config(
    yaml_path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> CompressConfig:
    """Defaults < YAML (`compress:` and `distill:` sections) < overrides (`{"compress.methods":
    "int8-dynamic,onnx", "distill.temperature": "4"}`; a key without a section is a compress
    option), validated.

    Raises:
        TunelabError: unknown method, section or option, a bad value.
    """
    from tunelab.compress import parse_method

    nested: dict[str, dict[str, Any]] = {"compress": {}, "distill": {}}
    for sec, vals in read_yaml(yaml_path).items():
        if sec not in SECTIONS or not isinstance(vals, dict):
            raise TunelabError(
                f"config section {sec!r}: a compress config holds `compress:` and `distill:` "
                "mappings of options"
            )
        nested[sec].update(vals)
    for key, value in (overrides or {}).items():
        sec, _, opt = key.rpartition(".")
        if sec not in ("", *SECTIONS):
            raise TunelabError(f"unknown option --{key}: use --compress.KEY or --distill.KEY")
        nested[sec or "compress"][opt] = value
    values = nested["compress"]
    methods = values.get("methods")
    if isinstance(methods, str | list):
        parts = methods.split(",") if isinstance(methods, str) else ",".join(methods).split(",")
        values["methods"] = [m.strip() for m in parts if m.strip()]
    cfg = CompressConfig(
        update_dataclass(CompressOptions(), values, "compress"),
        update_dataclass(DistillOptions(), nested["distill"], "distill"),
    )
    c = cfg.compress
    if not c.methods:
        raise TunelabError("no compression methods: pass --methods int8-dynamic,prune-30,...")
    specs = [parse_method(m).spec for m in c.methods]
    if len(set(specs)) != len(specs):
        raise TunelabError("a method is listed twice in --methods: list each once")
    checks = [
        (c.recovery_steps >= 0, "--compress.recovery_steps must be 0 or more"),
        (c.distill_epochs > 0, "--compress.distill_epochs must be positive"),
        (c.batch_size >= 1, "--compress.batch_size must be at least 1"),
        (c.calibration_examples >= 1, "--compress.calibration_examples must be at least 1"),
        (c.latency_examples >= 1, "--compress.latency_examples must be at least 1"),
        (c.eval_limit is None or c.eval_limit >= 1, "--compress.eval_limit must be at least 1"),
        (c.threads is None or c.threads >= 1, "--compress.threads must be at least 1"),
    ]
    checks += [
        (c.recovery_lr > 0, "--compress.recovery_lr must be positive"),
        (c.distill_lr > 0, "--compress.distill_lr must be positive"),
    ]
    for ok, msg in checks:
        if not ok:
            raise TunelabError(f"{msg}: fix the flag or the config")
    check_recovery_strategy(c.recovery_strategy)
    check_options(cfg.distill)
    return cfg
