"""`tunelab finetune`: the one fine-tuning recipe, for every task.

resume? -> read splits -> load the task's model -> encode -> apply the strategy -> work folder
-> the ONE training loop -> test -> save the run folder (-> classify cfg texts). The task
(`tasks/`) supplies only what differs: data, model, encoding, evaluation, marker fields.
Generative tasks also measure the base model before training, so metrics.json holds the
base model's loss and perplexity beside the tuned model's; a classifier's metrics.json holds
its baselines beside it (`evaluation/baselines.py`: `baselines`, `warnings`).

Under torchrun every rank runs this recipe: rank 0 picks the run name (it has a timestamp) and
broadcasts it, alone creates, writes and renames the run folder, and after training alone
tests and saves; the other ranks train and return (`training/distributed.py`).
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.config.finetune import Config, build_config
from tunelab.config.parse import saved_overrides
from tunelab.errors import TunelabError
from tunelab.logs import say
from tunelab.runs.marker import RunMarker
from tunelab.runs.workdir import discard_if_fresh, open_workdir, run_paths, saved_config
from tunelab.strategies import get_strategy, strategy_info
from tunelab.tasks import LM_METRICS
from tunelab.tasks.base import Encoded, Task, get_task
from tunelab.training import distributed
from tunelab.training.tracking import Tracker, check_trackers, log_results, tracking

CLASSIFIER_MIN_STEPS = 150
"""--train.min_steps when left unset for a classifier (docs/small-data.md)."""


@dataclass
class FinetuneResult:
    run_dir: Path
    metrics: dict[str, Any]
    predictions: list[dict[str, Any]]


def peak_memory_mib() -> float:
    """Peak memory of this process so far: the GPU's allocator peak when training on CUDA,
    else the peak resident set size (what a user's machine had to hold)."""
    import resource

    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return round(kib / 1024, 1)


def count_params(model) -> tuple[int, int]:
    """(trainable, total) parameters of `model`."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def train_metrics(result, model, trainable: int, total: int, view=None) -> dict[str, Any]:
    """The `train` block of metrics.json from the loop's result (`view`: a strategy's
    TrainView, whose preparation time counts as training time)."""
    # a strategy may unfreeze more as it goes (gradual): count what trained by the end
    trainable = max(trainable, count_params(model)[0])
    # a strategy's preparation (feature extraction) is part of what its training costs
    seconds = result.train_seconds + (view.seconds if view else 0.0)
    samples = result.samples_per_second * result.train_seconds
    return {
        "steps": result.steps,
        "epochs": round(result.epochs, 3),
        "seconds": round(seconds, 1),
        "samples_per_second": round(samples / max(seconds, 1e-9), 2),
        "best_step": result.best_step,
        "best_validation": result.best_metric,
        "stopped_early": result.stopped_early,
        "trainable_params": trainable,
        "total_params": total,
        "peak_memory_mib": peak_memory_mib(),
    }


def resume_config(cfg: Config, quiet: bool) -> Config:
    """The saved config of the unfinished run to resume (`cfg.run.name`, or the newest)."""
    out = Path(cfg.run.output_dir)
    name, saved = saved_config(out, cfg.run.name)
    say(f"resuming {name} from {out / f'.{name}.partial'}", quiet)
    return build_config(
        overrides={
            **saved_overrides(saved),
            "strategy": saved["strategy"],
            "task": saved.get("task", "classification"),
            "run.resume": True,
            "run.name": name,
        }
    )


def checked_config(cfg: Config, task: Task) -> Config:
    """`cfg` checked against its task; a generative task validates on loss unless perplexity."""
    info = strategy_info(cfg.strategy)
    if cfg.run.merge and not info.can_merge:
        raise TunelabError(
            f"strategy {cfg.strategy} cannot be merged into the base weights: drop --merge"
        )
    if not task.generative:
        return cfg
    if cfg.strategy == "features":
        raise TunelabError(
            "features trains a classification head on frozen features and a generative task has"
            " no such head: use lora, adapter, freeze or gradual to train part of the model"
        )
    if cfg.run.predict:
        raise TunelabError(
            "run.predict classifies texts: generate with the finished run folder instead"
        )
    if cfg.train.metric.removeprefix("eval_") in LM_METRICS:
        return cfg
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, metric="loss"))


def _check_positions(cfg: Config, options, loaded, enc: Encoded) -> None:
    """Virtual tokens (prefix / prompt / ptuning) take positions too: an encoder with learned
    absolute positions has only max_position_embeddings of them."""
    virtual = getattr(options, "num_virtual_tokens", 0) or 0
    limit = getattr(loaded.model.config, "max_position_embeddings", None)
    if not (virtual and limit and loaded.family == "encoder"):
        return
    longest = max(len(x["input_ids"]) for v in enc.data.values() for x in v.items)
    if longest + virtual > limit:
        raise TunelabError(
            f"{longest} tokens + {virtual} virtual tokens exceed the model's {limit} "
            f"positions: set --data.max_length {limit - virtual} or fewer "
            f"--{cfg.strategy}.num_virtual_tokens"
        )


def _baselines(splits, test: dict[str, Any], metric: str, quiet: bool) -> dict[str, Any]:
    """metrics.json's `baselines`, `warnings` (and `baseline_notes`): the majority-class and
    TF-IDF + logistic-regression baselines on the model's own train/test split."""
    from tunelab.evaluation.baselines import baseline_report

    say("baselines: majority class and TF-IDF + logistic regression on the same split", quiet)
    return baseline_report(splits["train"], splits["test"], test, metric)


