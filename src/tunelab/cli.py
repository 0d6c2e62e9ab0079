"""`tunelab <verb>`: a thin shell over tunelab.api.

User mistakes (TunelabError) end as one line on stderr and exit code 2; every option of every
verb is documented in its --help, generated from the config dataclasses' docstrings.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib
import io
import json
import os
import sys
from pathlib import Path

from tunelab.config import SECTIONS, Config, field_docs
from tunelab.errors import TunelabError

# short flags for the options people type most; each maps to its full --section.key
ALIASES = {
    "--model": "model.name",
    "--data": "data.source",
    "--epochs": "train.epochs",
    "--lr": "train.lr",
    "--output": "run.output_dir",
    "--name": "run.name",
    "--seed": "train.seed",
}
FLAGS = {"--resume": "run.resume", "--merge": "run.merge"}

# verbs that live in their own module: each has `add_parser(sub)` (cheap: no torch import at
# module level) and `run(args: argparse.Namespace) -> None`; raise TunelabError for user mistakes
VERB_MODULES = {
    "pretrain": "tunelab.commands.pretrain",
    "score": "tunelab.commands.score",
    "compare-decoding": "tunelab.commands.compare_decoding",
    "generate": "tunelab.commands.generate",
    "serve": "tunelab.commands.serve",
}


def _fmt_default(value) -> str:
    return "none" if value is None else str(value)


def add_section(parser: argparse.ArgumentParser, prefix: str, section, title: str) -> None:
    """--prefix.key options for the fields of an options dataclass, with the attribute
    docstrings as help; `section` is the class, or an instance whose values are the defaults
    (a verb whose defaults differ, e.g. pretrain's train section)."""
    group = parser.add_argument_group(title)
    cls = section if isinstance(section, type) else type(section)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if not isinstance(section, type):
            default = getattr(section, f.name)
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kwargs = {"nargs": "+"} if isinstance(default, list) else {}
        group.add_argument(
            f"--{prefix}.{f.name}",
            dest=f"{prefix}.{f.name}",
            metavar=f.name.upper(),
            default=argparse.SUPPRESS,
            # argparse formats help with %: a literal one (e.g. "10%") must be doubled
            help=f"{docs.get(f.name, '')} (default: {_fmt_default(default)})".replace("%", "%%"),
            **kwargs,
        )


def add_short_forms(
    parser: argparse.ArgumentParser,
    aliases: dict[str, str],
    switches: dict[str, str],
    choices: dict[str, list[str]] | None = None,
) -> None:
    """Short flags: `aliases` take a value for their --section.key, `switches` set theirs to
    true; `choices` restricts some aliases' values."""
    short = parser.add_argument_group("short forms")
    for flag, key in aliases.items():
        extra = {"choices": choices[flag]} if choices and flag in choices else {}
        short.add_argument(
            flag, dest=key, default=argparse.SUPPRESS, help=f"same as --{key}", **extra
        )
    for flag, key in switches.items():
        short.add_argument(
            flag,
            dest=key,
            action="store_const",
            const="true",
            default=argparse.SUPPRESS,
            help=f"same as --{key} true",
        )


def _finetune_parser(sub) -> None:
    from tunelab.strategies import STRATEGIES

    p = sub.add_parser(
        "finetune",
        usage="tunelab finetune [CONFIG] [--strategy NAME] [--section.key VALUE ...]",
        help="fine-tune a classifier, or with --task causal_lm|seq2seq a generator (config YAML "
        "+ --section.key value overrides)",
        description="Fine-tune, validate, test and save a run folder. Precedence: defaults < "
        "CONFIG < flags. With no arguments: MiniLM on the embedded BBC News, strategy full.",
        allow_abbrev=False,
    )
    p.add_argument("config", nargs="?", help="YAML config file (see configs/)")
    p.add_argument(
        "--strategy",
        dest="strategy",
        default=argparse.SUPPRESS,
        help=f"fine-tuning strategy: {', '.join(STRATEGIES)} (default: full)",
    )
    p.add_argument(
        "--task",
        dest="task",
        default=argparse.SUPPRESS,
        help=field_docs(Config)["task"] + " (default: classification)",
    )
    add_short_forms(p, ALIASES, FLAGS)
    _add_option_sections(p, SECTIONS, "options")


def _add_option_sections(p: argparse.ArgumentParser, sections: dict, title: str) -> None:
    """One argument group per config section, then one per strategy that has options."""
    from tunelab.strategies import STRATEGIES

    for name, cls in sections.items():
        add_section(p, name, cls, f"{name} {title}")
    for name, strat in STRATEGIES.items():
        if dataclasses.fields(strat.config_cls):
            add_section(p, name, strat.config_cls, f"{name} strategy: {strat.summary}")


def _compare_parser(sub) -> None:
    from tunelab.compare import CompareConfig
    from tunelab.strategies import STRATEGIES

    p = sub.add_parser(
        "compare",
        usage="tunelab compare [CONFIG] [--strategies a,b,c] [--output DIR] [--section.key V]",
        help="run several strategies on the same data and budget; table + plots",
        description="Fine-tune every strategy in --strategies on the same data, seed and step "
        "budget, each in its own process; write a report folder (Markdown + JSON table, "
        "trade-off plots). Re-running skips finished strategies. CONFIG is a finetune config "
        "with an optional `compare:` section (strategies, output_dir, latency_examples, "
        "per-strategy overrides such as a learning rate).",
        allow_abbrev=False,
    )
    p.add_argument("config", nargs="?", help="YAML config file (see configs/compare-*.yaml)")
    p.add_argument("--config", dest="config_flag", help="same as the CONFIG argument")
    docs = field_docs(CompareConfig)
    p.add_argument(
        "--strategies",
        help=f"comma-separated, from {', '.join(STRATEGIES)} (default: all)",
    )
    p.add_argument("--output", help=docs["output_dir"] + " (default: reports/compare)")
    short = p.add_argument_group("short forms")
    for flag, key in ALIASES.items():
        if key.startswith("run."):
            continue
        short.add_argument(flag, dest=key, default=argparse.SUPPRESS, help=f"same as --{key}")
    shared = {k: v for k, v in SECTIONS.items() if k != "run"}
    _add_option_sections(p, shared, "options (shared by every strategy)")


def _cmd_compare(args: dict) -> None:
    from tunelab.compare import compare, load_compare_config

    config = args.pop("config", None) or args.pop("config_flag", None)
    args.pop("config_flag", None)
    strategies, output = args.pop("strategies", None), args.pop("output", None)
    cc, base = load_compare_config(config, args, strategies, output)
    report, rows = compare(cc, base)
    ok = sum(r["status"] == "ok" for r in rows)
    print("\n" + (report / "report.md").read_text().split("\n\n", 2)[-1])
    print(f"{ok} of {len(rows)} strategies finished; report in {report / 'report.md'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunelab",
        description="Fine-tune, evaluate and use transformer models; every strategy one flag.",
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    _finetune_parser(sub)
    _compare_parser(sub)
    for module in VERB_MODULES.values():
        importlib.import_module(module).add_parser(sub)

    p = sub.add_parser(
        "eval",
        help="evaluate a run folder on labelled data (or a generative run on prompt pairs)",
        description="Accuracy, P/R/F1 and the confusion matrix of RUN on DATA; for a "
        "causal_lm/seq2seq run (or a language model) BLEU, chrF, ROUGE, exact match, "
        "distinct-n and reference perplexity of generated outputs on prompt/response pairs.",
    )
    p.add_argument("run", help="a run folder written by tunelab finetune")
    p.add_argument("--data", required=True, help="labelled data (any source finetune accepts)")
    p.add_argument("--text-column", default="text", help="text column (default: text)")
    p.add_argument("--label-column", default="label", help="label column (default: label)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default: 64)")
    p.add_argument("--json", dest="json_out", help="also write the metrics to this JSON file")
    importlib.import_module("tunelab.commands.eval_generative").add_args(p)

    p = sub.add_parser(
        "predict",
        help="classify texts with a run folder",
        description="Classify TEXT arguments or a file; JSONL to stdout, or JSONL/CSV to --output.",
    )
    p.add_argument("run", help="a run folder written by tunelab finetune")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify")
    p.add_argument("--file", help="input: .txt (a text per line), .csv, .tsv, .jsonl or .json")
    p.add_argument("--text-column", default="text", help="text column of --file (default: text)")
    p.add_argument("--output", help="write predictions here (.jsonl or .csv) instead of stdout")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default: 64)")

    p = sub.add_parser(
        "models",
        help="list embedded models; `models convert` a GGUF",
        description="Without arguments: list the embedded default models.",
    )
    msub = p.add_subparsers(dest="models_verb", metavar="ACTION")
    c = msub.add_parser(
        "convert",
        help="turn a GGUF file or embedded GGUF model into an HF folder",
        description="Dequantize a GGUF model into a cached fp32 HF folder.",
    )
    c.add_argument("source", help="a .gguf file or an embedded name such as smollm2-135m")
    c.add_argument("--out", help="target folder (default: the tunelab cache)")

    p = sub.add_parser("data", help="look at a data set before training", description="Data tools.")
    dsub = p.add_subparsers(dest="data_verb", required=True, metavar="ACTION")
    i = dsub.add_parser(
        "inspect",
        help="columns, label counts and length percentiles",
        description="Columns, label counts and length percentiles of SOURCE.",
    )
    i.add_argument("source", help="a file, class folder, saved dataset, hub:NAME or bbc-news")
    i.add_argument("--text-column", default="text", help="text column (default: text)")
    i.add_argument("--label-column", default="label", help="label column (default: label)")
    i.add_argument("--model", help="also count tokens with this model's tokenizer")
    return parser


def _quiet_libraries() -> None:
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # peft calls a transformers property that transformers 5.x deprecates: not the user's doing
    warnings.filterwarnings("ignore", ".*is_gradient_checkpointing.*", FutureWarning)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _cmd_finetune(args: dict) -> None:
    from tunelab import api
    from tunelab.evaluation.metrics import format_metrics_table

    config = args.pop("config", None)
    cfg = api.build_config(config, args)
    result = api.finetune(cfg)
    test = result.metrics.get("test")
    if test and "labels" not in test:  # a generative run: loss and perplexity per token
        print("\ntest " + "  ".join(f"{k} {v:.4g}" for k, v in test.items()))
    elif test:
        print("\ntest metrics\n" + format_metrics_table(test))
    for p in result.predictions:
        print(f"  {p['label']:<14} {p['score']:.3f}  {p['text'][:70]}")
    print(f"\nrun saved to {result.run_dir}")


def _cmd_predict(a) -> None:
    from tunelab import api
    from tunelab.data.readers import read_texts

    texts = list(a.texts) + (read_texts(a.file, a.text_column) if a.file else [])
    preds = api.predict(a.run, texts, a.batch_size, quiet=True)
    if a.output and a.output.endswith(".csv"):
        buf = io.StringIO()
        labels = list(preds[0]["probs"])
        w = csv.writer(buf)
        w.writerow(["text", "label", "score", *labels])
        for p in preds:
            w.writerow([p["text"], p["label"], p["score"], *(p["probs"][x] for x in labels)])
        _write_atomic(Path(a.output), buf.getvalue())
    else:
        lines = "".join(json.dumps(p) + "\n" for p in preds)
        if a.output:
            _write_atomic(Path(a.output), lines)
        else:
            sys.stdout.write(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        _quiet_libraries()
        if a.verb in VERB_MODULES:
            importlib.import_module(VERB_MODULES[a.verb]).run(a)
        elif a.verb == "finetune":
            _cmd_finetune({k: v for k, v in vars(a).items() if k != "verb"})
        elif a.verb == "compare":
            _cmd_compare({k: v for k, v in vars(a).items() if k != "verb"})
        elif a.verb == "eval" and importlib.import_module(
            "tunelab.commands.eval_generative"
        ).is_generative(a.run):
            importlib.import_module("tunelab.commands.eval_generative").run(a)
        elif a.verb == "eval":
            from tunelab import api
            from tunelab.evaluation.metrics import format_metrics_table

            m = api.evaluate_run(a.run, a.data, a.text_column, a.label_column, a.batch_size)
            print(format_metrics_table(m))
            if a.json_out:
                _write_atomic(Path(a.json_out), json.dumps(m, indent=2) + "\n")
        elif a.verb == "predict":
            _cmd_predict(a)
        elif a.verb == "models":
            from tunelab import api

            if a.models_verb == "convert":
                print(api.convert_model(a.source, a.out))
            else:
                print(api.list_models())
        elif a.verb == "data":
            from tunelab import api

            print(api.inspect_data(a.source, a.text_column, a.label_column, a.model))
    except TunelabError as exc:
        print(f"tunelab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tunelab: interrupted (a finetune continues with --resume)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
