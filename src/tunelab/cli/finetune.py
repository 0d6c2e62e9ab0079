"""`tunelab finetune`: fine-tune a classifier, or a generator with --task causal_lm|seq2seq."""

from __future__ import annotations

import argparse

from tunelab.cli.flags import ALIASES, FLAGS, add_option_sections, add_short_forms, verb_parser
from tunelab.config.finetune import SECTIONS, Config
from tunelab.config.parse import field_docs

HELP = (
    "fine-tune a classifier, or with --task causal_lm|seq2seq a generator (config YAML "
    "+ --section.key value overrides)"
)
DESCRIPTION = (
    "Fine-tune, validate, test and save a run folder. Precedence: defaults < "
    "CONFIG < flags. With no arguments: MiniLM on the embedded BBC News, strategy full."
)
USAGE = "tunelab finetune [CONFIG] [--strategy NAME] [--section.key VALUE ...]"


def add_parser(sub) -> None:
    from tunelab.strategies import STRATEGIES

    p = verb_parser(sub, "finetune", HELP, DESCRIPTION, USAGE)
    p.add_argument("config", nargs="?", help="YAML config file (see configs/)")
    p.add_argument(
        "--strategy",
        dest="strategy",
        default=argparse.SUPPRESS,
        help=f"fine-tuning strategy: {', '.join(STRATEGIES)} (default: full)",
    )
    p.add_argument(
        "--task",
        dest="task",
        default=argparse.SUPPRESS,
        help=field_docs(Config)["task"] + " (default: classification)",
    )
    add_short_forms(p, ALIASES, FLAGS)
    add_option_sections(p, SECTIONS, "options")


def run(a: argparse.Namespace) -> None:
    from tunelab import api
    from tunelab.evaluation.metrics import format_metrics_table

    args = {k: v for k, v in vars(a).items() if k != "verb"}
    config = args.pop("config", None)
    cfg = api.build_config(config, args)
    result = api.finetune(cfg)
    test = result.metrics.get("test")
    if test and "labels" not in test:  # a generative run: loss and perplexity per token
        print("\ntest " + "  ".join(f"{k} {v:.4g}" for k, v in test.items()))
    elif test:
        from tunelab.evaluation.baselines import format_baselines

        print("\ntest metrics\n" + format_metrics_table(test))
        block = format_baselines(test, result.metrics, cfg.train.metric)
        if block:
            print("\n" + block)
    for p in result.predictions:
        print(f"  {p['label']:<14} {p['score']:.3f}  {p['text'][:70]}")
    print(f"\nrun saved to {result.run_dir}")
