"""Structured pruning of transformers models of the three families: the tensors really
shrink. Each method returns a JSON-able plan that `apply_*_plan` replays on a freshly built
model of the same config, so a pruned state dict loads into it.

- `heads` (+ `apply_head_plan`): Michel et al. 2019: |dL/d mask_h| of a per-head mask on the
  input of the attention output projection, summed over the calibration batches (one
  gradient per batch, not per example), l2-normalised per layer, ranked globally; at least one
  head stays in every layer. GQA (Llama with num_key_value_heads < heads) loses whole KV groups
  (a KV head with all its query heads), so num_key_value_groups stays valid.
- `ffn` (+ `apply_ffn_plan`): first-order Taylor importance |sum_tokens a_j dL/da_j| (the same
  mask gradient, on the input of the FFN's down projection), the same fraction in every block
  (a global ranking can empty one block's FFN and is noisy on a few batches).
- `layers` (+ `apply_layer_plan`): whole blocks by Block Influence; they live in
  `structured_layers` and are re-exported here.

Where a model computes no loss, `heads` and `ffn` fall back to an activation proxy (see
`blocks`); the plan's `importance` says which was used. Cross-attention heads are kept. T5
shares one relative position bias (computed by block 0 for all heads) down the stack, so a
head-pruned T5 attention gets hooks that hand it the rows of its kept heads and pass the full
bias on. Plan keys: the block index ("3") in a one-stack model, "encoder.3" / "decoder.3" in
an encoder-decoder.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import torch
from torch import nn

from tunelab.compress.blocks import (
    _Attention,
    _attentions,
    _check_batches,
    _check_fraction,
    _ffns,
    _importance,
    count_params,
)
from tunelab.compress.structured_layers import apply_layer_plan, layers
from tunelab.errors import TunelabError

# ---------------------------------------------------------------------------------------------
# shrinking Linears and attention modules


def _unit_index(units: list[int], size: int, device) -> torch.Tensor:
    return torch.tensor(
        [u * size + j for u in units for j in range(size)], dtype=torch.long, device=device
    )


def _keep_rows(linear: nn.Linear, idx: torch.Tensor) -> None:
    w = linear.weight
    linear.weight = nn.Parameter(w.data.index_select(0, idx).clone(), w.requires_grad)
    if linear.bias is not None:
        b = linear.bias
        linear.bias = nn.Parameter(b.data.index_select(0, idx).clone(), b.requires_grad)
    linear.out_features = len(idx)


def _keep_cols(linear: nn.Linear, idx: torch.Tensor) -> None:
    w = linear.weight
    linear.weight = nn.Parameter(w.data.index_select(1, idx).clone(), w.requires_grad)
    linear.in_features = len(idx)


def _t5_pre(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """A head-pruned T5 attention takes the rows of its kept heads of the shared bias."""
    module._tunelab_full_bias = None
    bias = kwargs.get("position_bias")
    if bias is not None and bias.shape[1] == module._tunelab_total:
        module._tunelab_full_bias = bias
        kwargs = {**kwargs, "position_bias": bias[:, module._tunelab_kept]}
    return args, kwargs


def _t5_post(module: nn.Module, args: tuple, output: tuple) -> tuple | None:
    """...and passes the full bias on to the blocks above it."""
    full, module._tunelab_full_bias = module._tunelab_full_bias, None
    return None if full is None else (output[0], full, *output[2:])


def _t5_compute_bias(self: nn.Module, *args, **kwargs) -> torch.Tensor:
    """The block that owns the relative bias computes it for all heads, keeps the full one
    for the blocks above and uses the rows of its kept heads."""
    full = type(self).compute_bias(self, *args, **kwargs)  # (1, all heads, q, k)
    self._tunelab_full_bias = full
    return full[:, self._tunelab_kept]


def _shrink_attention(att: _Attention, keep: list[int]) -> None:
    """Keep the query heads `keep` (whole KV groups), their q/k/v rows and o columns."""
    d, group, device = att.head_dim, att.group, att.q.weight.device
    kv_keep = sorted({h // group for h in keep})
    q_idx, kv_idx = _unit_index(keep, d, device), _unit_index(kv_keep, d, device)
    _keep_rows(att.q, q_idx)
    _keep_rows(att.k, kv_idx)
    _keep_rows(att.v, kv_idx)
    _keep_cols(att.o, q_idx)
    m = att.module
    if att.kind == "bert":  # BertSelfAttention views by attention_head_size; keep these true
        m.num_attention_heads, m.all_head_size = len(keep), len(keep) * d
    elif att.kind == "llama":  # LlamaAttention reads head_dim and num_key_value_groups only
        for attr, value in (("num_heads", len(keep)), ("num_key_value_heads", len(kv_keep))):
            if isinstance(getattr(m, attr, None), int):
                setattr(m, attr, value)
    else:  # T5Attention reads n_heads, inner_dim, and the shared relative position bias
        if not hasattr(m, "_tunelab_kept"):
            m._tunelab_total, m._tunelab_kept = m.n_heads, list(range(m.n_heads))
            m._tunelab_full_bias = None
            m.register_forward_pre_hook(_t5_pre, with_kwargs=True)
            m.register_forward_hook(_t5_post)
            m.compute_bias = types.MethodType(_t5_compute_bias, m)
        m._tunelab_kept = [m._tunelab_kept[h] for h in keep]
        m.n_heads, m.inner_dim = len(keep), len(keep) * d


def _applied(
    model: nn.Module,
    apply: Callable[[nn.Module, dict], None],
    method: str,
    found: dict,
    how: str,
    fraction: float,
) -> dict:
    """Prune `model` by the plan {"method", **found, "importance": how, "fraction"} (`apply`
    replays it); the plan with the parameter counts before and after."""
    plan = {"method": method, **found, "importance": how, "fraction": fraction}
    before = count_params(model)
    apply(model, plan)
    return {**plan, "params_before": before, "params_after": count_params(model)}


# ---------------------------------------------------------------------------------------------
# heads


def heads(model: nn.Module, fraction: float, batches: list[dict]) -> dict:
    """Remove `fraction` of all attention heads (self-attention; KV groups under GQA), the
    least important by Michel et al. 2019 (|dL/d head mask| on `batches`, l2-normalised per
    layer; labels from the batch, LM labels = input_ids), keeping at least one per layer.
    q/k/v rows and output columns are cut, so the parameter count falls.

    Returns the plan: {"method": "heads", "heads": {"<layer>": [removed head indices]},
    "num_heads": {"<layer>": heads before}, "importance", "params_before", "params_after"}.
    """
    _check_fraction(fraction, "the head fraction", "prune-heads-N")
    _check_batches(batches, "head pruning")
    atts = _attentions(model)
    scores, how = _importance(model, batches, [(a.o, a.head_dim) for _, a in atts])
    units = []  # (score, layer position, group): a group is a KV head and its query heads
    for pos, ((_, att), s) in enumerate(zip(atts, scores, strict=True)):
        s = s / (s.norm() + 1e-12)
        per_group = s.reshape(-1, att.group).sum(1)
        units += [(float(v), pos, g) for g, v in enumerate(per_group)]
    remove = round(fraction * len(units))
    if remove < 1 or remove > len(units) - len(atts):
        raise TunelabError(
            f"cannot remove {fraction:.0%} of {len(units)} heads"
            + (" (none at all)" if remove < 1 else f" and keep one in each of {len(atts)} layers")
            + ": choose another percentage in --methods prune-heads-N"
        )
    left = [len(s) // a.group for (_, a), s in zip(atts, scores, strict=True)]
    removed: dict[int, list[int]] = {}
    for _, pos, g in sorted(units):
        if remove == 0:
            break
        if left[pos] > 1:
            left[pos] -= 1
            remove -= 1
            group = atts[pos][1].group
            removed.setdefault(pos, []).extend(range(g * group, (g + 1) * group))
    found = {
        "heads": {atts[p][0].key: sorted(hs) for p, hs in sorted(removed.items())},
        "num_heads": {b.key: a.num_heads for b, a in atts},
    }
    return _applied(model, apply_head_plan, "heads", found, how, fraction)


def apply_head_plan(model: nn.Module, plan: dict) -> None:
    """Cut the heads a `heads` plan removed from a freshly built model of the same config."""
    atts = {b.key: a for b, a in _attentions(model)}
    for key, removed in plan["heads"].items():
        att = atts.get(key)
        if att is None:
            raise TunelabError(
                f"the head plan names layer {key}, which {type(model).__name__} lacks"
            )
        expected = plan.get("num_heads", {}).get(key, att.num_heads)
        gone = set(removed)
        if expected != att.num_heads or not gone <= set(range(att.num_heads)):
            raise TunelabError(
                f"the head plan was made for {expected} heads in layer {key}; this model has "
                f"{att.num_heads}: rebuild it from the source run's config"
            )
        keep = [h for h in range(att.num_heads) if h not in gone]
        whole = all(
            (h // att.group * att.group + j) in gone for h in gone for j in range(att.group)
        )
        if not keep or not whole:
            raise TunelabError(
                f"the head plan for layer {key} removes every head or part of a KV group"
            )
        _shrink_attention(att, keep)


# ---------------------------------------------------------------------------------------------
# feed-forward neurons


def ffn(model: nn.Module, fraction: float, batches: list[dict]) -> dict:
    """Remove `fraction` of the intermediate neurons of every block's FFN (at least one kept),
    the least important by first-order Taylor importance |sum a_j dL/da_j| on `batches`
    (activation x outgoing-weight norm where the model gives no loss); up/gate (wi) rows and
    down (wo) columns are cut.

    Returns the plan: {"method": "ffn", "ffn": {"<layer>": [removed neurons]},
    "width": {"<layer>": neurons before}, "importance", "params_before", "params_after"}.
    """
    _check_fraction(fraction, "the FFN fraction", "prune-ffn-N")
    _check_batches(batches, "FFN pruning")
    ffns = _ffns(model)
    scores, how = _importance(model, batches, [(f.out, 1) for _, f in ffns])
    removed = {}
    for (block, _), s in zip(ffns, scores, strict=True):
        n = min(round(fraction * len(s)), len(s) - 1)
        removed[block.key] = sorted(s.topk(n, largest=False).indices.tolist()) if n else []
    if not any(removed.values()):
        raise TunelabError(
            f"{fraction:.0%} of the FFN neurons is none at all: "
            "choose a larger --methods prune-ffn-N"
        )
    found = {"ffn": removed, "width": {b.key: f.out.in_features for b, f in ffns}}
    return _applied(model, apply_ffn_plan, "ffn", found, how, fraction)


def apply_ffn_plan(model: nn.Module, plan: dict) -> None:
    """Cut the neurons an `ffn` plan removed from a freshly built model of the same config."""
    ffns = {b.key: f for b, f in _ffns(model)}
    for key, removed in plan["ffn"].items():
        f = ffns.get(key)
        width = f.out.in_features if f is not None else 0
        if f is None or plan.get("width", {}).get(key, width) != width:
            raise TunelabError(
                f"the FFN plan does not fit layer {key} of {type(model).__name__}: "
                "rebuild the model from the source run's config"
            )
        gone = set(removed)
        keep = [j for j in range(width) if j not in gone]
        if not keep or not gone <= set(range(width)):
            raise TunelabError(f"the FFN plan for layer {key} removes every neuron or unknown ones")
        idx = torch.tensor(keep, dtype=torch.long, device=f.out.weight.device)
        for linear in f.ins:
            _keep_rows(linear, idx)
        _keep_cols(f.out, idx)
        if isinstance(getattr(f.owner, "intermediate_size", None), int):
            f.owner.intermediate_size = len(keep)


__all__ = [
    "apply_ffn_plan",
    "apply_head_plan",
    "apply_layer_plan",
    "ffn",
    "heads",
    "layers",
]
