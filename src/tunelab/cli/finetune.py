"""`tunelab finetune`: fine-tune a classifier, or a generator with --task causal_lm|seq2seq."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tunelab.cli.flags import ALIASES, FLAGS, add_option_sections, add_short_forms, verb_parser
from tunelab.config.finetune import SECTIONS, Config
from tunelab.config.parse import field_docs
from tunelab.errors import TunelabError

HELP = (
    "fine-tune a classifier, or with --task causal_lm|seq2seq a generator (config YAML "
    "+ --section.key value overrides)"
)
DESCRIPTION = (
    "Fine-tune, validate, test and save a run folder. Precedence: defaults < "
    "CONFIG < flags. With no arguments: MiniLM on the embedded BBC News, strategy full."
)
USAGE = "tunelab finetune [CONFIG] [--strategy NAME] [--section.key VALUE ...]"


def add_strategy_and_task(p: argparse.ArgumentParser) -> None:
    """--strategy and --task, as finetune and sweep take them."""
    from tunelab.strategies import STRATEGIES

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


def add_parser(sub) -> None:
    p = verb_parser(sub, "finetune", HELP, DESCRIPTION, USAGE)
    p.add_argument("config", nargs="?", help="YAML config file (see configs/)")
    add_strategy_and_task(p)
    add_short_forms(p, ALIASES, FLAGS)
    add_nproc(p)
    add_option_sections(p, SECTIONS, "options")


def add_nproc(p: argparse.ArgumentParser) -> None:
    """--nproc N: run the verb on N processes of this machine under torchrun."""
    p.add_argument(
        "--nproc",
        type=int,
        default=argparse.SUPPRESS,
        metavar="N",
        help="train on N processes of this machine (torchrun --standalone; gloo on CPU, NCCL "
        "on GPU); --train.batch_size is per process; several machines: run `python -m "
        "torch.distributed.run ... -m tunelab.cli VERB ...` yourself",
    )


def torchrun_command(verb: str, a: argparse.Namespace, nproc: int) -> list[str]:
    """The same command as `a` (without --nproc) under torchrun with `nproc` processes, with
    this interpreter."""
    argv = [verb] + ([a.config] if getattr(a, "config", None) else [])
    for key, value in vars(a).items():
        if key in ("verb", "nproc", "config"):
            continue
        argv += [f"--{key}", *(map(str, value) if isinstance(value, list) else [str(value)])]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "tunelab.cli",
        *argv,
    ]


def relaunch(verb: str, a: argparse.Namespace, check=None) -> bool:
    """Run the command under torchrun when --nproc N > 1 asks for it; True when it did.

    `check()` refuses what cannot run on many processes before any process starts.

    Raises:
        TunelabError: a bad N, --nproc under torchrun, or a rank failed (its own error is
            printed above; the run continues with --resume).
    """
    nproc = getattr(a, "nproc", None)
    if nproc is None or nproc == 1:
        return False
    if nproc < 1:
        raise TunelabError(f"--nproc must be at least 1, got {nproc}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise TunelabError("--nproc launches torchrun itself: drop it when running under torchrun")
    if check is not None:
        check()
    from tunelab.cli import RANK_ERROR_ENV

    with tempfile.TemporaryDirectory(prefix="tunelab-launch-") as tmp:
        env = {**os.environ, RANK_ERROR_ENV: tmp}
        code = subprocess.run(torchrun_command(verb, a, nproc), env=env).returncode
        told = sorted(Path(tmp).glob("rank*"))  # the ranks' own one-line errors
        error = told[0].read_text() if told else ""
    if code != 0 and error:  # a mistake in the command, printed by the ranks: not a dead rank
        raise TunelabError(f"the {nproc}-process run stopped on the error above: {error}")
    if code != 0:
        raise TunelabError(
            f"a rank of the {nproc}-process run failed (torchrun exit code {code}, its error is "
            "above); rerun the same command with --resume to continue"
        )
    return True


def _check_many(a: argparse.Namespace) -> None:
    """The config's one-line errors, and refusal of a strategy that cannot run on many
    processes, in this process (a resumed run's saved config is checked by the ranks)."""
    from tunelab.config.finetune import build_config
    from tunelab.training.distributed import refuse

    args = {k: v for k, v in vars(a).items() if k not in ("verb", "nproc", "config")}
    if args.get("run.resume") == "true":
        return
    cfg = build_config(getattr(a, "config", None), args)
    refuse(cfg.strategy, cfg.train.distributed, cfg.strategy == "features", "--nproc", a.nproc)


def run(a: argparse.Namespace) -> None:
    from tunelab import api
    from tunelab.evaluation.metrics import format_metrics_table

    if relaunch("finetune", a, check=lambda: _check_many(a)):
        return
    args = {k: v for k, v in vars(a).items() if k not in ("verb", "nproc")}
    config = args.pop("config", None)
    cfg = api.build_config(config, args)
    result = api.finetune(cfg)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun: rank 0 reports
        return
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
