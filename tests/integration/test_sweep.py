"""`tunelab sweep`: a 4-trial sweep on a tiny encoder writes its report (best trial = the best
metric of the trials), its trials are ordinary run folders, the same command with --trials 5
runs one more trial only, and a trial the pruner rules out stops."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import pytest

from tests.conftest import toy_examples, write_csv
from tunelab.errors import TunelabError

pytest.importorskip("optuna")

SPACE = "lr=1e-4..1e-2:log,batch_size=4,8"


@pytest.fixture(scope="module")
def base_args(tiny_models, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("sweep")
    data = write_csv(root / "toy.csv", toy_examples(60))
    return {
        "model.name": str(tiny_models["encoder"]),
        "data.source": str(data),
        "data.max_length": "32",
        "train.max_steps": "8",
        "train.min_steps": "0",
        "train.eval_every": "4",
        "train.threads": "1",
        "run.output_dir": str(root / "runs"),
    }


@pytest.fixture(scope="module")
def swept(base_args) -> Path:
    """The sweep folder of a 4-trial sweep run through the command line."""
    from tunelab.cli import main

    flags = [a for k, v in base_args.items() for a in (f"--{k}", v)]
    assert main(["sweep", *flags, "--space", SPACE, "--trials", "4"]) == 0
    (folder,) = Path(base_args["run.output_dir"]).glob("sweep-encoder-full-*")
    return folder


def test_the_report_names_the_best_trial(swept):
    from tunelab.runs.marker import read_marker

    report = json.loads((swept / "report.json").read_text())
    assert (swept / "report.md").is_file() and (swept / "sweep.png").stat().st_size > 10_000
    rows = report["trials"]
    assert [r["trial"] for r in rows] == [0, 1, 2, 3]
    assert {r["state"] for r in rows} == {"complete"}  # the pruner waits for 5 finished trials
    assert report["metric"] == "macro_f1" and report["direction"] == "maximize"
    assert report["best"]["value"] == max(r["value"] for r in rows)
    for r in rows:
        assert 1e-4 <= r["params"]["train.lr"] <= 1e-2
        assert r["params"]["train.batch_size"] in (4, 8)
        run = swept / r["run"]
        assert read_marker(run).strategy == "full"  # an ordinary run folder
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["train"]["best_validation"] == pytest.approx(r["value"])
        saved = (run / "config.yaml").read_text()
        assert f"batch_size: {r['params']['train.batch_size']}" in saved
    best = report["best"]
    md = (swept / "report.md").read_text()
    assert f"**Best: trial {best['trial']}, validation macro_f1 {best['value']:.4f}**" in md
    assert md.count("| complete |") == 4


def test_the_same_command_continues_the_study(swept, base_args):
    from tunelab import api

    before = json.loads((swept / "report.json").read_text())["trials"]
    cfg = api.build_config(overrides=base_args)
    result = api.sweep(cfg, SPACE, trials=5, quiet=True)
    assert result.folder == swept
    assert [r["trial"] for r in result.trials] == [0, 1, 2, 3, 4]
    assert result.trials[:4] == before  # the finished trials were not run again
    assert (swept / "trial-004" / "metrics.json").is_file()
    # again with 5: nothing left to run
    assert len(api.sweep(cfg, SPACE, trials=5, quiet=True).trials) == 5
    with pytest.raises(TunelabError, match="another config or space"):
        api.sweep(cfg, "lr=1e-4..1e-3:log", trials=5, study_name=swept.name, quiet=True)


def test_a_trial_behind_the_median_is_pruned():
    import optuna

    from tunelab.recipes.sweep import TrialReporter

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(1))
    for value in (0.8, 0.9):
        trial = study.ask()
        TrialReporter(trial, "macro_f1").log_metrics({"eval/macro_f1": value}, 4)
        study.tell(trial, value)
    trial = study.ask()
    reporter = TrialReporter(trial, "macro_f1")
    reporter.log_metrics({"train/loss": 0.1}, 2)  # not an evaluation: nothing reported
    with pytest.raises(optuna.TrialPruned):
        reporter.log_metrics({"eval/macro_f1": 0.2, "eval/loss": 1.0}, 4)
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {4: 0.2}


def test_missing_optuna_is_one_line(monkeypatch, base_args):
    from tunelab import api

    real_import = builtins.__import__

    def refuse(name, *args, **kwargs):
        if name == "optuna" or name.startswith("optuna."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse)
    with pytest.raises(TunelabError) as info:
        api.sweep(api.build_config(overrides=base_args), SPACE, trials=2)
    assert str(info.value) == "tunelab sweep needs optuna: pip install 'tunelab[sweep]'"


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--space", "lr=1..0"], "--space lr=1..0: the low end must be below the high end"),
        (["--space", "lora.r=4,8"], "add --strategy lora"),
        (["--space", "lr=1e-4..1e-3", "--trials", "0"], "--trials must be at least 1"),
        (["--space", "lr=1e-4..1e-3", "--resume"], "unrecognized arguments: --resume"),
        ([], "the following arguments are required: --space"),
    ],
)
def test_sweep_mistakes_are_one_line(capsys, tmp_path, argv, words):
    from tunelab.cli import main

    assert main(["sweep", "--output", str(tmp_path / "runs"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err
    assert not (tmp_path / "runs").exists()  # refused before anything was written
