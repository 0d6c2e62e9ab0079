"""`tunelab pretrain`: pre-train an encoder (mlm, nsp, mlm+nsp, rtd) or decoder (clm) on a
corpus, from a size preset or continued from a model/run folder; see tunelab.pretrain."""

from __future__ import annotations

import argparse

SHORT = {
    "--objective": "pretrain.objective",
    "--corpus": "corpus.source",
    "--text-column": "corpus.text_column",
    "--family": "pretrain.family",
    "--preset": "pretrain.preset",
    "--from": "pretrain.from_model",
    "--tokenizer": "pretrain.tokenizer",
    "--vocab-size": "pretrain.vocab_size",
    "--seq-len": "pretrain.seq_len",
    "--max-steps": "train.max_steps",
    "--epochs": "train.epochs",
    "--lr": "train.lr",
    "--batch-size": "train.batch_size",
    "--seed": "train.seed",
    "--output": "run.output_dir",
    "--name": "run.name",
}
SWITCHES = {"--resume": "run.resume", "--whole-word-mask": "pretrain.whole_word_mask"}


def add_parser(sub) -> None:
    from tunelab.objectives.options import OBJECTIVES, PretrainRun

    p = sub.add_parser(
        "pretrain",
        usage="tunelab pretrain [CONFIG] --objective clm|mlm|nsp|mlm+nsp|rtd [--corpus SRC] "
        "[--preset tiny|small | --from MODEL] [--section.key VALUE ...]",
        help="pre-train a model on a corpus (clm, mlm, nsp, mlm+nsp, rtd)",
        description="Pre-train on your own corpus, from scratch (a size preset and a tokenizer "
        "trained on the corpus) or continued from a model or run folder; the run folder opens "
        "with `tunelab finetune --model RUN`. Precedence: defaults < CONFIG < flags.",
        allow_abbrev=False,
    )
    p.add_argument("config", nargs="?", help="YAML config file (see configs/pretrain-*.yaml)")
    short = p.add_argument_group("short forms")
    for flag, key in SHORT.items():
        extra = {"choices": OBJECTIVES} if flag == "--objective" else {}
        short.add_argument(
            flag, dest=key, default=argparse.SUPPRESS, help=f"same as --{key}", **extra
        )
    for flag, key in SWITCHES.items():
        short.add_argument(
            flag,
            dest=key,
            action="store_const",
            const="true",
            default=argparse.SUPPRESS,
            help=f"same as --{key} true",
        )
    defaults = PretrainRun()
    for name in ("corpus", "pretrain", "train", "run"):
        _add_section(p, name, getattr(defaults, name))


def _add_section(p: argparse.ArgumentParser, prefix: str, section) -> None:
    """--prefix.key options with this verb's defaults (the train section's differ from
    finetune's) and the dataclass attribute docstrings as help."""
    import dataclasses

    from tunelab.config import field_docs

    group = p.add_argument_group(f"{prefix} options")
    docs = field_docs(type(section))
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        default = "none" if value is None else str(value)
        group.add_argument(
            f"--{prefix}.{f.name}",
            dest=f"{prefix}.{f.name}",
            metavar=f.name.upper(),
            default=argparse.SUPPRESS,
            nargs="+" if isinstance(value, list) else None,
            help=f"{docs.get(f.name, '')} (default: {default})".replace("%", "%%"),
        )


def run(args: argparse.Namespace) -> None:
    from tunelab.objectives.options import build_pretrain_config
    from tunelab.pretrain import pretrain

    values = {k: v for k, v in vars(args).items() if k not in ("verb", "config")}
    cfg = build_pretrain_config(args.config, values)
    result = pretrain(cfg)
    val = result.metrics.get("validation", {})
    shown = {k: v for k, v in val.items() if isinstance(v, float)}
    print("\nvalidation " + "  ".join(f"{k} {v:.4f}" for k, v in shown.items()))
    print(
        f"\nrun saved to {result.run_dir}\nfine-tune it: tunelab finetune --model {result.run_dir}"
    )
