"""The flag machinery every verb shares: `--section.key` options generated from options
dataclasses (their attribute docstrings are the help), short forms, and writing an output file
a user named. Nothing here imports torch."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from tunelab.config.parse import field_docs
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
    "--track": "train.track",
    "--optimizer": "train.optimizer",
    "--distributed": "train.distributed",
}
FLAGS = {"--resume": "run.resume", "--merge": "run.merge"}


class UsageError(TunelabError):
    """A command line argparse refuses (unknown option, bad choice, missing argument)."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose mistakes are one line (`tunelab: error: ...`, exit code 2, no
    usage block): they raise UsageError, naming the verb's --help. Sub-parsers (the verbs,
    `models convert`, `data inspect`) are of this class too."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")

    def parse_known_args(self, args=None, namespace=None):
        known, extras = super().parse_known_args(args, namespace)
        if extras and " " in self.prog:  # a verb's parser ("tunelab finetune"): name the verb
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return known, extras


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


def verb_parser(
    sub, name: str, help_text: str, description: str, usage: str | None = None
) -> argparse.ArgumentParser:
    """The parser of verb `name` (no abbreviated flags: a typo must not pick another option)."""
    extra = {"usage": usage} if usage else {}
    return sub.add_parser(
        name, help=help_text, description=description, allow_abbrev=False, **extra
    )


def add_option_sections(p: argparse.ArgumentParser, sections: dict, title: str) -> None:
    """One argument group per config section, then one per strategy that has options."""
    from tunelab.strategies import STRATEGIES

    for name, cls in sections.items():
        add_section(p, name, cls, f"{name} {title}")
    for name, info in STRATEGIES.items():
        if dataclasses.fields(info.options):
            add_section(p, name, info.options, f"{name} strategy: {name}: {info.summary}")


CHAT_TEMPLATE = {"auto": None, "on": True, "off": False}
"""--chat-template choices -> the value the recipes take (None: the run's own setting)."""


def add_chat_template_flag(group, help_text: str) -> None:
    """--chat-template auto|on|off (read it back with `chat_template(args)`)."""
    group.add_argument(
        "--chat-template", choices=tuple(CHAT_TEMPLATE), default="auto", help=help_text
    )


def chat_template(args: argparse.Namespace) -> bool | None:
    return CHAT_TEMPLATE[args.chat_template]


def check_output(path: str | Path | None, flag: str) -> None:
    """Refuse an output path that cannot be written, before any work is done."""
    if path is None:
        return
    out = Path(path)
    if out.is_dir():
        raise TunelabError(f"{flag} {out} is a folder: name a file")
    if not out.parent.is_dir():
        raise TunelabError(f"{flag} {out}: folder {out.parent} does not exist; create it first")


def write_output(path: str | Path, text: str, flag: str) -> None:
    """Write `text` to the file a user named with `flag`, atomically, or a one-line error."""
    from tunelab.runs.workdir import write_text

    check_output(path, flag)
    out = Path(path)
    try:
        write_text(out, text)
    except OSError as exc:
        raise TunelabError(
            f"cannot write {flag} {out} ({exc.strerror}): pick a writable path"
        ) from None


def add_precision_flags(p: argparse.ArgumentParser) -> None:
    """--dtype and --device, the same on every inference verb (`models.precision`)."""
    from tunelab.models.precision import DEVICE_HELP, DTYPE_HELP

    p.add_argument("--dtype", default="auto", help=f"what the model runs in: {DTYPE_HELP}")
    p.add_argument("--device", default="auto", help=f"where it runs: {DEVICE_HELP}")
