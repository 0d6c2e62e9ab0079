"""`--max-new-tokens`, `--num-beams`, ... : every DecodingOptions field as a CLI flag.

Help texts come from the DecodingOptions attribute docstrings; values are parsed from the
field's annotation by the config parser (bool fields take true/false), so a bad value is the
usual one-line error. No torch import: only the options module.
"""

from __future__ import annotations

import argparse
import dataclasses

from tunelab.config.parse import field_docs
from tunelab.errors import TunelabError


def add_decoding_flags(parser: argparse.ArgumentParser, title: str = "decoding options") -> None:
    """One --kebab-case flag per DecodingOptions field, defaulting to the dataclass default."""
    from tunelab.decoding.options import DecodingOptions

    group = parser.add_argument_group(title)
    docs = field_docs(DecodingOptions)
    for f in dataclasses.fields(DecodingOptions):
        if f.metadata.get("flag") is False:  # e.g. constraint: a verb spells it its own way
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        extra = {"nargs": "+"} if isinstance(default, list) else {}
        group.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f"decoding.{f.name}",
            default=argparse.SUPPRESS,
            metavar=f.name.upper(),
            help=f"{docs.get(f.name, '')} (default: {default})".replace("%", "%%"),
            **extra,
        )


def decoding_options(args: argparse.Namespace, **defaults):
    """DecodingOptions from the parsed flags; `defaults` (e.g. max_new_tokens=32) apply to
    flags the user did not give."""
    import typing

    from tunelab.config.parse import parse_value
    from tunelab.decoding.options import DecodingOptions, check_options

    types = typing.get_type_hints(DecodingOptions)
    given = {}
    for key, raw in vars(args).items():
        if not key.startswith("decoding."):
            continue
        name = key.split(".", 1)[1]
        flag = "--" + name.replace("_", "-")
        if name == "early_stopping" and str(raw).lower() == "never":
            given[name] = "never"
        elif name == "early_stopping":
            given[name] = parse_value(raw, bool, flag)
        else:
            given[name] = parse_value(raw, types[name], flag)
    try:
        opts = DecodingOptions(**{**defaults, **given})
    except TypeError as exc:  # a caller default that is not an option: a bug, but say so
        raise TunelabError(f"bad decoding option ({exc})") from None
    try:
        check_options(opts)
    except TunelabError as exc:
        raise TunelabError(as_flags(str(exc))) from None
    return opts


def as_flags(message: str) -> str:
    """A check_options message with its option names (top_p) as this CLI's flags (--top-p)."""
    import re

    from tunelab.decoding.options import DecodingOptions

    names = sorted((f.name for f in dataclasses.fields(DecodingOptions)), key=len, reverse=True)
    pattern = r"(?<![\w-])(" + "|".join(names) + r")\b"
    return re.sub(pattern, lambda m: "--" + m.group(1).replace("_", "-"), message)