def run_name(cfg: Config) -> str:
    model = cfg.model.name.strip("/").split("/")[-1]
    return cfg.run.name or f"{model}-{cfg.strategy}-{time.strftime('%Y%m%d-%H%M%S')}"


def finetune(cfg: Config, quiet: bool = False, tracker: Tracker | None = None) -> FinetuneResult:
    """Fine-tune as `cfg` says (a classifier, or with cfg.task causal_lm / seq2seq a language
    model on prompt/response pairs), test it, save the run folder, classify cfg.run.predict.

    Raises:
        TunelabError: any user mistake (data, model, strategy, options), before anything is
            written, or with the unfinished run left only in its `.partial` folder.
    """
    import torch
    from transformers import set_seed

    from tunelab.data.split import check_labels
    from tunelab.runs.save import finish_run
    from tunelab.tasks.balance import balance_encoded
    from tunelab.training.loop import plan_steps, train

    ctx = distributed.context(cfg.train.distributed)  # None in one process
    main = ctx is None or ctx.main
    quiet = quiet or not main  # one voice: rank 0's
    if cfg.run.resume:
        cfg = resume_config(cfg, quiet)
    task = get_task(cfg.task)
    cfg = checked_config(cfg, task)
    check_trackers(cfg.train.track)  # a missing tracker package: before any folder exists
    if cfg.train.min_steps is None:  # classifiers on small data need a floor (small-data.md)
        floor = 0 if task.generative else CLASSIFIER_MIN_STEPS
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, min_steps=floor))
    strategy = get_strategy(cfg.strategy)
    distributed.refuse(cfg.strategy, cfg.train.distributed, strategy.train_view is not None)
    options = strategy.options(cfg.strategy_options)
    splits = task.read_splits(cfg.data, cfg.train.seed, quiet)
    say(task.describe(splits), quiet)

    # a new head's weights come from the global RNG: seed it first, so a seed means one run
    set_seed(cfg.train.seed)
    if cfg.train.threads:  # the base model's evaluation runs before the loop sets it
        torch.set_num_threads(cfg.train.threads)
    loaded = task.load(cfg.model, splits)
    enc = task.encode(splits, loaded, cfg.data, cfg.train.eval_batch_size)
    if not task.generative:  # uneven classes: a weighted loss or repeated examples
        labels = check_labels(splits["train"])
        enc, said = balance_encoded(enc, cfg.data.balance, labels, cfg.train.seed)
        if said:
            say(f"--data.balance {cfg.data.balance}: {said}", quiet)
    before = {}
    if task.generative and main:
        if torch.cuda.is_available():  # where the loop will train it: evaluate the base there
            loaded.model.to("cuda")
        before = {
            k: enc.evaluate(loaded.model, enc.data[k], f"base model: {k}", not quiet)
            for k in ("validation", "test")
            if k in enc.data
        }
        if before:
            say(
                "base model: "
                + ", ".join(
                    f"{k} loss {v['loss']:.4f} (ppl {v['perplexity']:.2f})"
                    for k, v in before.items()
                ),
                quiet,
            )

    _, total_steps = plan_steps(len(enc.data["train"]), cfg.train)
    model = strategy.build(loaded.model, options, loaded.family, total_steps)
    trainable, total = count_params(model)
    if trainable == 0:
        raise TunelabError(f"strategy {cfg.strategy} left nothing to train: check its options")
    what = f"{loaded.family}, {task.name}" if task.generative else loaded.family
    say(
        f"model {cfg.model.name} ({what}), strategy {cfg.strategy}: training "
        f"{trainable:,} of {total:,} parameters ({100 * trainable / total:.2f}%)",
        quiet,
    )
    _check_positions(cfg, options, loaded, enc)
    out, name = Path(cfg.run.output_dir), distributed.broadcast(run_name(cfg))
    opened = distributed.on_main(lambda: open_workdir(out, name, cfg.run.resume, cfg.to_dict()))
    final, work = opened or run_paths(out, name)

    with tracking(
        cfg.train.track if main else "none",
        work,
        out,
        cfg.to_dict(),
        extra=tracker if main else None,
    ) as tracker:
        with discard_if_fresh(work) if main else nullcontext():
            view = None
            if strategy.train_view is not None:
                view = strategy.train_view(
                    model, options, enc.data, enc.collate, cfg.train.eval_batch_size, not quiet
                )
            fit_model, fit_data, fit_collate = (
                (view.model, view.datasets, view.collate)
                if view
                else (model, enc.data, enc.collate)
            )
            hooks = strategy.bound_hooks(options)
            result = train(
                fit_model,
                fit_data["train"],
                fit_collate,
                cfg.train,
                work,
                evaluate=(
                    (
                        lambda m: enc.evaluate(
                            m, fit_data["validation"], "validating", not quiet, fit_collate
                        )
                    )
                    if "validation" in fit_data
                    else None
                ),
                before_step=hooks.before_step,
                after_step=hooks.after_step,
                param_groups=hooks.param_groups,
                resume=cfg.run.resume,
                loss_fn=enc.loss_fn if view is None else None,
                show_progress=not quiet,
                tracker=tracker,
            )
        if not main:  # rank 0 tests and saves
            return FinetuneResult(final, {}, [])
        model = result.model if view is None else model  # under FSDP: the gathered weights
        metrics: dict[str, Any] = {"train": train_metrics(result, model, trainable, total, view)}
        metrics["data"] = {k: len(v) for k, v in splits.items()}  # rows per split (model card)
        if before:
            metrics["base"] = before
        if task.generative and "validation" in enc.data:
            metrics["validation"] = enc.evaluate(
                model, enc.data["validation"], "validating", not quiet
            )
        if "test" in enc.data:
            metrics["test"] = enc.evaluate(model, enc.data["test"], "testing", not quiet)
            if not task.generative:
                metrics |= _baselines(splits, metrics["test"], cfg.train.metric, quiet)
        marker = RunMarker(
            task=task.name,
            family=loaded.family,
            strategy=cfg.strategy,
            strategy_options=dict(cfg.strategy_options),
            base_model=cfg.model.name,
            gguf_file=cfg.model.gguf_file,
            base_source=loaded.source,
            **task.marker_fields(loaded, cfg.data, splits),
        )
        finish_run(
            work, final, model, loaded.tokenizer, marker, cfg.to_dict(), metrics, cfg.run.merge
        )
        log_results(tracker, metrics, result.steps, final)
        preds = []
        if cfg.run.predict:
            from tunelab.recipes.predict import predict

            preds = predict(final, cfg.run.predict, quiet=True)
    return FinetuneResult(final, metrics, preds)
