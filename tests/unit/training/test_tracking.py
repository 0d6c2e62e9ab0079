"""Experiment tracking: a tiny fine-tune with `--train.track tensorboard,mlflow` leaves
TensorBoard event files in its run folder and an MLflow run in the output folder's SQLite store,
both holding what the loop and the recipe logged; a missing package or an unknown tracker is
one line."""

from __future__ import annotations

import builtins
import json
import re
from pathlib import Path

import pytest

from tests.conftest import toy_examples, write_csv
from tunelab.errors import TunelabError
from tunelab.training.tracking import (
    MultiTracker,
    check_trackers,
    flatten,
    open_trackers,
    tracking,
)

STEPS = 12


@pytest.fixture(scope="module")
def tracked_run(tiny_models, tmp_path_factory) -> dict:
    """One tiny classifier run tracked by TensorBoard and MLflow (log every 3 steps, evaluate
    every 6)."""
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from tunelab import api

    root = tmp_path_factory.mktemp("tracked")
    data = write_csv(root / "toy.csv", toy_examples(60))
    cfg = api.build_config(
        overrides={
            "model.name": str(tiny_models["encoder"]),
            "data.source": str(data),
            "data.max_length": 32,
            "train.max_steps": STEPS,
            "train.min_steps": 0,
            "train.batch_size": 8,
            "train.threads": 1,
            "train.log_every": 3,
            "train.eval_every": 6,
            "train.track": "tensorboard,mlflow",
            "run.output_dir": str(root / "runs"),
            "run.name": "tracked",
        }
    )
    result = api.finetune(cfg, quiet=True)
    return {
        "run": result.run_dir,
        "output": root / "runs",
        "metrics": result.metrics,
        "model": str(tiny_models["encoder"]),
    }


def test_tensorboard_events_in_the_run_folder(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tracked_run["run"]
    assert run.name == "tracked" and not list(tracked_run["output"].glob(".*.partial"))
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [3, 6, 9, 12]
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    logged = [r["loss"] for r in log if "loss" in r]
    assert [e.value for e in loss] == pytest.approx(logged)
    for tag in ("train/lr", "train/grad_norm", "eval/macro_f1", "eval/accuracy"):
        assert tag in tags["scalars"], tag
    assert [e.step for e in events.Scalars("eval/macro_f1")] == [6, 12]
    # written after the work folder became the run folder: the final metrics and the curves
    test_f1 = tracked_run["metrics"]["test"]["macro_f1"]
    assert events.Scalars("final/test/macro_f1")[0].value == pytest.approx(test_f1)
    assert "curves" in tags["images"]
    assert "config/text_summary" in tags["tensors"]


def test_mlflow_run_in_the_output_folder(tracked_run):
    from mlflow import MlflowClient

    out = tracked_run["output"]
    client = MlflowClient(tracking_uri=f"sqlite:///{out.resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tunelab")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "tracked" and run.info.status == "FINISHED"
    assert run.data.params["train/lr"] == "0.0001"
    assert run.data.params["model/name"] == tracked_run["model"]
    assert run.data.params["train/track"] == "tensorboard,mlflow"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == [3, 6, 9, 12]
    evals = client.get_metric_history(run.info.run_id, "eval/macro_f1")
    assert sorted(m.step for m in evals) == [6, 12]
    test_f1 = tracked_run["metrics"]["test"]["macro_f1"]
    assert run.data.metrics["final/test/macro_f1"] == pytest.approx(test_f1)
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert artifacts == ["curves.png"]
    assert (out / "mlartifacts").is_dir()  # beside the store, not in the working directory


def test_mlflow_takes_long_values_and_many_params(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    params = {f"opt/{i}": i for i in range(250)} | {"data/source": "x" * 10_000, "a:b": 1}
    with tracking("mlflow", tmp_path / ".long.partial", tmp_path, params) as tracker:
        tracker.log_metrics({"train/loss": 1.5, "skipped": None, "flag": True}, 1)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("tunelab").experiment_id])
    assert run.info.run_name == "long"
    assert len(run.data.params) == 252
    assert run.data.params["data/source"].startswith("xxx")
    assert run.data.params["a_b"] == "1"
    assert run.data.metrics == {"train/loss": 1.5}


