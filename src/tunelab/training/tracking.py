"""Experiment trackers (TensorBoard, MLflow, W&B) behind one small interface the loop and the
recipes call: parameters once, metrics at an optimizer step, files as artifacts, close.

Each backend is its library's own API, imported only when a run names it (`--track
tensorboard,mlflow`): `torch.utils.tensorboard.SummaryWriter`, `mlflow.MlflowClient` (a client
object, not mlflow's process-wide active run, so a sweep's trials and the Python API never
share state) and a `wandb.Run`. Where things go:

- tensorboard: `<run folder>/tensorboard/` (scalars, the config as text and as hparams,
  curves.png as an image);
- mlflow: MLFLOW_TRACKING_URI, else `sqlite:///<output>/mlflow.db` with artifacts in
  `<output>/mlartifacts/` (no server: `mlflow ui --backend-store-uri sqlite:///...`);
- wandb: offline unless logged in (WANDB_API_KEY, ~/.netrc) or WANDB_MODE says otherwise;
  its files in `<output>/wandb/` (`wandb sync` uploads an offline run later).

A run trains in `OUTPUT/.NAME.partial/`, renamed to `OUTPUT/NAME/` by the recipe before it
logs the final metrics (`log_results`, which tells the trackers the final folder): TensorBoard
is flushed after every call, so nothing is pending at the rename, and reopens in the final
folder. W&B's own process writes its files by path until it finishes, so its folder is the
output folder rather than the run folder it cannot follow.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from tunelab.errors import TunelabError
from tunelab.training.options import TRACKERS, track_names

EXPERIMENT = "tunelab"
"""The MLflow experiment and W&B project runs go to (MLFLOW_EXPERIMENT_NAME / WANDB_PROJECT
override it)."""


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


class MultiTracker:
    """Forwards every call to each of `trackers`, in order; closes them all even when one
    fails to close."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def log_params(self, params: dict[str, Any]) -> None:
        for t in self.trackers:
            t.log_params(params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for t in self.trackers:
            t.log_metrics(metrics, step)

    def log_artifact(self, path: Path) -> None:
        for t in self.trackers:
            t.log_artifact(path)

    def relocate(self, run_dir: Path) -> None:
        for t in self.trackers:
            relocate(t, run_dir)

    def close(self, status: str = "FINISHED") -> None:
        error = None
        for t in self.trackers:
            try:
                t.close(status)
            except Exception as exc:  # close the others, then report the first failure
                error = error or exc
        if error is not None:
            raise error


def relocate(tracker: Tracker, run_dir: Path) -> None:
    """Tell `tracker` the run's work folder is now `run_dir` (trackers that write into it)."""
    move = getattr(tracker, "relocate", None)
    if move is not None:
        move(run_dir)


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _missing(name: str, package: str) -> TunelabError:
    return TunelabError(f"--train.track {name} needs {package}: pip install 'tunelab[track]'")


class TensorBoardTracker:
    """Event files in `<run folder>/tensorboard/` (`tensorboard --logdir OUTPUT`)."""

    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise _missing("tensorboard", "tensorboard") from None
        self._writer_class = SummaryWriter
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.step = 0

    def log_params(self, params: dict[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        rows = "\n".join(f"| {k} | {v} |" for k, v in params.items())
        self.writer.add_text("config", "| option | value |\n|---|---|\n" + rows, 0)
        # the HPARAMS tab compares runs by their options (session start only: the plugin
        # takes the metrics from the runs' scalars)
        values = {k: v if isinstance(v, int | float | str) else str(v) for k, v in params.items()}
        _, start, _ = hparams(values, {})
        self.writer.file_writer.add_summary(start)
        self.writer.flush()

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for k, v in _numbers(metrics).items():
            self.writer.add_scalar(k, v, step)
        self.step = step
        self.writer.flush()  # nothing may be pending when the work folder is renamed

    def log_artifact(self, path: Path) -> None:
        if path.suffix.lower() != ".png":  # the run folder holds the files themselves
            return
        import matplotlib.image

        image = matplotlib.image.imread(str(path))  # (height, width, RGB[A]) floats in [0, 1]
        self.writer.add_image(path.stem, image[:, :, :3], self.step, dataformats="HWC")
        self.writer.flush()

    def relocate(self, run_dir: Path) -> None:
        """Go on writing in the renamed folder (a second event file, which TensorBoard reads
        after the first)."""
        self.writer.close()
        self.writer = self._writer_class(log_dir=str(run_dir / "tensorboard"))

    def close(self, status: str = "FINISHED") -> None:
        with contextlib.suppress(OSError):  # a failed run's work folder may be gone already
            self.writer.close()


class MlflowTracker:
    """One MLflow run in the experiment "tunelab", through an `MlflowClient`."""

    def __init__(self, store_dir: Path, run_name: str):
        try:
            import mlflow.utils.validation as limits
        except ImportError:
            raise _missing("mlflow", "mlflow") from None
        self.max_value = getattr(limits, "MAX_PARAM_VAL_LENGTH", 500)
        self.max_params = getattr(limits, "MAX_PARAMS_TAGS_PER_BATCH", 100)
        self.max_metrics = getattr(limits, "MAX_METRICS_PER_BATCH", 1000)
        self.client, experiment = mlflow_experiment(store_dir)
        self.run_id = self.client.create_run(experiment, run_name=run_name).info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(_mlflow_key(k), str(v)[: self.max_value]) for k, v in params.items()]
        for i in range(0, len(items), self.max_params):  # the store takes 100 per request
            self.client.log_batch(self.run_id, params=items[i : i + self.max_params])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(_mlflow_key(k), v, now, step) for k, v in _numbers(metrics).items()]
        for i in range(0, len(items), self.max_metrics):
            self.client.log_batch(self.run_id, metrics=items[i : i + self.max_metrics])

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def close(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)


def mlflow_experiment(store_dir: Path):
    """(MlflowClient, experiment id): MLFLOW_TRACKING_URI, else the SQLite store
    `store_dir/mlflow.db` (created with its tables on first use; a sweep calls this once
    before its parallel trials, so they do not all migrate a new file at once)."""
    from mlflow import MlflowClient

    # mlflow and alembic log every table migration of a new SQLite store at INFO
    for logger in ("mlflow", "alembic"):
        logging.getLogger(logger).setLevel(logging.WARNING)
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    artifacts = None
    if not uri:  # a local store beside the runs: no server needed
        store = Path(store_dir).resolve()
        store.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{store / 'mlflow.db'}"
        artifacts = (store / "mlartifacts").as_uri()
    client = MlflowClient(tracking_uri=uri)
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    return client, _experiment(client, name, artifacts)


def _experiment(client, name: str, artifacts: str | None) -> str:
    """The id of experiment `name`, created when missing (another process, e.g. a parallel
    sweep trial, may create it at the same moment)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifacts)
    except Exception:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _mlflow_key(key: str) -> str:
    """MLflow keys allow letters, digits, `_-. /`: anything else becomes `_`."""
    return re.sub(r"[^\w\-. /]", "_", key)


def _wandb_logged_in() -> bool:
    """An API key in the environment, or `wandb login`'s entry in ~/.netrc."""
    import netrc

    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1]
        return netrc.netrc().authenticators(host.split("/")[0]) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbTracker:
    """One W&B run: offline unless the user is logged in (or WANDB_MODE decides)."""

    def __init__(self, store_dir: Path, run_name: str):
        try:
            import wandb
        except ImportError:
            raise TunelabError("--train.track wandb needs wandb: pip install wandb") from None
        self.wandb = wandb
        mode = os.environ.get("WANDB_MODE") or ("online" if _wandb_logged_in() else "offline")
        store_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", EXPERIMENT),
            name=run_name,
            dir=str(store_dir),
            mode=mode,
            reinit="create_new",  # a Run object of its own: several runs in one process
            settings=wandb.Settings(console="off", silent=True),
        )
        self.step = 0

    def log_params(self, params: dict[str, Any]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.step = max(self.step, step)  # W&B's steps only go forward
        self.run.log(_numbers(metrics), step=self.step)

    def log_artifact(self, path: Path) -> None:
        if path.suffix.lower() == ".png":
            self.run.log({path.stem: self.wandb.Image(str(path))}, step=self.step)
        else:
            self.run.save(str(path), base_path=str(path.parent), policy="now")

    def close(self, status: str = "FINISHED") -> None:
        self.run.finish(exit_code=0 if status == "FINISHED" else 1)


PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
"""Tracker -> the package it needs (looked up, not imported, by `check_trackers`)."""


def _unknown(name: str) -> TunelabError:
    return TunelabError(
        f"unknown tracker {name!r}: set --train.track to some of {', '.join(TRACKERS)} "
        "(comma-separated)"
    )


def check_trackers(track: str | None) -> None:
    """Refuse, before anything is loaded or written, a tracker that is unknown or whose
    package is not installed (finds the packages without importing them)."""
    from importlib.util import find_spec

    for name in track_names(track):
        if name not in TRACKERS:
            raise _unknown(name)
        if find_spec(PACKAGES[name]) is None:
            if name == "wandb":
                raise TunelabError("--train.track wandb needs wandb: pip install wandb")
            raise _missing(name, PACKAGES[name])


def open_trackers(names: list[str], run_dir: Path, store_dir: Path, run_name: str) -> Tracker:
    """One Tracker that forwards to each named backend. Under torchrun only rank 0 tracks (the
    other ranks get a NullTracker), so a run is one run in each backend.

    Raises:
        TunelabError: an unknown name, or a backend whose package is not installed.
    """
    for name in names:
        if name not in TRACKERS:
            raise _unknown(name)
    if int(os.environ.get("RANK", "0")) != 0:
        return NullTracker()
    opened: list[Tracker] = []
    try:
        for name in dict.fromkeys(names):  # each once, in the order given
            if name == "tensorboard":
                opened.append(TensorBoardTracker(run_dir))
            elif name == "mlflow":
                opened.append(MlflowTracker(store_dir, run_name))
            elif name == "wandb":
                opened.append(WandbTracker(store_dir, run_name))
    except BaseException:
        MultiTracker(opened).close("FAILED")
        raise
    return opened[0] if len(opened) == 1 else MultiTracker(opened)


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


def _run_name(run_dir: Path) -> str:
    """`.NAME.partial` -> NAME (the name the finished run folder will have)."""
    name = run_dir.name
    if name.startswith(".") and name.endswith(".partial"):
        return name[1 : -len(".partial")]
    return name


@contextmanager
def tracking(
    track: str | None,
    run_dir: Path,
    store_dir: Path,
    params: dict[str, Any],
    extra: Tracker | None = None,
) -> Iterator[Tracker]:
    """The trackers `track` names ("tensorboard,mlflow"), given the run's config as parameters;
    closed as FINISHED when the block ends, FAILED when it raises (KILLED when interrupted or
    pruned by a sweep). `extra` (a sweep's trial
    reporter) receives the same calls, after the named trackers."""
    names = track_names(track)
    if not names and extra is None:
        yield NullTracker()
        return
    trackers: list[Tracker] = []
    if names:
        trackers.append(open_trackers(names, run_dir, store_dir, _run_name(run_dir)))
    if extra is not None:
        trackers.append(extra)
    tracker = trackers[0] if len(trackers) == 1 else MultiTracker(trackers)
    try:
        tracker.log_params(flatten(params))
        yield tracker
    except BaseException as exc:
        # an interrupt or a sweep's pruning (optuna.TrialPruned) stops a run; errors fail it
        stopped = isinstance(exc, KeyboardInterrupt) or type(exc).__name__ == "TrialPruned"
        tracker.close("KILLED" if stopped else "FAILED")
        raise
    tracker.close("FINISHED")


def log_results(tracker: Tracker, metrics: dict[str, Any], step: int, run_dir: Path) -> None:
    """A finished run's metrics (numbers only, as `final/<split>/<name>`) and its curves.png.
    `run_dir` is the finished run folder: the trackers that wrote into the work folder follow
    it there first."""
    relocate(tracker, run_dir)
    numbers = {
        f"final/{k}": float(v)
        for k, v in flatten(metrics).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    tracker.log_metrics(numbers, step)
    if (run_dir / "curves.png").is_file():
        tracker.log_artifact(run_dir / "curves.png")
