"""Experiment trackers (TensorBoard, MLflow, W&B) behind one small interface the loop and the
recipes call: parameters once, metrics at an optimizer step, files as artifacts, close."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from tunelab.training.options import track_names


class Tracker(Protocol):
    """What the training loop and the recipes report to."""

    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_artifact(self, path: Path) -> None: ...

    def close(self, status: str = "FINISHED") -> None: ...


class NullTracker:
    """The tracker of a run that tracks nothing (`--train.track none`, the default)."""

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_artifact(self, path: Path) -> None:
        pass

    def close(self, status: str = "FINISHED") -> None:
        pass


def open_trackers(names: list[str], run_dir: Path, store_dir: Path, run_name: str) -> Tracker:
    """One Tracker that forwards to each named backend (filled in by the tracking work)."""
    raise NotImplementedError(names)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"test": {"accuracy": 0.9}} -> {"test/accuracy": 0.9}: scalars only."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= flatten(v, key + "/")
        elif isinstance(v, bool | int | float | str) or v is None:
            out[key] = v
    return out


@contextmanager
def tracking(
    track: str | None,
    run_dir: Path,
    store_dir: Path,
    params: dict[str, Any],
    extra: Tracker | None = None,
) -> Iterator[Tracker]:
    """The trackers `track` names ("tensorboard,mlflow"), given the run's config as parameters;
    closed as FINISHED when the block ends, FAILED when it raises. `extra` (a sweep's trial
    reporter) receives the same calls."""
    names = track_names(track)
    if not names and extra is None:
        yield NullTracker()
        return
    if extra is not None and names:
        raise NotImplementedError("several trackers")  # filled in by the tracking work
    tracker = extra or open_trackers(
        names, run_dir, store_dir, run_dir.name.removesuffix(".partial")
    )
    tracker.log_params(flatten(params))
    try:
        yield tracker
    except BaseException:
        tracker.close("FAILED")
        raise
    tracker.close("FINISHED")


def log_results(tracker: Tracker, metrics: dict[str, Any], step: int, run_dir: Path) -> None:
    """A finished run's metrics (numbers only, as `final/<split>/<name>`) and its curves.png."""
    numbers = {
        f"final/{k}": float(v)
        for k, v in flatten(metrics).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    tracker.log_metrics(numbers, step)
    if (run_dir / "curves.png").is_file():
        tracker.log_artifact(run_dir / "curves.png")
