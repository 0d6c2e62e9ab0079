"""freeze: partial fine-tuning: the embeddings and lowest blocks stay frozen, the rest trains."""

from __future__ import annotations

import fnmatch
import re

from torch import nn

from tunelab.errors import TunelabError
from tunelab.strategies.base import Strategy, first_doc_line
from tunelab.strategies.layers import LayerGroup, block_groups, layer_groups
from tunelab.strategies.options import FreezeOptions

PARTS = ("encoder", "decoder")


def _matcher(pattern: str):
    if pattern.startswith("re:"):
        try:
            regex = re.compile(pattern[3:])
        except re.error as exc:
            raise TunelabError(
                f"freeze.patterns: {pattern!r} is not a regular expression ({exc})"
            ) from None
        return lambda name: regex.search(name) is not None
    return lambda name: fnmatch.fnmatchcase(name, pattern)


def frozen_names(model: nn.Module, options: FreezeOptions, family: str) -> set[str]:
    """The parameter names `options` freeze on `model`.

    Raises:
        TunelabError: a bad option (unknown part, part on a model that is not an
            encoder-decoder, layers out of range, a pattern that matches nothing).
    """
    part = options.part
    if part is not None and part not in PARTS:
        raise TunelabError(f"freeze.part must be encoder or decoder, got {part!r}")
    if part is not None and family != "encoder-decoder":
        raise TunelabError(
            f"freeze.part={part} needs an encoder-decoder model, {type(model).__name__} is "
            f"a{'n' if family[0] in 'aeiou' else ''} {family}: use freeze.layers instead"
        )
    groups = layer_groups(model)
    blocks = block_groups(groups)
    n = options.layers
    if n is None:
        n = 0 if part is not None else len(blocks) // 2
    if not 0 <= n <= len(blocks):
        raise TunelabError(
            f"freeze.layers must be between 0 and {len(blocks)} (the blocks of "
            f"{type(model).__name__}), got {n}"
        )
    chosen: list[LayerGroup] = list(blocks[:n])
    if options.embeddings:
        chosen += [g for g in groups if g.kind == "embeddings"]
    if part is not None:
        stack = [g for g in blocks if g.stack == part]
        if not stack:
            raise TunelabError(f"freeze.part={part}: {type(model).__name__} has no {part} blocks")
        chosen += stack
    frozen = {name for g in chosen for name in g.params}

    head = {name for g in groups if g.kind == "head" for name in g.params}
    body = [name for g in groups if g.kind != "head" for name in g.params]
    for pattern in [p.strip() for p in (options.patterns or "").split(",") if p.strip()]:
        matches = _matcher(pattern)
        hits = [name for name in body if matches(name)]
        if not hits:
            example = body[len(body) // 2] if body else ""
            raise TunelabError(
                f"freeze.patterns: {pattern!r} matches no parameter outside the head "
                f"(names look like {example}; globs must match the whole name, e.g. *.bias)"
            )
        frozen.update(hits)
    return frozen - head


def apply(model: nn.Module, options: FreezeOptions, family: str, total_steps: int) -> nn.Module:
    """Freeze what `options` say (the head always trains) and return the model.

    Raises:
        TunelabError: a bad option (see `frozen_names`) or nothing left to train.
    """
    frozen = frozen_names(model, options, family)
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen)
    if not any(p.requires_grad for p in model.parameters()):
        raise TunelabError("freeze left nothing to train: freeze fewer layers or patterns")
    return model


STRATEGY = Strategy("freeze", FreezeOptions, apply, first_doc_line(__doc__))
