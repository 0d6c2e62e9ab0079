"""Turn raw label values into class names: `--data.label_map` and `--data.bins`.

- label_map renames raw values: `{"0": "neg", "1": "pos"}` (JSON or YAML), `0=neg,1=pos`, or a
  file: .json / .yaml holding a mapping (or a list: names of 0, 1, ...), .txt holding one name
  per line (line i names i). Keys are compared as text, and a whole number matches its float
  spelling (1 matches 1.0). Every non-empty label must be in the map: a typo in a key would
  otherwise leave a class under its raw name.
- bins cuts a numeric label column into classes, as pandas' cut / qcut do: a count N gives N
  classes of about equal size, cut at quantiles of the data it is fitted on (the source, or
  train_file when split files are given: validation and test use the same edges); edges
  e1 < e2 < ... give the classes x < e1, e1 <= x < e2, ..., x >= ek. Classes are named by
  their range (`<2.5`, `[2.5, 4)`, `>=4`) or by bin_names, lowest first.

Empty labels stay empty (cleaning drops and counts them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError


def _yaml(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_label_map(value: Any) -> dict[str, str] | None:
    """The label map of `--data.label_map` (a mapping, its text, or a file); None for none."""
    if value is None or value == "" or value == {}:
        return None
    loaded = value
    if isinstance(value, str):
        text = value.strip()
        path = Path(text).expanduser()
        if not text.startswith(("{", "[")) and "=" not in text and path.suffix:
            if not path.is_file():
                raise TunelabError(f"--data.label_map file {text} does not exist")
            content = path.read_text(encoding="utf-8-sig")
            if path.suffix.lower() == ".txt":
                loaded = [line.strip() for line in content.splitlines() if line.strip()]
            else:
                loaded = _yaml(content)
        elif "=" in text and not text.startswith("{"):
            loaded = dict(_pair(item) for item in text.split(",") if item.strip())
        else:
            loaded = _yaml(text)
    if isinstance(loaded, list | tuple):
        loaded = dict(enumerate(loaded))
    if not isinstance(loaded, dict) or not loaded:
        raise TunelabError(
            f'--data.label_map {value!r} is not a mapping: write \'{{"0": "neg", "1": '
            '"pos"}\', 0=neg,1=pos or the path of a .json/.yaml/.txt file'
        )
    return {_key(k): str(v).strip() for k, v in loaded.items()}


def _pair(item: str) -> tuple[str, str]:
    key, sep, name = item.partition("=")
    if not sep or not key.strip() or not name.strip():
        raise TunelabError(f"--data.label_map entry {item.strip()!r} must be RAW=NAME, e.g. 0=neg")
    return key.strip(), name.strip()


def _key(value: Any) -> str:
    """A label as the map compares it: a number by its value (1, 1.0 and "1.0" are "1")."""
    text = str(value).strip()
    number = _number(text) if not isinstance(value, bool) else None
    if number is None:
        return text
    return str(int(number)) if number.is_integer() else repr(number)


def map_labels(examples: list[dict[str, str]], label_map: dict[str, str]) -> list[dict[str, str]]:
    """`examples` with each label renamed by `label_map` (new dicts).

    Raises:
        TunelabError: a label that the map does not name (the message lists some of them).
    """
    out, missing = [], []
    for example in examples:
        raw = (example.get("label") or "").strip()
        if not raw:
            out.append(example)
            continue
        name = label_map.get(_key(raw))
        if name is None:
            missing.append(raw)
            continue
        out.append({**example, "label": name})
    if missing:
        shown = ", ".join(sorted(set(missing))[:5])
        raise TunelabError(
            f"labels {shown} are not in --data.label_map (keys: "
            f"{', '.join(list(label_map)[:10])}): add them to the map"
        )
    return out


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@dataclass
class Bins:
    """The parsed `--data.bins`: a count (edges fitted later) or the edges themselves."""

    count: int | None
    edges: list[float] | None
    names: list[str] | None


def parse_bins(bins: Any, bin_names: Any = None) -> Bins | None:
    """`--data.bins` and `--data.bin_names`, checked; None when there are no bins.

    A single whole number is a count; a list (2.5,4 or [2.5, 4] or [3]) is edges.
    """
    if bins is None or bins == "":
        if bin_names not in (None, ""):
            raise TunelabError("--data.bin_names names the classes of --data.bins: set both")
        return None
    value = _yaml(bins) if isinstance(bins, str) else bins
    if isinstance(value, str) and "," in value:
        value = [v for v in value.split(",") if v.strip()]
    names = _names(bin_names)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not float(value).is_integer() or value < 2:
            raise TunelabError(
                f"--data.bins {bins} is a count of classes and must be a whole number >= 2; "
                "for one edge write [value]"
            )
        count, edges = int(value), None
    elif isinstance(value, list | tuple) and value:
        edges = [_edge(v, bins) for v in value]
        if any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
            raise TunelabError(f"--data.bins edges {bins} must increase")
        count = None
    else:
        raise TunelabError(
            f"--data.bins {bins!r}: give a count (3) or increasing edges (2.5,4 or [2.5, 4])"
        )
    wanted = count if count is not None else len(edges) + 1
    if names is not None and len(names) != wanted:
        raise TunelabError(
            f"--data.bin_names gives {len(names)} names for {wanted} bins: give one per bin"
        )
    return Bins(count, edges, names)


def _edge(value: Any, bins: Any) -> float:
    number = _number(str(value).strip())
    if number is None:
        raise TunelabError(f"--data.bins edge {value!r} of {bins} is not a number")
    return number


def _names(bin_names: Any) -> list[str] | None:
    if bin_names is None or bin_names == "":
        return None
    value = _yaml(bin_names) if isinstance(bin_names, str) else bin_names
    if isinstance(value, str):
        value = value.split(",")
    names = [str(n).strip() for n in value] if isinstance(value, list | tuple) else []
    if not names or not all(names) or len(set(names)) != len(names):
        raise TunelabError(f"--data.bin_names {bin_names!r}: give distinct names, low,mid,high")
    return names


def _values(examples: list[dict[str, str]]) -> list[float | None]:
    out = []
    for i, example in enumerate(examples):
        raw = (example.get("label") or "").strip()
        if not raw:
            out.append(None)
            continue
        number = _number(raw)
        if number is None:
            raise TunelabError(
                f"--data.bins needs numeric labels, but row {i + 1} has {raw!r}: "
                "check --data.label_column"
            )
        out.append(number)
    return out


def fit_edges(bins: Bins, examples: list[dict[str, str]]) -> list[float]:
    """The edges of `bins`: given, or cut at quantiles of the examples' labels so that each
    class gets about the same number of rows (an edge halfway between the values around it)."""
    if bins.edges is not None:
        return bins.edges
    values = sorted(v for v in _values(examples) if v is not None)
    edges: list[float] = []
    for i in range(1, bins.count or 0):
        k = round(i * len(values) / (bins.count or 1))
        if 0 < k < len(values):
            edge = (values[k - 1] + values[k]) / 2
            if not edges or edge > edges[-1]:
                edges.append(edge)
    if len(edges) != (bins.count or 0) - 1:
        raise TunelabError(
            f"the labels have too few distinct values for {bins.count} classes of equal size: "
            "lower --data.bins or give its edges"
        )
    return edges


def bin_names(edges: list[float], names: list[str] | None = None) -> list[str]:
    """The class names of the bins cut at `edges`, lowest first."""
    if names is not None:
        return names
    fmt = [f"{e:g}" for e in edges]
    middle = [f"[{a}, {b})" for a, b in zip(fmt, fmt[1:], strict=False)]
    return [f"<{fmt[0]}", *middle, f">={fmt[-1]}"]


def bin_labels(
    examples: list[dict[str, str]], edges: list[float], names: list[str] | None = None
) -> list[dict[str, str]]:
    """`examples` with each numeric label replaced by the name of its bin (new dicts)."""
    import bisect

    labels = bin_names(edges, names)
    return [
        {**example, "label": "" if value is None else labels[bisect.bisect_right(edges, value)]}
        for example, value in zip(examples, _values(examples), strict=True)
    ]


class Labeler:
    """label_map and bins of a DataOptions, applied to every file of a run alike: the first
    call fits the bin edges (on the source, or train_file), later calls reuse them."""

    def __init__(self, label_map: Any = None, bins: Any = None, names: Any = None) -> None:
        self.label_map = parse_label_map(label_map)
        self.bins = parse_bins(bins, names)
        if self.label_map and self.bins:
            raise TunelabError(
                "--data.label_map renames raw labels and --data.bins makes new ones: use one "
                "(--data.bin_names names the bins)"
            )
        self.edges: list[float] | None = None

    @property
    def active(self) -> bool:
        return bool(self.label_map or self.bins)

    def __call__(self, examples: list[dict[str, str]]) -> list[dict[str, str]]:
        if self.label_map:
            return map_labels(examples, self.label_map)
        if self.bins:
            if self.edges is None:
                self.edges = fit_edges(self.bins, examples)
            return bin_labels(examples, self.edges, self.bins.names)
        return examples
