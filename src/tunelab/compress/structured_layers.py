"""Structured pruning by whole blocks: `layers` (+ `apply_layer_plan`), importable from
`structured` too.

Block Influence (ShortGPT, Men et al. 2024): 1 - the mean cosine similarity between a block's
input and output hidden states; one forward pass, no labels needed, and the blocks that barely
change the residual stream go first. At least one block stays in each stack; config layer
counts, `layer_types` and `layer_idx` are updated so the model still runs and generates. Layer
plans are keyed by stack (`encoder` / `decoder`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from tunelab.compress.blocks import (
    _Block,
    _blocks,
    _check_batches,
    _inputs,
    _rounded,
    _tokens,
    count_params,
)
from tunelab.errors import TunelabError
from tunelab.strategies.layers import LAYER_COUNT_KEYS

# ---------------------------------------------------------------------------------------------
# whole blocks


def _block_influence(model: nn.Module, blocks: list[_Block], batches: list[dict]) -> list[float]:
    """1 - mean cosine(block input, block output) over the tokens, per block."""
    sums, counts = [0.0] * len(blocks), [0] * len(blocks)
    seen: list[torch.Tensor | None] = [None] * len(blocks)
    mask: list[torch.Tensor | None] = [None]
    first_stack = blocks[0].stack

    def hooks(i: int) -> tuple[Callable, Callable]:
        def pre(_: nn.Module, args: tuple, kwargs: dict) -> None:
            seen[i] = args[0] if args else kwargs["hidden_states"]

        def post(_: nn.Module, args: tuple, kwargs: dict, output) -> None:
            out = output[0] if isinstance(output, tuple) else output
            m = mask[0] if blocks[i].stack == first_stack else None
            cos = nn.functional.cosine_similarity(
                _tokens(seen[i].float(), m), _tokens(out.float(), m), dim=-1
            )
            sums[i] += float(cos.sum())
            counts[i] += cos.numel()

        return pre, post

    handles = []
    for i, b in enumerate(blocks):
        pre, post = hooks(i)
        handles.append(b.module.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(b.module.register_forward_hook(post, with_kwargs=True))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                kw = _inputs(model, batch)
                mask[0] = kw.get("attention_mask")
                model(**kw)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return [1.0 - s / max(c, 1) for s, c in zip(sums, counts, strict=True)]


def layers(model: nn.Module, count: int, batches: list[dict]) -> dict:
    """Drop the `count` least important whole blocks by Block Influence (ShortGPT: 1 - cosine
    similarity of each block's input and output hidden states on `batches`), at least one
    block left in each stack; config layer counts, layer_types and layer_idx are updated so
    the model still runs and generates.

    Returns the plan: {"method": "layers", "layers": {"<stack>": [dropped block indices]},
    "num_layers": {"<stack>": blocks before}, "importance", "scores", "params_before",
    "params_after"}; stacks are `encoder` / `decoder`.
    """
    _check_batches(batches, "layer pruning")
    blocks = _blocks(model)
    stacks = sorted({b.stack for b in blocks})
    if (
        not isinstance(count, int)
        or isinstance(count, bool)
        or not (1 <= count <= len(blocks) - len(stacks))
    ):
        raise TunelabError(
            f"cannot drop {count!r} of the {len(blocks)} blocks of {type(model).__name__} and keep "
            "one in each stack: --methods prune-layers-N takes N from 1 to "
            f"{len(blocks) - len(stacks)}"
        )
    scores = _block_influence(model, blocks, batches)
    left = {s: sum(b.stack == s for b in blocks) for s in stacks}
    dropped: dict[str, list[int]] = {s: [] for s in stacks}
    for i in sorted(range(len(blocks)), key=lambda i: (scores[i], i)):
        b = blocks[i]
        if sum(map(len, dropped.values())) == count:
            break
        if left[b.stack] > 1:
            left[b.stack] -= 1
            dropped[b.stack].append(b.index)
    before = count_params(model)
    plan = {
        "method": "layers",
        "layers": {s: sorted(v) for s, v in dropped.items() if v},
        "num_layers": {s: sum(b.stack == s for b in blocks) for s in stacks},
        "importance": "block-influence",
        "scores": {b.key: _rounded(v) for b, v in zip(blocks, scores, strict=True)},
    }
    apply_layer_plan(model, plan)
    return {**plan, "params_before": before, "params_after": count_params(model)}


def _move_first_block_state(old: nn.Module, new: nn.Module) -> None:
    """What only block 0 owns (T5's relative position bias) moves to the new block 0."""
    for name, m in old.named_modules():
        if getattr(m, "has_relative_attention_bias", False) is True:
            target = new.get_submodule(name)
            if not target.has_relative_attention_bias:
                target.relative_attention_bias = m.relative_attention_bias
                target.has_relative_attention_bias = True


def _set_layer_count(
    model: nn.Module, path: str, stack: str, two: bool, old: int, dropped: set[int]
) -> None:
    new = old - len(dropped)
    parts = path.split(".")
    owners = [model.get_submodule(".".join(parts[:k])) for k in range(len(parts))]
    configs = []
    for m in owners:
        cfg = getattr(m, "config", None)
        if cfg is not None and all(cfg is not c for c in configs):
            configs.append(cfg)
    for cfg in configs:
        if two and cfg is model.config:  # one config, two stacks: the keys of this stack only
            keys = (
                ("num_layers", "encoder_layers")
                if stack == "encoder"
                else ("num_decoder_layers", "decoder_layers")
            )
        else:
            keys = LAYER_COUNT_KEYS
            types_ = getattr(cfg, "layer_types", None)
            if isinstance(types_, list) and len(types_) == old:
                cfg.layer_types = [t for i, t in enumerate(types_) if i not in dropped]
        for key in keys:
            if getattr(cfg, key, None) == old:
                setattr(cfg, key, new)


def apply_layer_plan(model: nn.Module, plan: dict) -> None:
    """Drop the blocks a `layers` plan dropped from a freshly built model of the same config;
    a model already built from the pruned config (the stack at the pruned size) is left as is.
    """
    blocks = _blocks(model)
    two = len({b.stack for b in blocks}) > 1
    for stack, idx in plan["layers"].items():
        mine = [b for b in blocks if b.stack == stack]
        if not mine:
            raise TunelabError(
                f"the layer plan names a {stack} stack, which {type(model).__name__} lacks"
            )
        path, n = mine[0].path, len(model.get_submodule(mine[0].path))
        old = plan.get("num_layers", {}).get(stack, n)
        if n == old - len(idx) and idx:
            continue
        gone = set(idx)
        if n != old or not gone <= set(range(n)) or len(gone) >= n:
            raise TunelabError(
                f"the layer plan was made for {old} {stack} blocks; this model has {n}: "
                "rebuild it from the source run's config"
            )
        stack_list = model.get_submodule(path)
        kept = nn.ModuleList([blk for i, blk in enumerate(stack_list) if i not in gone])
        if 0 in gone:
            _move_first_block_state(stack_list[0], kept[0])
        for new_index, blk in enumerate(kept):
            for m in blk.modules():
                if isinstance(getattr(m, "layer_idx", None), int):
                    m.layer_idx = new_index  # the KV cache is indexed by it
        parent, _, attr = path.rpartition(".")
        setattr(model.get_submodule(parent), attr, kept)
        _set_layer_count(model, path, stack, two, n, gone)


__all__ = ["apply_layer_plan", "layers"]
