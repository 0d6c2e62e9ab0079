"""Experiment trackers (TensorBoard, MLflow, W&B) behind one small interface the loop and the
recipes call: parameters once, metrics at an optimizer step, files as artifacts, close."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class Tracker(Protocol):
    """What the training loop and the recipes report to."""

    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_artifact(self, path: Path) -> None: ...

    def close(self, status: str = "FINISHED") -> None: ...
