"""The generative half of `tunelab eval`: flags, the run-folder test, and the command.

`tunelab eval RUN --data PAIRS` evaluates a causal_lm / seq2seq run folder (or a plain
language model by name or folder) by generating for every prompt; a classification run keeps
the classifier evaluation. No torch import here: `tunelab --help` stays quick.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tunelab.commands.decoding_flags import add_decoding_flags, decoding_options


def add_args(p: argparse.ArgumentParser) -> None:
    """The eval flags that only generative runs use."""
    g = p.add_argument_group("generative runs (causal_lm / seq2seq) and language models")
    g.add_argument("--prompt-column", default="prompt", help="prompt column (default: prompt)")
    g.add_argument(
        "--response-column", default="response", help="reference column (default: response)"
    )
    g.add_argument("--limit", type=int, help="evaluate only the first N pairs")
    g.add_argument(
        "--chat-template",
        choices=("auto", "on", "off"),
        default="auto",
        help="prompts in the chat template (auto: the run's setting, else if there is one)",
    )
    add_decoding_flags(p, "decoding options of generative eval (default: greedy)")


def is_generative(name: str) -> bool:
    """A causal_lm / seq2seq run folder, or a model that is no run folder at all."""
    from tunelab.defaults import EMBEDDED_MODELS
    from tunelab.models import RUN_MARKER

    path = Path(name).expanduser()
    marker = path / RUN_MARKER
    if marker.is_file():
        return json.loads(marker.read_text()).get("task") in ("causal_lm", "seq2seq")
    emb = EMBEDDED_MODELS.get(name)
    if emb is not None:
        return emb.family != "encoder"
    return path.suffix == ".gguf" or (path / "config.json").is_file()


def run(a: argparse.Namespace) -> None:
    from tunelab.evaluation.generative import evaluate_generative, format_generation_report

    opts = decoding_options(a)
    m = evaluate_generative(
        a.run,
        a.data,
        opts,
        batch_size=a.batch_size,
        limit=a.limit,
        prompt_column=a.prompt_column,
        response_column=a.response_column,
        chat_template={"auto": None, "on": True, "off": False}[a.chat_template],
    )
    print(format_generation_report(m))
    if a.json_out:
        out = Path(a.json_out)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(m, indent=2) + "\n")
        tmp.replace(out)
