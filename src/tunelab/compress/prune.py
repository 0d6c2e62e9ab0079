"""Unstructured pruning of transformers models (classifiers and LMs) of the three families:
the shapes stay, weights become exact zeros; nothing to re-apply on load.

- `magnitude`: |W| with `torch.nn.utils.prune` (global_unstructured, or l1_unstructured per
  Linear), made permanent with `prune.remove`.
- `wanda`: |W_ij| * ||X_j||_2 (Sun et al. 2023), the lowest per output row. Written here, not
  torchao's: torchao 0.18's `WandaSparsifier` runs on CPU, but it ranks over the whole matrix
  instead of per output row, multiplies by the *squared* norm (its observer keeps a sum of
  squares) and counts padding tokens. Blocks are pruned bottom-up, each block's input
  statistics taken with the blocks below it already pruned, as the paper's reference does.

Both prune every nn.Linear inside the blocks (not the embeddings, not the task head); `blocks`
finds them. `sparsity` measures the zeros there; `count_params` counts parameters. Structured
pruning (heads, FFN neurons, whole blocks: the tensors shrink) is in `structured`.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from tunelab.compress.blocks import (
    _blocks,
    _check_batches,
    _check_fraction,
    _inputs,
    _prunable,
    _rounded,
    _tokens,
    count_params,
)


class _Stop(Exception):
    """Raised by a hook to end a forward pass early (the layers above are not needed)."""


def sparsity(model: nn.Module) -> float:
    """The fraction of zeros over the prunable weights (every nn.Linear inside the blocks)."""
    linears = _prunable(model)
    zeros = sum(int((m.weight == 0).sum()) for _, m in linears)
    return zeros / sum(m.weight.numel() for _, m in linears)


def _report(method: str, target: float, linears: list[tuple[str, nn.Linear]], **extra) -> dict:
    return {
        "method": method,
        "target": target,
        **extra,
        "achieved": _rounded(
            sum(int((m.weight == 0).sum()) for _, m in linears)
            / sum(m.weight.numel() for _, m in linears)
        ),
        "layers": {n: _rounded((m.weight == 0).float().mean()) for n, m in linears},
    }


def magnitude(model: nn.Module, sparsity: float, per_layer: bool = False) -> dict:
    """Zero the smallest-|W| weights of every nn.Linear inside the blocks (not the embeddings,
    not the task head): `sparsity` of them all together (global_unstructured), or of each
    Linear (`per_layer`, l1_unstructured), made permanent with `prune.remove`.

    Returns a report: method, target, scope, achieved sparsity over those weights, and the
    sparsity of each Linear by module name.
    """
    _check_fraction(sparsity, "the sparsity", "prune-N")
    linears = _prunable(model)
    with torch.no_grad():
        if per_layer:
            for _, m in linears:
                torch_prune.l1_unstructured(m, "weight", amount=sparsity)
        else:
            torch_prune.global_unstructured(
                [(m, "weight") for _, m in linears],
                pruning_method=torch_prune.L1Unstructured,
                amount=sparsity,
            )
        for _, m in linears:
            torch_prune.remove(m, "weight")
    return _report("magnitude", sparsity, linears, scope="layer" if per_layer else "global")


def wanda(model: nn.Module, batches: list[dict], sparsity: float) -> dict:
    """Wanda (Sun et al. 2023): in every nn.Linear inside the blocks, zero the
    int(in_features * sparsity) weights of each output row with the lowest |W_ij| * ||X_j||_2,
    X the Linear's input over the non-padding tokens of `batches`.

    Hand-written (torchao 0.18's WandaSparsifier ranks over the whole matrix, not per row, and
    by the squared norm). Blocks go bottom-up: a block's statistics are taken with the blocks
    below it already pruned, and the forward pass stops after that block.

    Returns the same report as `magnitude`, with `per_row` (zeros per row of each Linear).
    """
    _check_fraction(sparsity, "the sparsity", "wanda-N")
    _check_batches(batches, "wanda")
    linears = _prunable(model)
    blocks = _blocks(model)
    first_stack = blocks[0].stack
    mask: list[torch.Tensor | None] = [None]
    was_training = model.training
    model.eval()
    try:
        for block in blocks:
            mine = [(n, m) for n, m in linears if n.startswith(f"{block.prefix}.")]
            norms = {id(m): torch.zeros(m.in_features, device=m.weight.device) for _, m in mine}
            use_mask = block.stack == first_stack  # the batch's mask fits the first stack only

            def observe(m: nn.Module, args: tuple, norms=norms, use_mask=use_mask) -> None:
                x = _tokens(args[0].detach().float(), mask[0] if use_mask else None)
                norms[id(m)] += (x * x).sum(0)  # (in_features,) sum of squares

            def stop(*_) -> None:
                raise _Stop

            hooks = [m.register_forward_pre_hook(observe) for _, m in mine]
            hooks.append(block.module.register_forward_hook(stop))
            try:
                with torch.no_grad():
                    for batch in batches:
                        kw = _inputs(model, batch)
                        mask[0] = kw.get("attention_mask")
                        with contextlib.suppress(_Stop):
                            model(**kw)
            finally:
                for h in hooks:
                    h.remove()
            with torch.no_grad():
                for _, m in mine:
                    k = int(m.in_features * sparsity)
                    score = m.weight.abs().float() * norms[id(m)].sqrt()  # (out, in)
                    drop = score.topk(k, dim=1, largest=False).indices
                    m.weight.scatter_(1, drop, 0.0)
    finally:
        model.train(was_training)
    per_row = {n: int(m.in_features * sparsity) for n, m in linears}
    return _report("wanda", sparsity, linears, per_row=per_row)


__all__ = ["count_params", "magnitude", "sparsity", "wanda"]
