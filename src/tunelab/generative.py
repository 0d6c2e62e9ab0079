"""Fine-tuning for generative tasks: causal_lm (instruction / dialog tuning) and seq2seq.

The same path as `api.finetune` (resume, `.partial` run folder, strategy build, the ONE
training loop, metrics.json, curves.png, atomic finish) with pairs instead of labelled texts:
prompt/response pairs are read by `data.pairs`, encoded by `tasks.causal_lm` (loss on the
response tokens only) or `tasks.seq2seq`, and the best checkpoint is the one with the lowest
validation loss per response token. metrics.json holds the base model's loss and perplexity
(before any training) beside the tuned model's, on the validation and test splits.

Every registered strategy trains a language model too, except `features`, which trains only a
classification head on frozen features: a generative task has no such head, so it is refused.
`open_run` reads a generative run folder back (full weights, trained tensors or a peft adapter
over its base); `tunelab.models.load_lm(run_folder)` calls it.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import torch

from tunelab.config import Config
from tunelab.errors import TunelabError
from tunelab.models import Loaded

GENERATIVE_TASKS = ("causal_lm", "seq2seq")
LM_METRICS = ("loss", "perplexity")


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, flush=True)


def load_base(
    name: str, task: str, gguf_file: str | None = None, dtype: torch.dtype = torch.float32
) -> Loaded:
    """The model a generative task starts from: a causal LM for causal_lm; for seq2seq an
    encoder-decoder LM, or a bert2bert warm-started from an encoder (e.g. `minilm`).

    Raises:
        TunelabError: the model's family does not fit the task (with the task that fits).
    """
    from transformers import AutoConfig

    from tunelab.models import detect_family, load_lm, load_tokenizer, resolve_source
    from tunelab.tasks.seq2seq import warm_start_bert2bert

    source = resolve_source(name, gguf_file)
    try:
        family = detect_family(AutoConfig.from_pretrained(source))
    except OSError as exc:
        raise TunelabError(
            f"cannot load model {name!r} ({str(exc).splitlines()[0]}): pass a local folder, a "
            ".gguf file, a run folder or an embedded name"
        ) from None
    if task == "seq2seq" and family == "encoder":
        tok = load_tokenizer(source)
        model = warm_start_bert2bert(source, tok).to(dtype)
        return Loaded(model, tok, "encoder-decoder", source)
    if task == "seq2seq" and family == "decoder":
        raise TunelabError(
            f"{name} is a decoder: seq2seq needs an encoder-decoder (or an encoder to warm-start"
            " a bert2bert); train a decoder on the same pairs with --task causal_lm"
        )
    if task == "causal_lm" and family != "decoder":
        fix = "use --task seq2seq" if family == "encoder-decoder" else "pick a decoder model"
        raise TunelabError(f"{name} is an {family}: causal_lm needs a decoder; {fix}")
    return load_lm(name, gguf_file, dtype)


def load_pair_splits(cfg: Config, quiet: bool = False) -> dict[str, list[dict[str, Any]]]:
    """train / validation / test pairs (split files, or one source split by prompt)."""
    from tunelab.data.pairs import clean_pairs, load_pairs, split_pairs

    d, seed = cfg.data, cfg.train.seed

    def read(source: str, what: str) -> list[dict[str, Any]]:
        pairs, report = clean_pairs(
            load_pairs(source, d.prompt_column, d.response_column), d.dedupe
        )
        _say(f"{what} {source}: {report}", quiet)
        if not pairs:
            raise TunelabError(f"{source} has no usable prompt/response pairs: check its columns")
        return pairs

    if d.train_file:
        train = read(d.train_file, "train")
        val = read(d.validation_file, "validation") if d.validation_file else None
        test = read(d.test_file, "test") if d.test_file else None
        cut = split_pairs(
            train, 0.0 if test else d.test_size, 0.0 if val is not None else d.val_size, seed
        )
        return {
            "train": cut["train"],
            "validation": val if val is not None else cut["validation"],
            "test": test if test else cut["test"],
        }
    if d.source == "bbc-news":
        raise TunelabError(
            "bbc-news is classification data: give prompt/response pairs with --data (chatterbot,"
            " news-headlines, django-de, django-fr, or a .jsonl/.csv file)"
        )
    pairs = read(d.source, "data")
    if d.limit and d.limit < len(pairs):
        pairs = split_pairs(pairs, d.limit / len(pairs), 0.0, seed)["test"]
    return split_pairs(pairs, d.test_size, d.val_size, seed)


def encode_splits(
    splits: dict[str, list[dict[str, Any]]], loaded: Loaded, cfg: Config, task: str
) -> tuple[dict[str, Any], Any, Any]:
    """(encoded datasets by split, training collate, evaluate(model, data, desc))."""
    from tunelab.tasks import causal_lm, seq2seq

    tok, d, bs = loaded.tokenizer, cfg.data, cfg.train.eval_batch_size
    if task == "causal_lm":
        data = {
            k: causal_lm.encode_pairs(
                v, tok, d.max_length, d.chat_template, packing=d.packing and k == "train"
            )
            for k, v in splits.items()
            if v
        }
        collate = causal_lm.make_collate(tok.pad_token_id)
        shifted = True
    else:
        start = getattr(loaded.model.config, "decoder_start_token_id", None)
        data = {
            k: seq2seq.encode_pairs(v, tok, d.max_length, d.max_target_length, start)
            for k, v in splits.items()
            if v
        }
        collate = seq2seq.make_collate(tok)
        shifted = False

    def evaluate(model, dataset, desc: str, progress: bool) -> dict[str, float]:
        return causal_lm.evaluate_lm(
            model, dataset, collate, bs, shifted=shifted, progress=progress, desc=desc
        )

    return data, collate, evaluate


def _lm_metric(cfg: Config) -> Config:
    """The config with a language-model validation metric (loss unless perplexity is asked)."""
    if cfg.train.metric.removeprefix("eval_") in LM_METRICS:
        return cfg
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, metric="loss"))


def finetune_generative(cfg: Config, quiet: bool = False):
    """Fine-tune a language model on prompt/response pairs as `cfg` says (cfg.task is
    causal_lm or seq2seq); test it, save the run folder. Called by `api.finetune`.

    Raises:
        TunelabError: any user mistake (data, model, strategy, options), before anything is
            written, or with the unfinished run left only in its `.partial` folder.
    """
    from transformers import set_seed

    from tunelab.api import (
        FinetuneResult,
        apply_strategy,
        checked_strategy,
        open_workdir,
        train_metrics,
    )
    from tunelab.runfolder import finish_run
    from tunelab.tasks.causal_lm import has_chat_template
    from tunelab.training.loop import train

    task = cfg.task
    if task not in GENERATIVE_TASKS:
        raise TunelabError(f"task {task!r} is not generative: use api.finetune")
    if cfg.strategy == "features":
        raise TunelabError(
            "features trains a classification head on frozen features and a generative task has"
            " no such head: use lora, adapter, freeze or gradual to train part of the model"
        )
    if cfg.run.predict:
        raise TunelabError(
            "run.predict classifies texts: generate with the finished run folder instead"
        )
    cfg = _lm_metric(cfg)
    strategy, options = checked_strategy(cfg)
    splits = load_pair_splits(cfg, quiet)
    _say("split: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()), quiet)

    set_seed(cfg.train.seed)
    if cfg.train.threads:  # the base model's evaluation runs before the loop sets it
        torch.set_num_threads(cfg.train.threads)
    loaded = load_base(cfg.model.name, task, cfg.model.gguf_file)
    if torch.cuda.is_available():  # where the loop will train it: evaluate the base there too
        loaded.model.to("cuda")
    data, collate, evaluate = encode_splits(splits, loaded, cfg, task)
    before = {
        k: evaluate(loaded.model, data[k], f"base model: {k}", not quiet)
        for k in ("validation", "test")
        if k in data
    }
    if before:
        _say(
            "base model: "
            + ", ".join(
                f"{k} loss {v['loss']:.4f} (ppl {v['perplexity']:.2f})" for k, v in before.items()
            ),
            quiet,
        )
    model, trainable, total = apply_strategy(
        strategy, options, loaded, cfg, len(data["train"]), f"{loaded.family}, {task}", quiet
    )
    final, work = open_workdir(cfg)
    hooks = strategy.before_step, strategy.after_step, strategy.param_groups
    try:
        result = train(
            model,
            data["train"],
            collate,
            cfg.train,
            work,
            evaluate=(
                (lambda m: evaluate(m, data["validation"], "validating", not quiet))
                if "validation" in data
                else None
            ),
            before_step=(lambda m, s, e: hooks[0](m, options, s, e)) if hooks[0] else None,
            after_step=(lambda m, s: hooks[1](m, options, s)) if hooks[1] else None,
            param_groups=(lambda m, lr, wd: hooks[2](m, options, lr, wd)) if hooks[2] else None,
            resume=cfg.run.resume,
            show_progress=not quiet,
        )
    except TunelabError:
        if not (work / "checkpoint").exists():
            shutil.rmtree(work, ignore_errors=True)
        raise
    metrics: dict[str, Any] = {"train": train_metrics(result, model, trainable, total)}
    if before:
        metrics["base"] = before
    if "validation" in data:
        metrics["validation"] = evaluate(model, data["validation"], "validating", not quiet)
    if "test" in data:
        metrics["test"] = evaluate(model, data["test"], "testing", not quiet)
    tok = loaded.tokenizer
    marker = {
        "task": task,
        "strategy": cfg.strategy,
        "strategy_options": dict(cfg.strategy_options),
        "family": loaded.family,
        "base_model": cfg.model.name,
        "gguf_file": cfg.model.gguf_file,
        "base_source": loaded.source,
        "max_length": cfg.data.max_length,
        "chat_template": task == "causal_lm" and cfg.data.chat_template and has_chat_template(tok),
    }
    if task == "seq2seq":
        marker["max_target_length"] = cfg.data.max_target_length
    finish_run(work, final, model, tok, marker, cfg.to_dict(), metrics, cfg.run.merge)
    return FinetuneResult(final, metrics, [])


def open_run(run: Path, marker: dict[str, Any], dtype: torch.dtype = torch.float32) -> Loaded:
    """A generative run folder that holds no full weights, ready for generation: its base
    model with the trained tensors copied in (`partial`) or its peft adapter (`adapter`)."""
    from tunelab.models import load_tokenizer
    from tunelab.runfolder import TRAINED_FILE, apply_trained

    base = load_base(marker["base_model"], marker["task"], marker.get("gguf_file"), dtype)
    tok = load_tokenizer(str(run))
    if (run / TRAINED_FILE).is_file():
        model = apply_trained(run, marker, base.model, base.family)
    elif (run / "adapter_config.json").is_file():
        from peft import PeftModel

        from tunelab.strategies.peft_common import prepare_loaded

        model = prepare_loaded(PeftModel.from_pretrained(base.model, run))
    else:
        raise TunelabError(f"{run} has no weights (config.json or adapter_config.json): rerun it")
    return Loaded(model.eval(), tok, base.family, str(run))
