"""`tunelab predict RUN TEXT ... | --file F`: classify texts; JSONL to stdout, or JSONL/CSV to
--output."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys

from tunelab.cli.flags import add_precision_flags, check_output, verb_parser, write_output
from tunelab.errors import TunelabError

HELP = "classify texts with a run folder"
DESCRIPTION = "Classify TEXT arguments or a file; JSONL to stdout, or JSONL/CSV to --output."


def add_parser(sub) -> None:
    p = verb_parser(sub, "predict", HELP, DESCRIPTION)
    p.add_argument("run", help="a run folder written by tunelab finetune")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify")
    p.add_argument("--file", help="input: .txt (a text per line), .csv, .tsv, .jsonl or .json")
    p.add_argument("--text-column", default="text", help="text column of --file (default: text)")
    p.add_argument("--output", help="write predictions here (.jsonl or .csv) instead of stdout")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default: 64)")
    add_precision_flags(p)


def run(a: argparse.Namespace) -> None:
    check_output(a.output, "--output")
    if a.output and not a.output.endswith((".jsonl", ".csv")):
        raise TunelabError(f"--output {a.output}: name a .jsonl or .csv file (the format)")
    from tunelab import api
    from tunelab.data.readers import read_texts

    texts = list(a.texts) + (read_texts(a.file, a.text_column) if a.file else [])
    preds = api.predict(a.run, texts, a.batch_size, quiet=True, dtype=a.dtype, device=a.device)
    if a.output and a.output.endswith(".csv"):
        buf = io.StringIO()
        labels = list(preds[0]["probs"])
        w = csv.writer(buf)
        w.writerow(["text", "label", "score", *labels])
        for p in preds:
            w.writerow([p["text"], p["label"], p["score"], *(p["probs"][x] for x in labels)])
        write_output(a.output, buf.getvalue(), "--output")
    else:
        lines = "".join(json.dumps(p) + "\n" for p in preds)
        if a.output:
            write_output(a.output, lines, "--output")
        else:
            sys.stdout.write(lines)
