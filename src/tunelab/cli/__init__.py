"""`tunelab <verb>`: parsing only; every verb's work is a function of `tunelab.api`.

One module per verb, each with `add_parser(sub)` (cheap: no torch import at module level) and
`run(args)`; `VERBS` lists them in the order `tunelab --help` shows. User mistakes
(TunelabError) end as one line on stderr and exit code 2; every option of every verb is
documented in its --help, generated from the options dataclasses' docstrings.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from tunelab.errors import TunelabError

VERBS: dict[str, str] = {
    "finetune": "tunelab.cli.finetune",
    "compare": "tunelab.cli.compare",
    "compress": "tunelab.cli.compress",
    "pretrain": "tunelab.cli.pretrain",
    "sweep": "tunelab.cli.sweep",
    "score": "tunelab.cli.score",
    "compare-decoding": "tunelab.cli.compare_decoding",
    "generate": "tunelab.cli.generate",
    "serve": "tunelab.cli.serve",
    "keys": "tunelab.cli.keys",
    "eval": "tunelab.cli.eval",
    "predict": "tunelab.cli.predict",
    "models": "tunelab.cli.models",
    "data": "tunelab.cli.data",
}
"""Verb -> the module that parses it."""


def build_parser() -> argparse.ArgumentParser:
    from tunelab.cli.flags import Parser

    parser = Parser(
        prog="tunelab",
        description="Fine-tune, evaluate and use transformer models; every strategy one flag.",
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for module in VERBS.values():
        importlib.import_module(module).add_parser(sub)
    return parser


RANK_ERROR_ENV = "TUNELAB_RANK_ERRORS"
"""A folder `--nproc`'s launcher gives its ranks: a rank that stops on a TunelabError writes
its one-line error there (file `rank<R>`) before exiting, so the launcher can tell a mistake
in the command from a rank that died. Every rank writes: the first to exit may get the others
killed by torchrun before they could."""


def _tell_launcher(message: str) -> None:
    folder = os.environ.get(RANK_ERROR_ENV)
    if folder:
        with open(os.path.join(folder, f"rank{os.environ.get('RANK', '0')}"), "w") as f:
            f.write(message)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        a = parser.parse_args(argv)
    except TunelabError as exc:  # a UsageError: unknown option, bad choice, missing argument
        print(f"tunelab: error: {exc}", file=sys.stderr)
        return 2
    try:
        from tunelab.logs import quiet_libraries

        quiet_libraries()
        importlib.import_module(VERBS[a.verb]).run(a)
    except TunelabError as exc:
        print(f"tunelab: error: {exc}", file=sys.stderr)
        _tell_launcher(str(exc))
        return 2
    except KeyboardInterrupt:
        print("tunelab: interrupted (a finetune continues with --resume)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
