"""The search space of `tunelab sweep`: `--space lr=1e-5..1e-3:log,lora.r=4,8,16`, parsed and
checked against the fine-tuning config before any trial runs.

One parameter is `KEY=LOW..HIGH` (a float range when an end has a point or an exponent, else
an int range; `:log` samples it on a log scale) or `KEY=A,B,C` (a choice). KEY is a finetune
option (`train.lr`, `lora.r`, `strategy`) or its short form (`lr`, `batch_size`, `r` for the
base strategy's options, `model` for model.name). Parameters are separated by commas (a part
without `=` continues the previous choice list) or given as several --space flags.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tunelab.config.finetune import SECTIONS, Config, build_config
from tunelab.errors import TunelabError
from tunelab.strategies import STRATEGIES

SHORT_KEYS = {"model": "model.name", "data": "data.source"}
"""Short keys that are not a field's own name (the same as `tunelab finetune`'s --model and
--data); every other short key is the name of exactly one option."""

TOP_LEVEL = ("strategy", "task")
"""Config keys without a section."""


@dataclass(frozen=True)
class Param:
    """One dimension of the search space."""

    key: str
    """The config key it sets: `train.lr`, `lora.r`, `strategy`."""
    kind: str
    """float, int (a range) or choice."""
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    """A range sampled on a log scale (plotted with a log x axis too)."""
    choices: tuple[Any, ...] = ()

    @property
    def section(self) -> str:
        return self.key.rpartition(".")[0]

    @property
    def strategy(self) -> str | None:
        """The strategy whose options this sets (it applies only to trials of that one)."""
        return self.section if self.section in STRATEGIES else None

    def spec(self) -> str:
        """Back to the --space syntax, with the full key."""
        if self.kind == "choice":
            return f"{self.key}={','.join(str(c) for c in self.choices)}"
        low, high = (int(self.low), int(self.high)) if self.kind == "int" else (self.low, self.high)
        return f"{self.key}={low}..{high}" + (":log" if self.log else "")

    def probes(self) -> list[Any]:
        """The values that must each make a valid config (the ends of a range, every choice)."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high]


