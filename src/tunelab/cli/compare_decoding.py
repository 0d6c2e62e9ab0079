"""`tunelab compare-decoding`: decoding strategies side by side, quality against speed."""

from __future__ import annotations

import argparse
import dataclasses

from tunelab.cli.flags import (
    add_chat_template_flag,
    add_precision_flags,
    chat_template,
    verb_parser,
)
from tunelab.config.parse import field_docs

HELP = "several decoding strategies on the same prompts: quality vs tokens/s"
DESCRIPTION = (
    "Decode the same prompts with every strategy and write a report folder: "
    "a Markdown + JSON table (BLEU, chrF, ROUGE-L against the references, distinct-1/2, "
    "perplexity of the outputs under the model, mean length, tokens/s, wall time), a "
    "quality-vs-speed plot and every output. Strategies: greedy, beamN, sample-tT, top-kK, "
    "top-pP, min-pP, or key=value:key=value decoding options. Re-running reuses finished "
    "strategies of the same setup."
)


def add_parser(sub) -> None:
    from tunelab.config.compare_decoding import DEFAULT_STRATEGIES, CompareDecodingConfig

    docs = field_docs(CompareDecodingConfig)
    p = verb_parser(sub, "compare-decoding", HELP, DESCRIPTION)
    p.add_argument("model", help=docs["model"])
    p.add_argument("--data", required=True, help=docs["data"])
    p.add_argument(
        "--strategies",
        default=",".join(DEFAULT_STRATEGIES),
        help=f"comma-separated strategy specs (default: {','.join(DEFAULT_STRATEGIES)})",
    )
    p.add_argument("--out", default="reports/compare-decoding", help=docs["out"])
    p.add_argument("--limit", type=int, default=50, help=docs["limit"] + " (default: 50)")
    p.add_argument("--max-new-tokens", type=int, default=32, help=docs["max_new_tokens"])
    p.add_argument("--batch-size", type=int, default=8, help=docs["batch_size"])
    p.add_argument("--template", default="{prompt}", help=docs["template"])
    p.add_argument("--max-prompt-words", type=int, default=0, help=docs["max_prompt_words"])
    add_chat_template_flag(p, docs["chat_template"])
    p.add_argument("--seed", type=int, default=0, help=docs["seed"])
    for name in ("prompt", "response"):
        p.add_argument(
            f"--{name}-column",
            f"--data.{name}_column",
            dest=f"{name}_column",
            default=name,
            help=docs[f"{name}_column"],
        )
    add_precision_flags(p)


def run(a: argparse.Namespace) -> None:
    from tunelab import api
    from tunelab.config.compare_decoding import CompareDecodingConfig
    from tunelab.recipes.compare_decoding import markdown_table

    values = {f.name: getattr(a, f.name) for f in dataclasses.fields(CompareDecodingConfig)}
    values["strategies"] = [s.strip() for s in a.strategies.split(",") if s.strip()]
    values["chat_template"] = chat_template(a)
    cfg = CompareDecodingConfig(**values)
    report, rows = api.compare_decoding(cfg)
    print("\n" + markdown_table(rows))
    print(f"report in {report / 'report.md'}")
