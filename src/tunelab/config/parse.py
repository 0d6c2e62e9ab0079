"""Options dataclasses <-> YAML and flags: attribute docstrings as --help text, value parsing.

Precedence everywhere is dataclass defaults < YAML file < command-line overrides. Each field's
attribute docstring is its `--help` text (read from the source with `ast`, so there is one
place to document an option).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tunelab.errors import TunelabError


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass, by field name (the string right after a field)."""
    try:
        tree = ast.parse(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(the non-None type, whether None is allowed) of a field annotation."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def parse_value(raw: Any, tp: Any, key: str) -> Any:
    """Turn a YAML or command-line value into the field's type, or raise a one-line error."""
    base, optional = _base_type(tp)
    if raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null")):
        if optional:
            return None
        raise TunelabError(f"{key} cannot be empty: give a value")
    origin = typing.get_origin(base)
    try:
        if origin is list:
            if isinstance(raw, str):
                return [raw]
            return [str(x) for x in raw]
        if base is bool:
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("true", "1", "yes", "on"):
                return True
            if str(raw).lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if base is int:
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError
            return int(raw)
        if base is float:
            return float(raw)
        if base is str:
            return str(raw)
        if isinstance(base, tuple) or origin is tuple:
            return tuple(raw)
    except (TypeError, ValueError):
        pass
    else:
        return raw
    name = getattr(base, "__name__", str(base))
    raise TunelabError(f"{key} expects {name}, got {raw!r}: fix the value in the config or flag")


def update_dataclass(obj: Any, values: dict[str, Any], section: str) -> Any:
    """A copy of the options dataclass `obj` with `values` parsed in (one-line error for an
    unknown key or a bad value; `section` names them)."""
    fields = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    changes = {}
    for key, raw in values.items():
        if key not in fields:
            raise TunelabError(
                f"unknown option {section}.{key}: known ones are {', '.join(sorted(fields))}"
            )
        changes[key] = parse_value(raw, hints[key], f"{section}.{key}")
    return dataclasses.replace(obj, **changes)


def read_yaml(yaml_path: str | Path | None) -> dict[str, Any]:
    """The mapping in a YAML config file ({} for None), or a one-line error."""
    if yaml_path is None:
        return {}
    path = Path(yaml_path)
    if not path.is_file():
        raise TunelabError(f"config file {path} not found: pass an existing YAML file")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise TunelabError(f"config file {path} is not valid YAML{where}: fix it") from None
    if not isinstance(raw, dict):
        raise TunelabError(f"config file {path} must hold a mapping of sections")
    return raw


def saved_overrides(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved config.yaml (sections of options) as flat `section.key` overrides."""
    return {
        f"{s}.{k}": v for s, sec in saved.items() if isinstance(sec, dict) for k, v in sec.items()
    }


def sections_dict(config: Any, sections: typing.Iterable[str]) -> dict[str, Any]:
    """The named option sections of a config as plain dicts, in the YAML layout."""
    return {s: dataclasses.asdict(getattr(config, s)) for s in sections}
