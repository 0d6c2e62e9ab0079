"""`tunelab sweep`: search fine-tuning hyper-parameters with Optuna (trials are run folders)."""

from __future__ import annotations

import argparse

from tunelab.cli.finetune import add_strategy_and_task
from tunelab.cli.flags import ALIASES, FLAGS, add_option_sections, add_short_forms, verb_parser
from tunelab.config.finetune import SECTIONS

HELP = "search fine-tuning hyper-parameters (Optuna TPE + median pruning; trials are run folders)"
DESCRIPTION = (
    "Fine-tune --trials times with values drawn from --space, each trial a run folder "
    "OUTPUT/SWEEP/trial-NNN; trials falling behind the median at an evaluation stop early. "
    "The study is OUTPUT/SWEEP/study.db: the same command again continues it to --trials in "
    "all. Writes report.md, report.json and sweep.png (the metric against each parameter). "
    "Every finetune option sets the base config (defaults < CONFIG < flags)."
)
USAGE = (
    "tunelab sweep [CONFIG] --space SPEC [--trials N] [--jobs J] [--metric M] "
    "[--study-name NAME] [--section.key VALUE ...]"
)
SPACE_HELP = (
    "parameters to search, comma-separated (or several --space): KEY=LOW..HIGH a range (an int "
    "range when both ends are ints), :log after it samples on a log scale, KEY=A,B,C a choice; "
    "KEY is a finetune option (train.lr, lora.r, strategy) or a short form (lr, batch_size, "
    "epochs, r for the strategy's options, model). Example: lr=1e-5..1e-3:log,lora.r=4,8,16"
)
# --name and --resume name and resume one run; a sweep names its trials and resumes itself
SWEEP_ALIASES = {k: v for k, v in ALIASES.items() if k != "--name"} | {"--metric": "train.metric"}
SWEEP_FLAGS = {k: v for k, v in FLAGS.items() if k != "--resume"}


def add_parser(sub) -> None:
    p = verb_parser(sub, "sweep", HELP, DESCRIPTION, USAGE)
    p.add_argument("config", nargs="?", help="YAML config file of the base run (see configs/)")
    g = p.add_argument_group("sweep")
    g.add_argument("--space", action="append", required=True, metavar="SPEC", help=SPACE_HELP)
    g.add_argument("--trials", type=int, default=20, help="trials in all (default: 20)")
    g.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="trials at a time, each in its own process sharing the study (default: 1); "
        "torch threads are split between them unless --train.threads is set",
    )
    g.add_argument(
        "--study-name",
        default=None,
        help="the sweep's folder under --output and its study (default: "
        "sweep-MODEL-STRATEGY-HASH of the config and space, so the same command resumes it)",
    )
    add_strategy_and_task(p)
    add_short_forms(p, SWEEP_ALIASES, SWEEP_FLAGS)
    add_option_sections(p, SECTIONS, "options")


def run(a: argparse.Namespace) -> None:
    from tunelab import api

    args = {k: v for k, v in vars(a).items() if k != "verb"}
    config = args.pop("config", None)
    space, trials, jobs = args.pop("space"), args.pop("trials"), args.pop("jobs")
    study_name = args.pop("study_name")
    cfg = api.build_config(config, args)
    result = api.sweep(cfg, space, trials=trials, jobs=jobs, study_name=study_name)
    best = result.best
    if best is not None:
        params = ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in best["params"].items()
        )
        print(
            f"\nbest: trial {best['trial']}, validation {result.metric} {best['value']:.4f} "
            f"({params}): {result.folder / best['run']}"
        )
    print(f"report: {result.folder / 'report.md'}")
