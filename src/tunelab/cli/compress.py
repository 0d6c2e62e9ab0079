"""`tunelab compress RUN --methods int8-dynamic,prune-30,distill-half,onnx`: compressed copies
of a run, each measured beside the original (quality, size, memory, speed)."""

from __future__ import annotations

import argparse

from tunelab.cli.flags import add_section, add_short_forms, verb_parser

SHORT = {
    "--methods": "compress.methods",
    "--output": "compress.output_dir",
    "--threads": "compress.threads",
}


HELP = "quantize, prune, distill and export a run; table + plots of what each saves"
DESCRIPTION = (
    "Apply each of --methods to the fine-tuned run RUN, write one run folder per "
    "method (each opens with predict, eval, generate, serve and score) and a report folder: "
    "a Markdown + JSON table of quality on the run's own test split, size on disk, "
    "parameters, peak memory and speed beside the original, and plots of quality against "
    "latency and size. Re-running skips methods already measured."
)
USAGE = "tunelab compress RUN [--methods a,b,c] [--output DIR] [--compress.key VALUE ...]"


def add_parser(sub) -> None:
    from tunelab.compress.options import DistillOptions
    from tunelab.config.compress import CompressOptions

    p = verb_parser(sub, "compress", HELP, DESCRIPTION, USAGE)
    p.add_argument("run", help="a run folder written by tunelab finetune")
    p.add_argument("--config", help="YAML file with a `compress:` section of these options")
    add_short_forms(p, SHORT, {})
    add_section(p, "compress", CompressOptions, "compress options")
    add_section(p, "distill", DistillOptions, "distillation options (distill-half, distill-N)")


def run(a: argparse.Namespace) -> None:
    from tunelab import api

    values = {k: v for k, v in vars(a).items() if k not in ("verb", "run", "config")}
    opts = api.build_compress_config(a.config, values)
    report, rows = api.compress(a.run, opts)
    methods = [r for r in rows if not r["method"].startswith("original")]
    ok = sum(r["status"] == "ok" for r in methods)
    print("\n" + (report / "report.md").read_text().split("\n\n", 2)[-1])
    print(f"{ok} of {len(methods)} methods finished; report in {report / 'report.md'}")
