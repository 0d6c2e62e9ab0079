"""`tunelab pretrain`: pre-train an encoder (mlm, nsp, mlm+nsp, rtd) or decoder (clm) on a
corpus, from a size preset or continued from a model/run folder; see tunelab.pretrain."""

from __future__ import annotations

import argparse
import os

from tunelab.cli.flags import ALIASES, verb_parser
from tunelab.errors import TunelabError

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
    "--batch-size": "train.batch_size",
    # the train and run short forms finetune has too (--epochs, --lr, --seed, --output, --name)
    **{k: v for k, v in ALIASES.items() if v.startswith(("train.", "run."))},
}
SWITCHES = {"--resume": "run.resume", "--whole-word-mask": "pretrain.whole_word_mask"}


HELP = "pre-train a model on a corpus (clm, mlm, nsp, mlm+nsp, rtd)"
DESCRIPTION = (
    "Pre-train on your own corpus, from scratch (a size preset and a tokenizer "
    "trained on the corpus) or continued from a model or run folder; the run folder opens "
    "with `tunelab finetune --model RUN`. Precedence: defaults < CONFIG < flags."
)
USAGE = (
    "tunelab pretrain [CONFIG] --objective clm|mlm|nsp|mlm+nsp|rtd [--corpus SRC] "
    "[--preset tiny|small | --from MODEL] [--section.key VALUE ...]"
)


def add_parser(sub) -> None:
    from tunelab.cli.finetune import add_nproc
    from tunelab.cli.flags import add_section, add_short_forms
    from tunelab.config.pretrain import PretrainConfig
    from tunelab.objectives.options import OBJECTIVES

    p = verb_parser(sub, "pretrain", HELP, DESCRIPTION, USAGE)
    p.add_argument("config", nargs="?", help="YAML config file (see configs/pretrain-*.yaml)")
    add_short_forms(p, SHORT, SWITCHES, {"--objective": list(OBJECTIVES)})
    add_nproc(p)
    defaults = PretrainConfig()
    for name in ("corpus", "pretrain", "train", "run"):
        add_section(p, name, getattr(defaults, name), f"{name} options")


def run(args: argparse.Namespace) -> None:
    from tunelab import api
    from tunelab.cli.finetune import relaunch

    if relaunch("pretrain", args):
        return
    values = {k: v for k, v in vars(args).items() if k not in ("verb", "config", "nproc")}
    if "pretrain.preset" in values and "pretrain.from_model" in values:
        raise TunelabError("--preset builds a new model and --from continues one: pass one")
    cfg = api.build_pretrain_config(args.config, values)
    result = api.pretrain(cfg)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun: rank 0 reports
        return
    val = result.metrics.get("validation", {})
    shown = {k: v for k, v in val.items() if isinstance(v, float)}
    print("\nvalidation " + "  ".join(f"{k} {v:.4f}" for k, v in shown.items()))
    print(
        f"\nrun saved to {result.run_dir}\nfine-tune it: tunelab finetune --model {result.run_dir}"
    )
