"""`tunelab predict RUN TEXT ... | --file F`: classify texts; JSONL to stdout, or JSONL/CSV to
--output."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys

from tunelab.cli.eval import add_zero_shot_flags, check_zero_shot_flags, zero_shot_options
from tunelab.cli.flags import add_precision_flags, check_output, verb_parser, write_output
from tunelab.errors import TunelabError

HELP = "classify texts with a run folder (or a decoder, zero-shot)"
DESCRIPTION = (
    "Classify TEXT arguments or a file; JSONL to stdout, or JSONL/CSV to --output. With "
    "--zero-shot and --labels, RUN is a decoder that picks a label from a prompt, untrained."
)


def add_parser(sub) -> None:
    p = verb_parser(sub, "predict", HELP, DESCRIPTION)
    p.add_argument(
        "run", help="a run folder written by tunelab finetune (--zero-shot: a decoder model)"
    )
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify")
    p.add_argument("--file", help="input: .txt (a text per line), .csv, .tsv, .jsonl or .json")
    p.add_argument("--text-column", default="text", help="text column of --file (default: text)")
    p.add_argument("--output", help="write predictions here (.jsonl or .csv) instead of stdout")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default: 64)")
    add_precision_flags(p)
    add_zero_shot_flags(p, chat_flag=True)


def run(a: argparse.Namespace) -> None:
    check_output(a.output, "--output")
    if a.output and not a.output.endswith((".jsonl", ".csv")):
        raise TunelabError(f"--output {a.output}: name a .jsonl or .csv file (the format)")
    check_zero_shot_flags(a)
    if a.zero_shot is not None and not a.labels:
        raise TunelabError("predict --zero-shot needs the label names: add --labels a,b,c")
    from tunelab import api
    from tunelab.data.readers import read_texts

    texts = list(a.texts) + (read_texts(a.file, a.text_column) if a.file else [])
    zero_shot = {}
    if a.zero_shot is not None:
        zero_shot = {
            "zero_shot": a.zero_shot,
            "zero_shot_options": zero_shot_options(a),
            "max_length": a.max_length,
        }
    preds = api.predict(
        a.run, texts, a.batch_size, quiet=True, dtype=a.dtype, device=a.device, **zero_shot
    )
    if a.output and a.output.endswith(".csv"):
        buf = io.StringIO()
        labels = list(preds[0].get("probs", {}))  # zero-shot choice: no probabilities
        w = csv.writer(buf)
        w.writerow(["text", "label", *(["score", *labels] if labels else [])])
        for p in preds:
            scores = [p["score"], *(p["probs"][x] for x in labels)] if labels else []
            w.writerow([p["text"], p["label"], *scores])
        write_output(a.output, buf.getvalue(), "--output")
    else:
        lines = "".join(json.dumps(p) + "\n" for p in preds)
        if a.output:
            write_output(a.output, lines, "--output")
        else:
            sys.stdout.write(lines)
