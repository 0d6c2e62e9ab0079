"""What the pruning methods share: the blocks of a model and what is in them, calibration
inputs, and the importance of heads and neurons.

Families: encoder (BERT-like `attention.self.{query,key,value}` + `attention.output.dense`,
`intermediate.dense` / `output.dense`), decoder (Llama-like `self_attn.{q,k,v,o}_proj`,
`mlp.{gate,up,down}_proj`), encoder-decoder (T5 `SelfAttention.{q,k,v,o}`,
`DenseReluDense.{wi|wi_0,wi_1,wo}`; cross-attention is left alone). Anything else raises
TunelabError. Plan keys: the block index ("3") in a one-stack model, "encoder.3" /
"decoder.3" in an encoder-decoder.

`_importance` scores heads and FFN neurons for `structured`: |dL/d mask| of a per-unit mask of
ones on the input of the Linear that reads them, summed over the calibration batches (one
gradient per batch, not per example). Where a model computes no loss (a base model without a
head, a classifier batch without labels) it falls back to an activation proxy: mean ||unit
activation|| x the norm of its outgoing weights; it says which it used.

The names keep their leading underscore: they are the pruning modules' internals, shared by
`prune`, `structured` and `structured_layers`, not an API.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

from tunelab.errors import TunelabError
from tunelab.strategies.layers import block_groups, layer_groups

_T = TypeVar("_T")

# ---------------------------------------------------------------------------------------------
# the blocks and what is in them


@dataclass(frozen=True)
class _Block:
    key: str
    """Plan key: "3" in a one-stack model, "encoder.3" / "decoder.3" in an encoder-decoder."""
    stack: str
    """encoder or decoder."""
    index: int
    path: str
    """Module path of the stack (the nn.ModuleList)."""
    module: nn.Module

    @property
    def prefix(self) -> str:
        return f"{self.path}.{self.index}"


def _blocks(model: nn.Module) -> list[_Block]:
    """The transformer blocks bottom -> top (encoder before decoder), or a TunelabError."""
    try:
        groups = block_groups(layer_groups(model))
    except TunelabError:
        raise TunelabError(
            f"cannot prune {type(model).__name__}: no stack of transformer blocks found "
            "(pruning supports BERT-, Llama- and T5-style transformers models)"
        ) from None
    two = len({g.stack for g in groups}) > 1
    out = []
    for g in groups:
        index = int(g.name.rsplit(".", 1)[1])
        path = _stack_path(model, g.params[0], index)
        block = model.get_submodule(path)[index]
        out.append(_Block(g.name if two else str(index), g.stack, index, path, block))
    return out


def _stack_path(model: nn.Module, param: str, index: int) -> str:
    parts = param.split(".")
    for k, part in enumerate(parts[:-1]):
        prefix = ".".join(parts[:k])
        if part == str(index) and prefix and isinstance(model.get_submodule(prefix), nn.ModuleList):
            return prefix
    raise TunelabError(f"cannot find the block that holds {param} in {type(model).__name__}")


def _prunable(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """Every nn.Linear inside the blocks (not embeddings, not the task head)."""
    prefixes = tuple(f"{b.prefix}." for b in _blocks(model))
    found = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and name.startswith(prefixes)
    ]
    if not found:
        raise TunelabError(f"cannot prune {type(model).__name__}: its blocks hold no nn.Linear")
    return found


def _linears(m: nn.Module, *names: str) -> bool:
    return all(isinstance(getattr(m, n, None), nn.Linear) for n in names)


@dataclass
class _Attention:
    kind: str
    """bert, llama or t5: which attributes to update."""
    module: nn.Module
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    o: nn.Linear
    head_dim: int

    @property
    def num_heads(self) -> int:
        return self.o.in_features // self.head_dim

    @property
    def group(self) -> int:
        """Query heads per KV head (1 without GQA)."""
        return self.num_heads // (self.k.out_features // self.head_dim)


def _attention_of(block: nn.Module) -> _Attention | None:
    """The block's self-attention (cross-attention is left alone)."""
    for name, m in block.named_modules():
        if "cross" in name.lower() or "encdec" in name.lower():
            continue
        if _linears(m, "query", "key", "value") and hasattr(m, "attention_head_size"):
            parent = block.get_submodule(name.rsplit(".", 1)[0]) if "." in name else block
            out = getattr(getattr(parent, "output", None), "dense", None)
            if isinstance(out, nn.Linear):
                return _Attention("bert", m, m.query, m.key, m.value, out, m.attention_head_size)
        if _linears(m, "q_proj", "k_proj", "v_proj", "o_proj") and hasattr(m, "head_dim"):
            return _Attention("llama", m, m.q_proj, m.k_proj, m.v_proj, m.o_proj, m.head_dim)
        if _linears(m, "q", "k", "v", "o") and hasattr(m, "key_value_proj_dim"):
            return _Attention("t5", m, m.q, m.k, m.v, m.o, m.key_value_proj_dim)
    return None


def _attentions(model: nn.Module) -> list[tuple[_Block, _Attention]]:
    return _per_block(model, _attention_of, "head pruning", "self-attention")


@dataclass
class _Ffn:
    owner: nn.Module
    ins: list[nn.Linear]
    """Linears whose output rows are the intermediate neurons (up, gate / wi, wi_0, wi_1)."""
    out: nn.Linear
    """The Linear that reads them (down_proj / wo / output.dense)."""