def _scalar(text: str) -> Any:
    """A choice as the number it spells (plotted on a number line), else the string."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _number(text: str, part: str) -> tuple[float, bool]:
    """(value, whether it is written as an int)."""
    try:
        return float(text), text.strip().lstrip("+-").isdigit()
    except ValueError:
        raise TunelabError(
            f"--space {part}: {text!r} is not a number; write KEY=LOW..HIGH[:log] or KEY=A,B,C"
        ) from None


def _range(key: str, text: str, part: str) -> Param:
    body, _, scale = text.partition(":")
    if scale not in ("", "log"):
        raise TunelabError(f"--space {part}: unknown scale {scale!r}; the only one is :log")
    lo_text, _, hi_text = body.partition("..")
    (low, low_int), (high, high_int) = _number(lo_text, part), _number(hi_text, part)
    if not low < high:
        raise TunelabError(f"--space {part}: the low end must be below the high end")
    log = scale == "log"
    if log and low <= 0:
        raise TunelabError(f"--space {part}: a :log range needs a low end above 0")
    kind = "int" if low_int and high_int else "float"
    return Param(key, kind, low, high, log)


def _pieces(spec: str | Sequence[str]) -> list[str]:
    """KEY=VALUES strings: commas and spaces split, a part without `=` joins the previous."""
    texts = [spec] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for part in (p for t in texts for p in t.replace(" ", ",").split(",")):
        if not part:
            continue
        if "=" in part or not out:
            out.append(part)
        else:
            out[-1] += "," + part
    return out


def resolve_key(key: str, strategy: str) -> str:
    """`lr` -> `train.lr`, `r` -> `lora.r` (for strategy lora), `model` -> `model.name`; a full
    key is kept (its option is checked with the config)."""
    if "." in key or key in TOP_LEVEL:
        section = key.partition(".")[0]
        if key not in TOP_LEVEL and section not in SECTIONS and section not in STRATEGIES:
            known = ", ".join([*SECTIONS, *STRATEGIES])
            raise TunelabError(f"--space {key}: unknown section {section!r}; known ones: {known}")
        return key
    if key in SHORT_KEYS:
        return SHORT_KEYS[key]
    found = [
        f"{name}.{key}"
        for name, cls in SECTIONS.items()
        if key in {f.name for f in dataclasses.fields(cls)}
    ]
    if not found and key in {f.name for f in dataclasses.fields(STRATEGIES[strategy].options)}:
        found = [f"{strategy}.{key}"]
    if len(found) != 1:
        why = f"is one of {', '.join(found)}" if found else "is no finetune option"
        raise TunelabError(f"--space {key}: {key!r} {why}; write its full key (train.lr, lora.r)")
    return found[0]


def parse_space(spec: str | Sequence[str], strategy: str = "full") -> list[Param]:
    """The parameters of a --space value (one string or several); `strategy` is the base
    config's, for short keys of its options.

    Raises:
        TunelabError: a malformed part, an unknown key, a repeated key, an empty space.
    """
    params: list[Param] = []
    for part in _pieces(spec):
        raw_key, eq, text = part.partition("=")
        if not eq or not raw_key or not text:
            raise TunelabError(
                f"--space {part!r}: write KEY=LOW..HIGH[:log] or KEY=A,B,C (e.g. "
                "lr=1e-5..1e-3:log,lora.r=4,8,16)"
            )
        key = resolve_key(raw_key.strip(), strategy)
        if any(p.key == key for p in params):
            raise TunelabError(f"--space {part}: {key} is given twice; give it once")
        if ".." in text:
            params.append(_range(key, text, part))
        else:
            choices = tuple(_scalar(c) for c in text.split(","))
            if len(set(choices)) != len(choices):
                raise TunelabError(f"--space {part}: a choice is repeated; list each once")
            params.append(Param(key, "choice", choices=choices))
    if not params:
        raise TunelabError("--space is empty: give e.g. lr=1e-5..1e-3:log,lora.r=4,8,16")
    return params


def trial_overrides(base: Config, values: dict[str, Any]) -> dict[str, Any]:
    """Flat `section.key` overrides of the base config with a trial's `values` set (a changed
    strategy starts from its own defaults)."""
    saved = base.to_dict()
    out: dict[str, Any] = {f"{s}.{k}": v for s in SECTIONS for k, v in saved[s].items()}
    strategy = str(values.get("strategy", base.strategy))
    out |= {"task": base.task, "strategy": strategy}
    if strategy == base.strategy:
        out |= {f"{strategy}.{k}": v for k, v in base.strategy_options.items()}
    return out | values


def applies(param: Param, strategy: str) -> bool:
    """Whether `param` takes part in a trial of `strategy` (a strategy's options only there)."""
    return param.strategy in (None, strategy)


def check_space(params: list[Param], base: Config) -> None:
    """Every end of every range and every choice must make a valid config with the base one;
    a strategy's options need that strategy (the base one, or a choice of `strategy`).

    Raises:
        TunelabError: naming --space and the parameter.
    """
    strategies = next((list(p.choices) for p in params if p.key == "strategy"), [base.strategy])
    for p in params:
        if p.strategy is not None and p.strategy not in strategies:
            raise TunelabError(
                f"--space {p.spec()}: these are options of strategy {p.strategy} but the sweep "
                f"trains {', '.join(map(str, strategies))}: add --strategy {p.strategy}"
            )
        for value in p.probes():
            values = {p.key: value} | ({"strategy": p.strategy} if p.strategy else {})
            try:
                build_config(overrides=trial_overrides(base, values))
            except TunelabError as exc:
                raise TunelabError(f"--space {p.spec()}: {exc}") from None
