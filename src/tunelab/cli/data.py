"""`tunelab data inspect SOURCE`: real columns, guessed text/label columns, label counts and
length percentiles (or, for instruction / chat data, its format and prompt/response lengths)."""

from __future__ import annotations

import argparse

from tunelab.cli.flags import verb_parser

HELP = "look at a data set before training"
DESCRIPTION = "Data tools."

# flag -> (DataOptions field, help); each also answers to its --data.NAME spelling
OPTIONS = {
    "--text-column": ("text_column", "text column (default: guessed from the columns)"),
    "--label-column": ("label_column", "label column (default: guessed; none: unlabelled)"),
    "--encoding": ("encoding", "text encoding of the file, e.g. latin-1 (default: utf-8)"),
    "--label-map": ("label_map", "rename raw labels: 0=neg,1=pos, a JSON mapping or a file"),
    "--bins": ("bins", "classes from a numeric label: a count (3) or edges (2.5,4)"),
    "--bin-names": ("bin_names", "names of the --bins classes, lowest first (low,mid,high)"),
    "--format": ("format", "generative data: auto, pairs, alpaca, sharegpt or messages"),
    "--prompt-column": ("prompt_column", "generative pairs: prompt column (default: prompt)"),
    "--response-column": ("response_column", "generative pairs: response column"),
}


def add_parser(sub) -> None:
    p = verb_parser(sub, "data", HELP, DESCRIPTION)
    dsub = p.add_subparsers(dest="data_verb", required=True, metavar="ACTION")
    i = dsub.add_parser(
        "inspect",
        help="columns, label counts and length percentiles",
        description=(
            "The columns of SOURCE as they are in it (type, a few values), the text and label "
            "columns (guessed unless given), label counts and length percentiles; for "
            "instruction / chat data (alpaca, sharegpt, messages) its format and lengths."
        ),
    )
    i.add_argument(
        "source",
        help="a .csv/.tsv/.jsonl/.json/.parquet/.txt file, class folder, saved dataset, "
        "hub:NAME or an embedded data set",
    )
    for flag, (field, text) in OPTIONS.items():
        i.add_argument(flag, f"--data.{field}", dest=field, default=None, help=text)
    i.add_argument("--model", help="also count tokens with this model's tokenizer")


def run(a: argparse.Namespace) -> None:
    from tunelab import api

    options = {
        field: getattr(a, field)
        for field, _ in OPTIONS.values()
        if field not in ("text_column", "label_column") and getattr(a, field) is not None
    }
    print(api.inspect_data(a.source, a.text_column, a.label_column, a.model, **options))
