"""Helpers the verb-level tests share."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import toy_examples, write_csv


def toy_classifier_run(encoder: Path, root: Path, examples: int, steps: int, lr: float) -> Path:
    """A tiny encoder fine-tuned on the toy topics for `steps` steps: a finished run folder."""
    from tunelab import api

    data = write_csv(root / "toy.csv", toy_examples(examples))
    cfg = api.build_config(
        overrides={
            "model.name": str(encoder),
            "data.source": str(data),
            "data.max_length": 32,
            "train.max_steps": steps,
            "train.batch_size": 8,
            "train.lr": lr,
            "train.threads": 1,
            "run.output_dir": str(root / "runs"),
            "run.name": "toy",
        }
    )
    return api.finetune(cfg, quiet=True).run_dir