def _ffn_of(block: nn.Module) -> _Ffn | None:
    inter = getattr(getattr(block, "intermediate", None), "dense", None)
    out = getattr(getattr(block, "output", None), "dense", None)
    if isinstance(inter, nn.Linear) and isinstance(out, nn.Linear):
        return _Ffn(block.intermediate, [inter], out)
    for _, m in block.named_modules():
        if _linears(m, "up_proj", "down_proj"):
            gate = [m.gate_proj] if _linears(m, "gate_proj") else []
            return _Ffn(m, [m.up_proj, *gate], m.down_proj)
        if _linears(m, "wo") and (_linears(m, "wi") or _linears(m, "wi_0", "wi_1")):
            ins = [m.wi] if _linears(m, "wi") else [m.wi_0, m.wi_1]
            return _Ffn(m, ins, m.wo)
    return None


def _ffns(model: nn.Module) -> list[tuple[_Block, _Ffn]]:
    return _per_block(model, _ffn_of, "FFN pruning", "feed-forward layers")


def _per_block(
    model: nn.Module, find: Callable[[nn.Module], _T | None], method: str, part: str
) -> list[tuple[_Block, _T]]:
    """What `find` finds in each block, or a TunelabError naming the first block without it."""
    out = []
    for block in _blocks(model):
        found = find(block.module)
        if found is None:
            raise TunelabError(
                f"{method} supports BERT-, Llama- and T5-style {part}; block "
                f"{block.key} of {type(model).__name__} has none: use --methods prune-N or wanda-N"
            )
        out.append((block, found))
    return out


# ---------------------------------------------------------------------------------------------
# checks, calibration inputs, counting


def _check_fraction(value: float, what: str, spec: str) -> None:
    if not isinstance(value, (int, float)) or not 0 < value < 1:
        raise TunelabError(
            f"{what} must be between 0 and 1 (exclusive), got {value!r}: "
            f"--methods {spec} takes a percentage from 1 to 99"
        )


def _check_batches(batches: list[dict], what: str) -> None:
    if not batches or not all(isinstance(b, dict) and "input_ids" in b for b in batches):
        raise TunelabError(
            f"{what} needs calibration batches (dicts with input_ids and attention_mask): "
            "give the compress verb some calibration text"
        )


def _inputs(model: nn.Module, batch: dict) -> dict:
    """The batch on the model's device, with what the model needs to run (and give a loss):
    LM labels = input_ids (padding -100) for a generative model; decoder inputs for a base
    encoder-decoder."""
    device = next(model.parameters()).device
    kw = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    can_generate = getattr(model, "can_generate", None)
    if "labels" not in kw and callable(can_generate) and can_generate():
        labels = kw["input_ids"].clone()
        if "attention_mask" in kw:
            labels[kw["attention_mask"] == 0] = -100
        kw["labels"] = labels
    elif getattr(model.config, "is_encoder_decoder", False) and not (
        {"labels", "decoder_input_ids"} & kw.keys()
    ):
        shift = getattr(model, "_shift_right", None)
        kw["decoder_input_ids"] = shift(kw["input_ids"]) if callable(shift) else kw["input_ids"]
    return kw


def _tokens(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """x (..., features) as (tokens, features), without padding where the mask fits."""
    if mask is not None and x.shape[:-1] == mask.shape:
        return x[mask.bool()]
    return x.reshape(-1, x.shape[-1])


def _rounded(x: float) -> float:
    return round(float(x), 6)


def count_params(model: nn.Module) -> int:
    """The number of parameters (a tied weight once)."""
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# importance of heads and neurons


def _importance(
    model: nn.Module, batches: list[dict], outs: list[tuple[nn.Linear, int]]
) -> tuple[list[torch.Tensor], str]:
    """Importance of the units (`unit` consecutive input features each: a head, a neuron) of
    each Linear in `outs`: |dL/d mask| of a mask of ones on its input, summed over the
    batches ("gradient"), or, where the model gives no loss, the mean unit activation norm x
    the unit's outgoing weight norm ("activation")."""
    masks = [
        torch.ones(o.in_features // u, device=o.weight.device, requires_grad=True) for o, u in outs
    ]
    grads = [torch.zeros_like(m) for m in masks]
    acts = [torch.zeros_like(m) for m in masks]
    counts = [0] * len(outs)

    def hook(i: int, unit: int) -> Callable:
        def pre(_: nn.Module, args: tuple) -> tuple:
            x = args[0]  # (..., units * unit)
            with torch.no_grad():
                t = x.detach().float().reshape(-1, len(masks[i]), unit)
                acts[i] += t.norm(dim=-1).sum(0)
                counts[i] += t.shape[0]
            return (x * masks[i].to(x.dtype).repeat_interleave(unit), *args[1:])

        return pre

    hooks = [o.register_forward_pre_hook(hook(i, u)) for i, (o, u) in enumerate(outs)]
    was_training = model.training
    model.eval()
    how = "gradient"
    try:
        with torch.enable_grad():
            for batch in batches:
                loss = getattr(model(**_inputs(model, batch)), "loss", None)
                if loss is None:
                    how = "activation"
                    continue
                found = torch.autograd.grad(loss, masks, allow_unused=True)
                for g, f in zip(grads, found, strict=True):
                    if f is not None:
                        g += f.detach().abs()
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    if how == "gradient":
        return grads, how
    scores = []
    for (o, unit), a, c in zip(outs, acts, counts, strict=True):
        w = o.weight.detach().float().reshape(o.out_features, -1, unit)  # (out, units, unit)
        scores.append(a / max(c, 1) * w.pow(2).sum(dim=(0, 2)).sqrt())
    return scores, how
