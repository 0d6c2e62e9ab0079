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
    "distinct-n and reference perplexity of generated outputs on prompt/response pairs. "
    "With --zero-shot, RUN is a decoder (smollm2-135m, a causal LM, a causal_lm run) that "
    "labels DATA from a prompt and the label names, untrained: how far a prompt gets."
)


def add_parser(sub) -> None:
    p = verb_parser(sub, "eval", HELP, DESCRIPTION)
    p.add_argument(
        "run", help="a run folder written by tunelab finetune (--zero-shot: a decoder model)"
    )
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
    g.add_argument(
        "--limit",
        type=int,
        help="evaluate only the first N pairs (--zero-shot: a stratified sample of N rows)",
    )
    add_chat_template_flag(
        g, "prompts in the chat template (auto: the run's setting, else if there is one)"
    )
    add_decoding_flags(p, "decoding options of generative eval (default: greedy)")
    add_zero_shot_flags(p)


def add_zero_shot_flags(p, chat_flag: bool = False) -> None:
    """--zero-shot [MODE], --labels, --prompt, --max-length (eval and predict); with
    `chat_flag` also --chat-template (eval has it already, for generative runs)."""
    from tunelab.tasks.zero_shot import DEFAULT_PROMPT, MODES

    g = p.add_argument_group(
        "zero-shot classification (a decoder labels texts from a prompt, untrained)"
    )
    g.add_argument(
        "--zero-shot",
        nargs="?",
        const="choice",
        choices=MODES,
        help="classify with the decoder RUN: choice (greedy, constrained to the label names; "
        "the default) or likelihood (the label the model finds likeliest after the prompt); "
        "before a TEXT argument write --zero-shot=MODE",
    )
    g.add_argument(
        "--labels",
        help="label names to choose from, comma-separated (eval default: the data's labels)",
    )
    g.add_argument(
        "--prompt",
        help="prompt template: {text} is the text, {labels} the label names "
        f"(default: {DEFAULT_PROMPT!r})".replace("%", "%%"),
    )
    g.add_argument(
        "--max-length",
        type=int,
        default=256,
        help="tokens of each text in the prompt; longer texts are cut (default: 256)",
    )
    if chat_flag:
        add_chat_template_flag(g, "the prompt in the chat template (auto: if there is one)")


def zero_shot_options(a: argparse.Namespace):
    """The ZeroShotOptions of --labels, --prompt and --chat-template."""
    from tunelab.tasks.zero_shot import ZeroShotOptions

    opts = ZeroShotOptions(labels=a.labels, chat_template=chat_template(a))
    if a.prompt is not None:
        opts.prompt = a.prompt
    return opts


def check_zero_shot_flags(a: argparse.Namespace) -> None:
    """--labels / --prompt mean nothing without --zero-shot: say so rather than ignore them."""
    for flag, value in (("--labels", a.labels), ("--prompt", a.prompt)):
        if value is not None and a.zero_shot is None:
            raise TunelabError(f"{flag} applies to zero-shot classification: add --zero-shot")


def run(a: argparse.Namespace) -> None:
    check_output(a.json_out, "--json")
    if a.limit is not None and a.limit < 1:
        raise TunelabError(f"--limit must be at least 1, got {a.limit}")
    check_zero_shot_flags(a)
    from tunelab import api

    if a.zero_shot is None and api.is_generative(a.run):
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
    else:  # a classifier run, or a decoder labelling each text zero-shot
        from tunelab.evaluation.baselines import format_baselines
        from tunelab.evaluation.metrics import format_metrics_table

        zero_shot = {}
        if a.zero_shot is not None:
            zero_shot = dict(
                zero_shot=a.zero_shot,
                zero_shot_options=zero_shot_options(a),
                limit=a.limit,
                max_length=a.max_length,
            )
        m = api.evaluate_run(
            a.run,
            a.data,
            a.text_column,
            a.label_column,
            a.batch_size,
            dtype=a.dtype,
            device=a.device,
            **zero_shot,
        )
        print(format_metrics_table(m))
        if a.zero_shot is not None:
            print(
                f"\nzero-shot ({a.zero_shot}): {m['n']} texts in {m['seconds']:.1f} s "
                f"({m['ms_per_example']:.1f} ms each), {m['invalid']} answers were no label"
            )
        block = format_baselines(m, m, split="eval")
        if block:
            print("\n" + block)
    if a.json_out:
        write_output(a.json_out, json.dumps(m, indent=2) + "\n", "--json")
