"""`tunelab sweep`: hyper-parameter search over fine-tuning runs with Optuna.

The field's own practice — adjust the hyper-parameters from the evaluation results — as one
command: a TPE sampler (seeded: trial k samples with seed + k, so a resumed sweep draws what an
uninterrupted one would) proposes values from `--space`; each trial is an ordinary
`recipes.finetune.finetune` run, saved as `OUTPUT/SWEEP/trial-NNN/`, whose validation metric
is reported to Optuna at every evaluation by an extra tracker, so the median pruner stops a
trial that falls behind the others at the same step. The study lives in
`OUTPUT/SWEEP/study.db` (SQLite): rerunning the same command continues it to --trials in all
(a trial cut off by an interrupt is run again), and --jobs J runs J trials at a time in
separate processes sharing that file (not threads: the loop sets process-wide seeds and
accelerate state). The sweep writes report.md, report.json and sweep.png (the metric against
each parameter) beside the trials.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.config.finetune import Config, build_config
from tunelab.config.sweep import Param, applies, check_space, parse_space, trial_overrides
from tunelab.errors import TunelabError
from tunelab.logs import say
from tunelab.recipes.sweep_report import SweepResult, write_report
from tunelab.runs.workdir import partial_dir, write_yaml
from tunelab.training.options import track_names
from tunelab.training.tracking import check_trackers, mlflow_experiment


@dataclass
class _Plan:
    """What every worker process needs to run trials (picklable)."""

    base: Config
    params: list[Param]
    folder: Path
    name: str
    trials: int
    threads: int | None


def _optuna():
    try:
        import optuna
    except ImportError:
        raise TunelabError("tunelab sweep needs optuna: pip install 'tunelab[sweep]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def _storage(folder: Path):
    optuna = _optuna()
    url = f"sqlite:///{folder.resolve() / 'study.db'}"
    # parallel trials write to the same file: wait for its lock instead of failing at once
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})


class TrialReporter:
    """The extra tracker a trial's finetune reports to: the validation metric of each
    evaluation goes to Optuna, and a trial the pruner rules out stops there."""

    def __init__(self, trial, metric: str):
        self.trial, self.metric = trial, metric

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        evals = {k[5:]: v for k, v in metrics.items() if k.startswith("eval/")}
        if not evals:
            return
        from tunelab.evaluation.metrics import metric_value

        self.trial.report(metric_value(evals, self.metric), step)
        if self.trial.should_prune():
            raise _optuna().TrialPruned(f"pruned at step {step}")

    def log_artifact(self, path: Path) -> None:
        pass

    def close(self, status: str = "FINISHED") -> None:
        pass


def _suggest(trial, params: list[Param], strategy: str) -> dict[str, Any]:
    """The trial's values; `strategy` first, then a strategy's options only in its trials."""
    values: dict[str, Any] = {}
    for p in sorted(params, key=lambda q: q.key != "strategy"):
        if not applies(p, strategy):
            continue
        if p.kind == "choice":
            values[p.key] = trial.suggest_categorical(p.key, list(p.choices))
        elif p.kind == "int":
            values[p.key] = trial.suggest_int(p.key, int(p.low), int(p.high), log=p.log)
        else:
            values[p.key] = trial.suggest_float(p.key, p.low, p.high, log=p.log)
        if p.key == "strategy":
            strategy = str(values[p.key])
    return values


def _run_trial(plan: _Plan, study, trial) -> None:
    """One trial: a finetune run named trial-NNN in the sweep folder, told to the study."""
    optuna = _optuna()
    from tunelab.recipes.finetune import finetune

    values = _suggest(trial, plan.params, plan.base.strategy)
    name = f"trial-{trial.number:03d}"
    trial.set_user_attr("run", name)
    overrides = trial_overrides(plan.base, values) | {
        "run.output_dir": str(plan.folder),
        "run.name": name,
    }
    if plan.threads:
        overrides["train.threads"] = plan.threads
    try:
        cfg = build_config(overrides=overrides)
        result = finetune(cfg, quiet=True, tracker=TrialReporter(trial, cfg.train.metric))
    except optuna.TrialPruned:
        shutil.rmtree(partial_dir(plan.folder, name), ignore_errors=True)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return
    except KeyboardInterrupt:  # left running: the next run of the command retries it
        raise
    except BaseException:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise
    value = result.metrics["train"].get("best_validation")
    if value is None:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise TunelabError(
            "a sweep picks trials by their validation metric and this data has no validation "
            "split: set --data.val_size (e.g. 0.1) or --data.validation_file"
        )
    study.tell(trial, float(value))


def _next_trial(plan: _Plan, lock):
    """(study, trial) for the next trial, or None once --trials are finished or running. The
    lock makes counting and asking one step across the worker processes."""
    optuna = _optuna()
    states = optuna.trial.TrialState
    with lock:
        study = optuna.load_study(study_name=plan.name, storage=_storage(plan.folder))
        counted = study.get_trials(
            deepcopy=False, states=(states.COMPLETE, states.PRUNED, states.RUNNING)
        )
        if len(counted) >= plan.trials:
            return None
        trial = study.ask()
    # trial k samples with seed + k: the same values whether or not the sweep was resumed
    # optuna's defaults otherwise (10 random trials before TPE models the results; no pruning
    # before 5 trials finished): a sweep's draws do not depend on its --trials
    study.sampler = optuna.samplers.TPESampler(
        seed=plan.base.train.seed + trial.number,
        constant_liar=True,  # parallel trials: running ones count as bad, not as absent
    )
    study.pruner = optuna.pruners.MedianPruner()
    return study, trial


def _work(plan: _Plan, lock, on_trial=None) -> None:
    """Run trials until the study holds plan.trials (one worker; several run in parallel)."""
    while (nxt := _next_trial(plan, lock)) is not None:
        study, trial = nxt
        _run_trial(plan, study, trial)
        if on_trial is not None:
            on_trial(study.trials[trial.number])


def _worker(plan: _Plan, lock, errors) -> None:
    """A --jobs process: its user mistakes go back to the parent as one line."""
    from tunelab.logs import quiet_libraries

    quiet_libraries()
    try:
        _work(plan, lock)
    except TunelabError as exc:
        errors.put(str(exc))
        raise SystemExit(2) from None


def _describe(trial, metric: str) -> str:
    params = " ".join(
        f"{k.rpartition('.')[2]}={v:.3g}" if isinstance(v, float) else f"{k.rpartition('.')[2]}={v}"
        for k, v in trial.params.items()
    )
    state = trial.state.name.lower()
    value = f"{metric} {trial.value:.4f}" if trial.value is not None else "no value"
    extra = f" (pruned at step {trial.last_step})" if state == "pruned" else ""
    return f"trial {trial.number}: {params} -> {value}{extra}" + (
        "" if state in ("complete", "pruned") else f" [{state}]"
    )


def _prepare(cfg: Config, space, trials: int, jobs: int, study_name: str | None):
    """Checked base config, parameters, sweep folder and name; the sweep.yaml of a study
    being resumed must match."""
    if trials < 1:
        raise TunelabError(f"--trials must be at least 1, got {trials}")
    if jobs < 1:
        raise TunelabError(f"--jobs must be at least 1, got {jobs}")
    if cfg.run.resume:
        raise TunelabError("--resume: a sweep resumes by running the same command again")
    if cfg.run.name:
        raise TunelabError("--run.name: the sweep names its trials; name it with --study-name")
    from tunelab.data.memory import materialize
    from tunelab.recipes.finetune import checked_config
    from tunelab.tasks.base import get_task

    check_trackers(cfg.train.track)  # each trial would open them: refuse before the first
    cfg = dataclasses.replace(cfg, data=materialize(cfg.data))
    params = parse_space(space, cfg.strategy)
    check_space(params, cfg)
    cfg = checked_config(cfg, get_task(cfg.task))  # a generative task validates on loss
    saved = {"config": cfg.to_dict(), "space": [p.spec() for p in params]}
    digest = hashlib.sha1(json.dumps(saved, sort_keys=True, default=str).encode()).hexdigest()
    model = cfg.model.name.strip("/").split("/")[-1]
    name = study_name or f"sweep-{model}-{cfg.strategy}-{digest[:6]}"
    folder = Path(cfg.run.output_dir) / name
    record = folder / "sweep.yaml"
    if record.is_file():
        import yaml

        if yaml.safe_load(record.read_text()) != json.loads(json.dumps(saved, default=str)):
            raise TunelabError(
                f"--study-name {name}: that sweep ran with another config or space ({record}):"
                " rerun its own command to continue it, or pick another --study-name"
            )
    folder.mkdir(parents=True, exist_ok=True)
    write_yaml(record, json.loads(json.dumps(saved, default=str)))
    return cfg, params, folder, name


def _retry_interrupted(study, folder: Path) -> None:
    """Trials left running by a sweep that was stopped: failed, and queued again."""
    optuna = _optuna()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        shutil.rmtree(partial_dir(folder, f"trial-{t.number:03d}"), True)
        if t.params:
            study.enqueue_trial(t.params)


def sweep(
    cfg: Config,
    space: str | list[str],
    trials: int = 20,
    jobs: int = 1,
    study_name: str | None = None,
    quiet: bool = False,
) -> SweepResult:
    """Search `space` (`lr=1e-5..1e-3:log,lora.r=4,8,16`) around the fine-tuning config
    `cfg` for the best validation `cfg.train.metric`, `trials` runs in all, `jobs` at a time.

    Raises:
        TunelabError: a bad space, trial count or config (before any trial), a resumed
            sweep's config or space changed, data without a validation split, optuna missing.
    """
    from tunelab.evaluation.metrics import lower_is_better

    optuna = _optuna()
    cfg, params, folder, name = _prepare(cfg, space, trials, jobs, study_name)
    metric = cfg.train.metric.removeprefix("eval_")
    direction = "minimize" if lower_is_better(metric) else "maximize"
    study = optuna.create_study(
        study_name=name, storage=_storage(folder), direction=direction, load_if_exists=True
    )
    _retry_interrupted(study, folder)
    states = optuna.trial.TrialState
    done = len(study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED)))
    todo = max(0, trials - done)
    workers = min(jobs, todo)
    threads = cfg.train.threads or (
        max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    )
    plan = _Plan(cfg, params, folder, name, trials, threads)
    if workers > 1 and "mlflow" in track_names(cfg.train.track):
        mlflow_experiment(folder)  # the trials' store, created once before they share it
    say(
        f"sweep {name}: {done} of {trials} trials done, {todo} to run"
        + (f", {workers} at a time" if workers > 1 else "")
        + f"; {direction} validation {metric} ({folder / 'study.db'})",
        quiet,
    )
    if todo:
        _run(plan, workers, metric, done, quiet)
    return write_report(optuna.load_study(study_name=name, storage=_storage(folder)), plan, metric)


def _run(plan: _Plan, workers: int, metric: str, done: int, quiet: bool) -> None:
    """Run the trials in this process (one job) or in `workers` processes, with a bar."""
    import multiprocessing

    from tqdm.auto import tqdm

    bar = tqdm(total=plan.trials, initial=done, desc="sweep", unit="trial", disable=quiet)

    def announce(trial) -> None:
        bar.update(1)
        if not quiet:
            bar.write(_describe(trial, metric))

    try:
        if workers == 1:
            _work(plan, multiprocessing.Lock(), announce)
            return
        ctx = multiprocessing.get_context("spawn")
        lock, errors = ctx.Lock(), ctx.SimpleQueue()
        procs = [ctx.Process(target=_worker, args=(plan, lock, errors)) for _ in range(workers)]
        for p in procs:
            p.start()
        storage = _storage(plan.folder)
        seen = {t.number for t in _finished(plan, storage)}
        while True:  # the workers write the study; this process reads it for the bar
            alive = any(p.is_alive() for p in procs)
            for t in _finished(plan, storage):
                if t.number not in seen:
                    seen.add(t.number)
                    announce(t)
            if not alive:
                break
            time.sleep(1.0)
        if not errors.empty():
            raise TunelabError(errors.get())
        failed = [p.exitcode for p in procs if p.exitcode]
        if failed:
            raise RuntimeError(f"{len(failed)} sweep worker(s) failed: see their errors above")
    finally:
        bar.close()


def _finished(plan: _Plan, storage) -> list:
    study = _optuna().load_study(study_name=plan.name, storage=storage)
    return [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
