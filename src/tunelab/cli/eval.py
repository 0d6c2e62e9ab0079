"""`tunelab eval RUN --data DATA`: a classification run on labelled data; a causal_lm /
seq2seq run (or a plain language model) on prompt/response pairs, by generating."""

from __future__ import annotations

import argparse
import json

from tunelab.cli.decoding import add_decoding_flags, decoding_options
from tunelab.cli.flags import (
    add_chat_template_flag,
    add_precision_flags,
    chat_template,
    check_output,
    verb_parser,
    write_output,
)
from tunelab.errors import TunelabError

HELP = "evaluate a run folder on labelled data (or a generative run on prompt pairs)"
DESCRIPTION = (
    "Accuracy, P/R/F1 and the confusion matrix of RUN on DATA; for a "
    "causal_lm/seq2seq run (or a language model) BLEU, chrF, ROUGE, exact match, "
    "distinct-n and reference perplexity of generated outputs on prompt/response pairs."
)


def add_parser(sub) -> None:
    p = verb_parser(sub, "eval", HELP, DESCRIPTION)
    p.add_argument("run", help="a run folder written by tunelab finetune")
    p.add_argument("--data", required=True, help="labelled data (any source finetune accepts)")
    p.add_argument(
        "--text-column",
        "--data.text_column",
        dest="text_column",
        default="text",
        help="text column (default: text)",
    )
    p.add_argument(
        "--label-column",
        "--data.label_column",
        dest="label_column",
        default="label",
        help="label column (default: label)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default: 64)")
    p.add_argument("--json", dest="json_out", help="also write the metrics to this JSON file")
    add_precision_flags(p)
    g = p.add_argument_group("generative runs (causal_lm / seq2seq) and language models")
    g.add_argument(
        "--prompt-column",
        "--data.prompt_column",
        dest="prompt_column",
        default="prompt",
        help="prompt column (default: prompt)",
    )
    g.add_argument(
        "--response-column",
        "--data.response_column",
        dest="response_column",
        default="response",
        help="reference column (default: response)",
    )
    g.add_argument("--limit", type=int, help="evaluate only the first N pairs")
    add_chat_template_flag(
        g, "prompts in the chat template (auto: the run's setting, else if there is one)"
    )
    add_decoding_flags(p, "decoding options of generative eval (default: greedy)")


def run(a: argparse.Namespace) -> None:
    check_output(a.json_out, "--json")
    if a.limit is not None and a.limit < 1:
        raise TunelabError(f"--limit must be at least 1, got {a.limit}")
    from tunelab import api

    if api.is_generative(a.run):
        m = api.evaluate_generative(
            a.run,
            a.data,
            decoding_options(a),
            batch_size=a.batch_size,
            limit=a.limit,
            prompt_column=a.prompt_column,
            response_column=a.response_column,
            chat_template=chat_template(a),
            dtype=a.dtype,
            device=a.device,
        )
        print(api.format_generation_report(m))
    else:
        from tunelab.evaluation.baselines import format_baselines
        from tunelab.evaluation.metrics import format_metrics_table

        m = api.evaluate_run(
            a.run,
            a.data,
            a.text_column,
            a.label_column,
            a.batch_size,
            dtype=a.dtype,
            device=a.device,
        )
        print(format_metrics_table(m))
        block = format_baselines(m, m, split="eval")
        if block:
            print("\n" + block)
    if a.json_out:
        write_output(a.json_out, json.dumps(m, indent=2) + "\n", "--json")
