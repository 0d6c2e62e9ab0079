"""`tunelab data inspect SOURCE`: columns, label counts and length percentiles."""

from __future__ import annotations

import argparse

from tunelab.cli.flags import verb_parser

HELP = "look at a data set before training"
DESCRIPTION = "Data tools."


def add_parser(sub) -> None:
    p = verb_parser(sub, "data", HELP, DESCRIPTION)
    dsub = p.add_subparsers(dest="data_verb", required=True, metavar="ACTION")
    i = dsub.add_parser(
        "inspect",
        help="columns, label counts and length percentiles",
        description="Columns, label counts and length percentiles of SOURCE.",
    )
    i.add_argument("source", help="a file, class folder, saved dataset, hub:NAME or bbc-news")
    i.add_argument(
        "--text-column",
        "--data.text_column",
        dest="text_column",
        default="text",
        help="text column (default: text)",
    )
    i.add_argument(
        "--label-column",
        "--data.label_column",
        dest="label_column",
        default="label",
        help="label column (default: label)",
    )
    i.add_argument("--model", help="also count tokens with this model's tokenizer")


def run(a: argparse.Namespace) -> None:
    from tunelab import api

    print(api.inspect_data(a.source, a.text_column, a.label_column, a.model))
