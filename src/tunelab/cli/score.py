"""`tunelab score`: log-probability and perplexity of texts under a language model.

tunelab score smollm2-135m "The cat sat on the mat." "Mat the on sat cat the."
tunelab score smollm2-135m " Paris." --prompt "The capital of France is"
tunelab score smollm2-135m --file book.txt --whole-file --window 1024 --stride 512
tunelab score runs/chat --data chatterbot --limit 100 --output scores.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tunelab.cli.flags import (
    add_chat_template_flag,
    add_precision_flags,
    chat_template,
    check_output,
    verb_parser,
    write_output,
)
from tunelab.errors import TunelabError

HELP = "log-probability and perplexity of texts (or of completions given prompts)"
DESCRIPTION = (
    "Score texts under a causal or seq2seq LM: log p(text) by the chain rule, "
    "the scored token count and perplexity exp(-logprob/tokens). With --prompt or --data "
    "only the completion (response) tokens are scored, given the prompt. Texts longer than "
    "the model's context are scored with a sliding window (--window, --stride)."
)


def add_parser(sub) -> None:
    p = verb_parser(sub, "score", HELP, DESCRIPTION)
    p.add_argument("model", help="model name, folder, .gguf file or generative run folder")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to score")
    p.add_argument("--file", help="more texts: .txt (one per line), .csv, .tsv, .jsonl, .json")
    p.add_argument("--text-column", default="text", help="text column of --file (default: text)")
    p.add_argument(
        "--whole-file", action="store_true", help="score the whole .txt --file as one text"
    )
    p.add_argument("--prompt", help="score every text as a completion of this prompt")
    p.add_argument(
        "--data",
        help="prompt/response pairs (file or embedded set): score each response given its prompt",
    )
    for name, default in (("prompt", "prompt"), ("response", "response")):
        p.add_argument(
            f"--{name}-column",
            f"--data.{name}_column",
            dest=f"{name}_column",
            default=default,
            help=f"{name} column of --data (default: {default})",
        )
    p.add_argument("--limit", type=int, help="score only the first N pairs of --data")
    add_chat_template_flag(
        p,
        "--data prompts in the chat template (auto: a run's setting, else if the "
        "tokenizer has one)",
    )
    p.add_argument("--window", type=int, help="sliding-window size in tokens (decoders)")
    p.add_argument("--stride", type=int, help="tokens between windows (default: window/2)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per pass (default: 8)")
    p.add_argument(
        "--token-logprobs", action="store_true", help="include per-token log-probabilities"
    )
    p.add_argument("--output", help="write one JSON line per text here instead of a table")
    add_precision_flags(p)


def _check(a: argparse.Namespace) -> None:
    """The numbers and combinations of score's flags, before any model loads."""
    for flag, value, least in (("--batch-size", a.batch_size, 1), ("--limit", a.limit, 1)):
        if value is not None and value < least:
            raise TunelabError(f"{flag} must be at least {least}, got {value}")
    if a.window is not None and a.window < 2:
        raise TunelabError(f"--window must be at least 2 tokens, got {a.window}")
    if a.stride is not None and (a.window is None or not 1 <= a.stride < a.window):
        raise TunelabError(
            f"--stride {a.stride} needs a --window and must be from 1 to window - 1, so every "
            "token is scored once"
        )
    if a.whole_file and not a.file:
        raise TunelabError("--whole-file reads the --file as one text: add --file")


def run(a: argparse.Namespace) -> None:
    check_output(a.output, "--output")
    _check(a)
    from tunelab import api
    from tunelab.data.readers import read_texts

    texts = list(a.texts)
    if a.file and a.whole_file:
        path = Path(a.file)
        if not path.is_file():
            raise TunelabError(f"{path} does not exist: pass an existing text file")
        texts.append(path.read_text(encoding="utf-8", errors="replace"))
    elif a.file:
        texts += read_texts(a.file, a.text_column)
    scored = api.score(
        a.model,
        texts,
        prompt=a.prompt,
        data=a.data,
        prompt_column=a.prompt_column,
        response_column=a.response_column,
        limit=a.limit,
        chat_template=chat_template(a),
        batch_size=a.batch_size,
        window=a.window,
        stride=a.stride,
        token_logprobs=a.token_logprobs,
        dtype=a.dtype,
        device=a.device,
    )
    texts, prompts, results = scored.texts, scored.prompts, scored.results
    total = sum(r.tokens for r in results)
    if a.output:
        rows = []
        for i, (t, r) in enumerate(zip(texts, results, strict=True)):
            row = {"text": t, "logprob": r.logprob, "tokens": r.tokens}
            row["perplexity"] = r.perplexity if r.tokens else None
            if prompts:
                row = {"prompt": prompts[i], **row}
            if r.token_logprobs is not None:
                row["token_logprobs"] = r.token_logprobs
            rows.append(json.dumps(row) + "\n")
        write_output(a.output, "".join(rows), "--output")
    else:
        print(f"{'logprob':>12} {'tokens':>7} {'perplexity':>11}  text")
        for t, r in zip(texts, results, strict=True):
            shown = " ".join(t.split())
            shown = shown[:60] + ("..." if len(shown) > 60 else "")
            pp = f"{r.perplexity:11.3f}" if r.tokens else f"{'n/a':>11}"
            print(f"{r.logprob:12.3f} {r.tokens:7d} {pp}  {shown}")
    summary = "n/a" if total == 0 else f"{scored.perplexity:.3f}"
    print(f"perplexity {summary} over {total} tokens of {len(texts)} texts", file=sys.stderr)