def test_a_failing_run_is_closed_failed(tmp_path):
    closed = []

    class Recorder:
        def log_params(self, params):
            pass

        def log_metrics(self, metrics, step):
            pass

        def log_artifact(self, path):
            pass

        def close(self, status="FINISHED"):
            closed.append(status)

    with pytest.raises(RuntimeError), tracking(None, tmp_path, tmp_path, {}, extra=Recorder()):
        raise RuntimeError("boom")
    assert closed == ["FAILED"]


def test_extra_and_named_trackers_both_receive_every_call(tmp_path):
    pytest.importorskip("tensorboard")
    calls = []

    class Recorder:
        def log_params(self, params):
            calls.append(("params", params["train"]))

        def log_metrics(self, metrics, step):
            calls.append(("metrics", step))

        def log_artifact(self, path):
            calls.append(("artifact", path.name))

        def close(self, status="FINISHED"):
            calls.append(("close", status))

    work = tmp_path / ".both.partial"
    with tracking("tensorboard", work, tmp_path, {"train": 1}, extra=Recorder()) as tracker:
        assert isinstance(tracker, MultiTracker)
        tracker.log_metrics({"train/loss": 2.0}, 5)
    assert calls == [("params", 1), ("metrics", 5), ("close", "FINISHED")]
    assert list((work / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.parametrize(
    ("name", "module"), [("tensorboard", "torch.utils.tensorboard"), ("mlflow", "mlflow")]
)
def test_missing_package_is_one_line(monkeypatch, tmp_path, name, module):
    real_import = builtins.__import__

    def refuse(mod, *args, **kwargs):
        if mod == module or mod.startswith(module + "."):
            raise ImportError(f"No module named {mod!r}")
        return real_import(mod, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse)
    with pytest.raises(TunelabError) as info:
        open_trackers([name], tmp_path / ".x.partial", tmp_path, "x")
    line = f"--train.track {name} needs {name}: pip install 'tunelab[track]'"
    assert str(info.value) == line
    assert not list(tmp_path.iterdir())  # nothing opened, nothing written
    # the same line before a run starts, from the installed packages (not imported)
    import importlib.util

    real_find = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == name else real_find(n, *a)
    )
    with pytest.raises(TunelabError, match=f"^{re.escape(line)}$"):
        check_trackers(f"none,{name}")
    check_trackers("none")


def test_unknown_tracker_is_one_line(tmp_path, capsys):
    from tunelab.cli import main

    with pytest.raises(TunelabError, match="unknown tracker 'neptune'.*--train.track"):
        open_trackers(["neptune"], tmp_path, tmp_path, "x")
    with pytest.raises(TunelabError, match="unknown tracker 'neptune'"):
        check_trackers("tensorboard,neptune")
    assert main(["finetune", "--track", "tensorboard,neptune", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown tracker 'neptune'" in err
    assert not list(Path(tmp_path).iterdir())  # refused before anything was written


def test_flatten_keeps_scalars():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a/b": 1, "d": None}


def test_wandb_runs_offline_unless_logged_in(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: not logged in
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    work = tmp_path / "runs" / ".w.partial"
    with tracking("wandb", work, tmp_path / "runs", {"train": {"lr": 0.1}}) as tracker:
        tracker.log_metrics({"train/loss": 2.0}, 3)
        assert tracker.run.settings.mode == "offline" and tracker.run.name == "w"
    (folder,) = (tmp_path / "runs" / "wandb").glob("offline-run-*")
    assert list(folder.glob("run-*.wandb"))
    assert not work.exists()  # W&B writes beside the runs, not into the work folder
