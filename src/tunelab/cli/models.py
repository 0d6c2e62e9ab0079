"""`tunelab models`: list the embedded models; `models convert` a GGUF into an HF folder."""

from __future__ import annotations

import argparse

from tunelab.cli.flags import verb_parser

HELP = "list embedded models; `models convert` a GGUF"
DESCRIPTION = "Without arguments: list the embedded default models."


def add_parser(sub) -> None:
    p = verb_parser(sub, "models", HELP, DESCRIPTION)
    msub = p.add_subparsers(dest="models_verb", metavar="ACTION")
    c = msub.add_parser(
        "convert",
        help="turn a GGUF file or embedded GGUF model into an HF folder",
        description="Dequantize a GGUF model into a cached fp32 HF folder.",
    )
    c.add_argument("source", help="a .gguf file or an embedded name such as smollm2-135m")
    c.add_argument("--out", help="target folder (default: the tunelab cache)")


def run(a: argparse.Namespace) -> None:
    from tunelab import api

    if a.models_verb == "convert":
        print(api.convert_model(a.source, a.out))
    else:
        print(api.list_models())
