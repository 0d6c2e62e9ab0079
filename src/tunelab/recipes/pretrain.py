"""`tunelab pretrain`: pre-train a model on a user's corpus, from scratch or continued.

corpus (streamed) -> tokenizer (trained on the training documents, or reused) -> token store
(memmap .bin in the run's work folder) -> objective's dataset + collate + model -> the one
training loop (validation loss/perplexity/accuracies every `train.eval_every` steps,
checkpoints, `--resume`) -> run folder that `tunelab finetune --model RUN` opens.

from tunelab import api
result = api.pretrain(api.build_pretrain_config(overrides={"pretrain.objective": "mlm"}))

Shares the work folder, resume and finishing code (`runs/`) with the finetune recipe.

Under torchrun every rank runs this recipe: rank 0 picks the run name and broadcasts it, alone
writes the tokenizer, the token store and the run folder, which the other ranks then read;
after training rank 0 alone validates and saves (`training/distributed.py`).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tunelab.config.parse import saved_overrides
from tunelab.config.pretrain import PretrainConfig, build_pretrain_config
from tunelab.errors import TunelabError
from tunelab.logs import say
from tunelab.runs.marker import RunMarker
from tunelab.runs.workdir import (
    LEFTOVERS,
    discard_if_fresh,
    finish_workdir,
    open_workdir,
    run_paths,
    saved_config,
    write_json,
)
from tunelab.training import distributed
from tunelab.training.tracking import check_trackers, log_results, tracking

TOKENIZER_DIR, DATA_DIR = "tokenizer", "data"


@dataclass
class PretrainResult:
    run_dir: Path
    metrics: dict[str, Any]


def _resume_config(cfg: PretrainConfig, out: Path, quiet: bool) -> PretrainConfig:
    name, saved = saved_config(out, cfg.run.name)
    say(f"resuming {name} from {out / f'.{name}.partial'}", quiet)
    return build_pretrain_config(
        overrides={
            **saved_overrides(saved),
            "run.resume": True,
            "run.name": name,
            "run.output_dir": str(out),
        }
    )


def _tokenizer(cfg: PretrainConfig, family: str, source: str | None, work: Path, quiet: bool):
    from tunelab.models.sources import load_tokenizer, resolve_source
    from tunelab.objectives.corpus import iter_documents, split_stream
    from tunelab.objectives.tokenizer import train_tokenizer

    p, c = cfg.pretrain, cfg.corpus
    saved = work / TOKENIZER_DIR
    if (saved / "tokenizer_config.json").is_file():
        return load_tokenizer(str(saved))
    if p.tokenizer == "train" and source is not None:
        say("continuing a checkpoint: reusing its tokenizer", quiet)
        tok = load_tokenizer(source)
    elif p.tokenizer == "train":
        kind = "byte-level BPE" if family == "decoder" else "WordPiece"
        say(f"training a {kind} tokenizer (vocab {p.vocab_size}) on the corpus", quiet)
        docs = split_stream(
            iter_documents(c.source, c.text_column, c.max_documents), c.validation_every, "train"
        )
        tok = train_tokenizer(docs, family, p.vocab_size)
    else:
        tok = load_tokenizer(resolve_source(p.tokenizer))
    tok.save_pretrained(saved)
    return tok


def _source_family(source: str) -> str:
    from tunelab.models.families import detect_family
    from tunelab.models.sources import load_config

    return detect_family(load_config(source, source))


def pretrain(cfg: PretrainConfig, quiet: bool = False) -> PretrainResult:
    """Pre-train as `cfg` says and save a run folder; returns it and its metrics.

    Raises:
        TunelabError: any user mistake (corpus, objective/family, tokenizer, model), before
            anything is written or with the unfinished run left in its `.partial` folder.
    """
    import torch
    from transformers import set_seed

    from tunelab.models.sources import load_tokenizer, resolve_source
    from tunelab.objectives import get_objective
    from tunelab.objectives.corpus import TokenStore, build_token_store, iter_documents
    from tunelab.objectives.evaluate import evaluate_objective, headline_metric
    from tunelab.objectives.presets import family_for
    from tunelab.objectives.tokenizer import check_tokenizer
    from tunelab.training.loop import train

    out = Path(cfg.run.output_dir)
    ctx = distributed.context(cfg.train.distributed)  # None in one process
    main = ctx is None or ctx.main
    quiet = quiet or not main  # one voice: rank 0's
    if cfg.run.resume:
        cfg = _resume_config(cfg, out, quiet)
    p, c = cfg.pretrain, cfg.corpus
    obj = get_objective(p.objective)
    family = family_for(p.objective, p.family)
    source = resolve_source(p.from_model) if p.from_model else None
    if source is not None and _source_family(source) != family:
        raise TunelabError(
            f"{p.from_model} is an {_source_family(source)} model, objective {p.objective} "
            f"trains {family} models: pick a matching --from or objective"
        )
    if p.tokenizer != "train":
        resolve_source(p.tokenizer)  # a missing tokenizer before any write
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    start = p.from_model.strip("/").split("/")[-1] if p.from_model else p.preset
    name = distributed.broadcast(
        cfg.run.name
        or f"pretrain-{p.objective.replace('+', '-')}-{start}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    if (out / name).exists():
        raise TunelabError(f"run folder {out / name} already exists: pick another --name")
    if next(iter_documents(c.source, c.text_column, 1), None) is None:  # before any write
        raise TunelabError(f"corpus {c.source} holds no text: pass a --corpus with documents")
    check_trackers(cfg.train.track)  # a missing tracker package: before any folder exists
    opened = distributed.on_main(lambda: open_workdir(out, name, cfg.run.resume, cfg.to_dict()))
    final, work = opened or run_paths(out, name)
    data = work / DATA_DIR
    with tracking(cfg.train.track if main else "none", work, out, cfg.to_dict()) as tracker:
        with discard_if_fresh(work) if main else nullcontext():

            def prepare():
                """Tokenizer and token store, written by rank 0 alone."""
                tok = _tokenizer(cfg, family, source, work, quiet)
                check_tokenizer(tok, p.objective)
                if not (data / "validation.json").is_file():
                    counts = build_token_store(
                        iter_documents(c.source, c.text_column, c.max_documents),
                        tok,
                        data,
                        c.validation_every,
                        obj.SENTENCES,
                        obj.separator(tok),
                        progress=not quiet,
                    )
                    write_json(data / "counts.json", counts)
                return tok

            tok = distributed.on_main(prepare)
            if tok is None:  # another rank: read what rank 0 wrote
                tok = load_tokenizer(str(work / TOKENIZER_DIR))
            counts = yaml.safe_load((data / "counts.json").read_text())
            stores = {s: TokenStore.open(data, s) for s in ("train", "validation")}
            train_ds = obj.dataset(stores["train"], tok, p)
            val_ds = obj.dataset(stores["validation"], tok, p, c.max_validation_blocks)
            if len(train_ds) == 0:
                raise TunelabError(
                    f"the corpus gave no training examples ({counts['train_tokens']} tokens, "
                    f"blocks of {p.seq_len}): give more text or a smaller --seq-len"
                )
        say(
            f"corpus: {counts['train_documents']} train / {counts['validation_documents']} "
            f"validation documents, {counts['train_tokens']:,} / {counts['validation_tokens']:,} "
            f"tokens -> {len(train_ds)} training and {len(val_ds)} validation examples",
            quiet,
        )

        set_seed(cfg.train.seed)
        model = obj.build_model(p, tok, source)
        core = getattr(model, "kept", model)  # the model the run folder holds
        vocab = core.get_input_embeddings().num_embeddings
        if len(tok) > vocab:
            raise TunelabError(
                f"the tokenizer has {len(tok)} tokens, the model embeds {vocab}: use the model's "
                "own tokenizer (drop --tokenizer)"
            )
        total = sum(q.numel() for q in model.parameters())
        say(
            f"{p.objective} on a {'new ' + p.preset if source is None else p.from_model} "
            f"{family}: {total:,} parameters, vocab {len(tok)}, seq_len {p.seq_len}",
            quiet,
        )

        def validate(m):
            return evaluate_objective(
                m,
                obj,
                val_ds,
                stores["validation"],
                tok,
                p,
                cfg.train.eval_batch_size,
                cfg.train.seed + 17,
                progress=not quiet,
            )

        collate = obj.make_collate(tok, p, stores["train"])
        result = train(
            model,
            train_ds,
            collate,
            cfg.train,
            work,
            evaluate=validate if len(val_ds) else None,
            resume=cfg.run.resume,
            show_progress=not quiet,
            tracker=tracker,
        )
        if not main:  # rank 0 validates and saves
            return PretrainResult(final, {})
        model = result.model  # under FSDP: the gathered weights
        model.eval()
        metrics: dict[str, Any] = {
            "train": {
                "steps": result.steps,
                "epochs": round(result.epochs, 3),
                "seconds": round(result.train_seconds, 1),
                "examples_per_second": round(result.samples_per_second, 2),
                "tokens_per_second": round(result.samples_per_second * p.seq_len, 1),
                "best_step": result.best_step,
                "best_validation_loss": result.best_metric,
                "parameters": total,
            },
            "corpus": counts,
        }
        if len(val_ds):
            metrics["validation"] = validate(model)
        _finish(work, final, obj, model, tok, cfg, metrics, family, source, headline_metric)
        log_results(tracker, metrics, result.steps, final)
    return PretrainResult(final, metrics)


def _finish(work, final, obj, model, tok, cfg, metrics, family, source, headline) -> None:
    """Write weights, tokenizer, metrics, curves and marker; drop the work files; rename."""
    from tunelab.runs.save import write_run_files

    p = cfg.pretrain
    obj.save(model, work)
    tok.save_pretrained(work)
    marker = RunMarker(
        task="pretrain",
        objective=p.objective,
        family=family,
        preset=None if source else p.preset,
        base_model=p.from_model,
        base_source=source,
        tokenizer=p.tokenizer if p.tokenizer != "train" or source else "trained",
        vocab_size=len(tok),
        seq_len=p.seq_len,
        max_length=p.seq_len,
        weights="full",
    )
    write_run_files(work, marker, cfg.to_dict(), metrics, headline(p.objective))
    finish_workdir(work, final, (*LEFTOVERS, DATA_DIR, TOKENIZER_DIR))
