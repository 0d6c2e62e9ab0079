"""`tunelab generate MODEL_OR_RUN [PROMPT ...]`: continue prompts with a decoder or seq2seq LM.

Every DecodingOptions field is a flag (--max-new-tokens, --top-p, ...) whose help is the
field's docstring. Prints the continuations (or streams them with --stream); --output writes
JSONL (prompt, text, finish_reason, token counts) instead. --choice / --regex / --json-schema /
--json / --grammar constrain every output (decoding.constraints, needs the `constrained` extra).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tunelab.cli.decoding import add_decoding_flags, decoding_options
from tunelab.cli.flags import add_precision_flags, check_output, verb_parser, write_output
from tunelab.errors import TunelabError

HELP = "continue prompts with a decoder / encoder-decoder LM (greedy, beam, sampling)"
DESCRIPTION = (
    "Generate continuations of PROMPT arguments and/or --file prompts with "
    "MODEL_OR_RUN (an embedded name such as smollm2-135m, a local folder, a .gguf file or "
    "a merged run folder). Prompts are decoded in batches with a KV cache."
)


def add_parser(sub) -> None:
    p = verb_parser(sub, "generate", HELP, DESCRIPTION)
    p.add_argument("model", metavar="MODEL_OR_RUN", help="the model to generate with")
    p.add_argument("prompts", nargs="*", metavar="PROMPT", help="prompts to continue")
    p.add_argument("--file", help="more prompts: .txt (one per line), .jsonl/.csv/.json")
    p.add_argument(
        "--prompt-key",
        default="prompt",
        help="prompt column of --file tables (default: prompt)",
    )
    p.add_argument("--chat", action="store_true", help="wrap each prompt in the chat template")
    p.add_argument("--system", help="system message for --chat")
    p.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    p.add_argument("--output", help="write JSONL results here instead of printing the texts")
    p.add_argument("--batch-size", type=int, default=16, help="prompts decoded at once (16)")
    add_decoding_flags(p)
    c = p.add_argument_group(
        "constrained generation (one of; needs pip install tunelab[constrained])"
    )
    c = c.add_mutually_exclusive_group()
    c.add_argument("--choice", nargs="+", metavar="TEXT", help="every output is one of these")
    c.add_argument("--regex", metavar="R", help="every output fully matches this regex")
    c.add_argument("--json-schema", metavar="FILE", help="every output is JSON valid under it")
    c.add_argument("--json", action="store_true", help="every output is a JSON object")
    c.add_argument(
        "--grammar", metavar="FILE", help="every output is a sentence of this Lark grammar"
    )
    add_precision_flags(p)


def constraint_of(args: argparse.Namespace):
    """The Constraint the flags ask for (None: unconstrained), validated before the model
    loads; a bad file, schema, regex or grammar is one line naming its flag."""
    from tunelab.decoding.constraints import Constraint, check

    if args.choice:
        flag, c = "--choice", Constraint.choice(args.choice)
    elif args.regex is not None:
        flag, c = "--regex", Constraint.regex(args.regex)
    elif args.json:
        flag, c = "--json", Constraint.json_object()
    elif args.json_schema or args.grammar:
        flag = "--json-schema" if args.json_schema else "--grammar"
        path = Path(args.json_schema or args.grammar)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TunelabError(f"{flag} {path}: cannot read it ({exc})") from None
        if args.grammar:
            c = Constraint.grammar(text)
        else:
            try:
                c = Constraint.json_schema(json.loads(text))
            except json.JSONDecodeError as exc:
                raise TunelabError(f"{flag} {path}: not JSON ({exc})") from None
        flag = f"{flag} {path}"
    else:
        return None
    try:
        check(c)
    except TunelabError as exc:
        raise TunelabError(f"{flag}: {exc}") from None
    return c


def run(args: argparse.Namespace) -> None:
    check_output(args.output, "--output")
    if args.system is not None and not args.chat:
        raise TunelabError("--system is the system message of --chat: add --chat or drop it")
    from tunelab import api

    opts = decoding_options(args)
    constraint = constraint_of(args)
    if constraint is not None:
        import dataclasses

        opts = dataclasses.replace(opts, constraint=constraint)
    prompts = list(args.prompts)
    if args.file:
        from tunelab.data.readers import read_texts

        prompts += read_texts(Path(args.file), args.prompt_key, "--prompt-key")
    if args.stream and not args.output:
        shown = -1
        pieces = api.stream(
            args.model, prompts, opts, args.chat, args.system, args.dtype, args.device
        )
        for i, piece in pieces:
            if i != shown:
                if shown >= 0:
                    print()
                if len(prompts) > 1:
                    print(f"[{i}] ", end="")
                shown = i
            sys.stdout.write(piece)
            sys.stdout.flush()
        print()
        return
    show = bool(args.output) and sys.stderr.isatty()
    outs = api.generate(
        args.model,
        prompts,
        opts,
        args.chat,
        args.system,
        args.batch_size,
        progress=show,
        dtype=args.dtype,
        device=args.device,
    )
    if args.output:
        lines = "".join(
            json.dumps(
                {
                    "prompt_index": o.prompt_index,
                    "prompt": prompts[o.prompt_index],
                    "text": o.text,
                    "finish_reason": o.finish_reason,
                    "prompt_tokens": o.prompt_tokens,
                    "generated_tokens": len(o.token_ids),
                }
            )
            + "\n"
            for o in outs
        )
        write_output(args.output, lines, "--output")
        print(f"{len(outs)} generations written to {args.output}")
        return
    for o in outs:
        prefix = f"[{o.prompt_index}] " if len(outs) > 1 else ""
        print(prefix + o.text)
