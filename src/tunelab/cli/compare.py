"""`tunelab compare`: several strategies on the same data and budget; table + plots."""

from __future__ import annotations

import argparse

from tunelab.cli.flags import ALIASES, add_option_sections, verb_parser
from tunelab.config.finetune import SECTIONS
from tunelab.config.parse import field_docs

HELP = "run several strategies on the same data and budget; table + plots"
DESCRIPTION = (
    "Fine-tune every strategy in --strategies on the same data, seed and step "
    "budget, each in its own process; write a report folder (Markdown + JSON table, "
    "trade-off plots). Re-running skips finished strategies. CONFIG is a finetune config "
    "with an optional `compare:` section (strategies, output_dir, latency_examples, "
    "per-strategy overrides such as a learning rate). With a decoder model, zero_shot and "
    "zero_shot_likelihood add rows that train nothing (the model prompted with the label "
    "names), configured by a `zero_shot:` section."
)
USAGE = "tunelab compare [CONFIG] [--strategies a,b,c] [--output DIR] [--section.key V]"


def add_parser(sub) -> None:
    from tunelab.cli.flags import add_section
    from tunelab.config.compare import CompareConfig
    from tunelab.strategies import STRATEGIES
    from tunelab.tasks.zero_shot import ROWS, ZeroShotOptions

    p = verb_parser(sub, "compare", HELP, DESCRIPTION, USAGE)
    p.add_argument("config", nargs="?", help="YAML config file (see configs/compare-*.yaml)")
    p.add_argument("--config", dest="config_flag", help="same as the CONFIG argument")
    docs = field_docs(CompareConfig)
    p.add_argument(
        "--strategies",
        help=f"comma-separated, from {', '.join(STRATEGIES)} (default: all); "
        f"{' and '.join(ROWS)} add untrained rows (a decoder model, prompted)",
    )
    p.add_argument("--output", help=docs["output_dir"] + " (default: reports/compare)")
    short = p.add_argument_group("short forms")
    for flag, key in ALIASES.items():
        if key.startswith("run."):
            continue
        short.add_argument(flag, dest=key, default=argparse.SUPPRESS, help=f"same as --{key}")
    shared = {k: v for k, v in SECTIONS.items() if k != "run"}
    add_option_sections(p, shared, "options (shared by every strategy)")
    add_section(p, "zero_shot", ZeroShotOptions, "zero_shot rows: zero_shot, zero_shot_likelihood")


def run(a: argparse.Namespace) -> None:
    from tunelab import api

    args = {k: v for k, v in vars(a).items() if k != "verb"}
    config = args.pop("config", None) or args.pop("config_flag", None)
    args.pop("config_flag", None)
    strategies, output = args.pop("strategies", None), args.pop("output", None)
    cc, base = api.load_compare_config(config, args, strategies, output)
    report, rows = api.compare(cc, base)
    ok = sum(r["status"] == "ok" for r in rows)
    print("\n" + (report / "report.md").read_text().split("\n\n", 2)[-1])
    print(f"{ok} of {len(rows)} strategies finished; report in {report / 'report.md'}")
