"""Many ranks' models: wrapping (DDP, or FSDP2 `fully_shard` per transformer block), how one
step runs on them (`Engine`), and their state (full weights gathered on rank 0, sharded
resumable checkpoints with torch.distributed.checkpoint).

Split from `training/distributed.py`, which keeps the process group itself (who this rank is,
collectives, batch sharding, what cannot run on many processes) and imports no torch at
module level, so the CLI's `--nproc` checks stay light.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunelab.errors import TunelabError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from tunelab.training.distributed import DistContext


def _blocks(model: nn.Module) -> list[nn.Module]:
    """Transformer blocks: modules of the classes transformers declares `_no_split_modules`
    that sit in a ModuleList (so embeddings, whose weights heads may tie, stay in the root)."""
    from torch import nn

    names: set[str] = set()
    for m in model.modules():
        names |= set(getattr(m, "_no_split_modules", None) or ())
    return [
        child
        for m in model.modules()
        if isinstance(m, nn.ModuleList)
        for child in m
        if type(child).__name__ in names
    ]


def _skeleton(model: nn.Module) -> nn.Module:
    """A copy of `model` whose parameters are on the meta device (no memory): what rank 0
    refills with the full weights after FSDP training. Buffers are copied (small); tied
    weights stay tied (one meta tensor for one parameter)."""
    import torch
    from torch import nn

    memo: dict[int, Any] = {
        id(p): nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
        for p in model.parameters()
    }
    return copy.deepcopy(model, memo)


def materialize(skeleton: nn.Module, full: dict[str, torch.Tensor]) -> nn.Module:
    """Fill the skeleton's parameters from a full state dict (tied ones share one tensor)."""
    import torch
    from torch import nn

    seen: dict[int, nn.Parameter] = {}
    for name, p in list(skeleton.named_parameters(remove_duplicate=False)):
        if id(p) not in seen:
            seen[id(p)] = nn.Parameter(full[name].detach().clone(), p.requires_grad)
        owner, _, leaf = name.rpartition(".")
        setattr(skeleton.get_submodule(owner) if owner else skeleton, leaf, seen[id(p)])
    with torch.no_grad():
        for name, b in skeleton.named_buffers():
            if name in full:
                b.copy_(full[name])
    return skeleton


@dataclass
class Wrapped:
    """A model prepared for many processes: `model` runs forward/backward, `inner` is the
    module itself (hooks, evaluation, checkpoints), `skeleton` what rank 0 refills (FSDP)."""

    model: nn.Module
    inner: nn.Module
    skeleton: nn.Module | None = None


def wrap(model: nn.Module, ctx: DistContext) -> Wrapped:
    """DDP, or FSDP2 `fully_shard` per transformer block and then on the root, after making
    every rank start from rank 0's weights."""
    import torch
    import torch.distributed as dist

    model.to(ctx.device)
    if ctx.mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
        # a strategy may leave trainable parameters out of some forward passes
        ddp = DDP(model, device_ids=ids, find_unused_parameters=True)
        return Wrapped(ddp, model)
    from torch.distributed.fsdp import fully_shard

    _check_shardable(model, ctx.world)
    with torch.no_grad():  # DDP does this itself; fully_shard trusts every rank's copy
        for t in [*model.parameters(), *model.buffers()]:
            if type(t.data) is torch.Tensor:  # a quantized base (QLoRA's NF4) cannot be
                dist.broadcast(t.data, src=0)  # sent; every rank made it from the same file
    skeleton = _skeleton(model) if ctx.main else None
    for block in _blocks(model):
        fully_shard(block)
    fully_shard(model)
    return Wrapped(model, model, skeleton)


def _check_shardable(model: nn.Module, world: int) -> None:
    """FSDP2 splits a tensor subclass (QLoRA's NF4 weights) with the subclass's own split,
    which torchao allows only when the rows and every inner tensor (codes, block scales,
    their scale groups) divide by the number of processes: SmolLM2's do at 2 ranks, a
    32-wide toy's do not. Refused in one line before anything is sharded.

    Raises:
        TunelabError: a quantized weight that cannot be split `world` ways.
    """
    import torch

    for name, p in model.named_parameters():
        t = p.data
        if type(t) is torch.Tensor or not hasattr(t, "__tensor_flatten__"):
            continue
        # torchao names the inner tensors its split divides (not the scalar mean, nor the
        # 16-value code book); another subclass: every inner tensor of more than one value
        split = getattr(
            sys.modules.get(type(t).__module__), "_INNER_TENSOR_NAMES_FOR_SHARDING", None
        )
        names = split or [n for n in t.__tensor_flatten__()[0] if getattr(t, n).numel() > 1]
        if t.shape[0] % world or any(getattr(t, n).numel() % world for n in names):
            raise TunelabError(
                f"--distributed fsdp cannot split the 4-bit weight {name} {tuple(t.shape)} "
                f"across {world} processes (its quantization blocks do not divide by "
                f"{world}): use --distributed ddp, or another --nproc"
            )


def optimizer_step(optimizer, scaler) -> Callable[[], None]:
    """One optimizer step, through the GradScaler (fp16) when there is one."""

    def step() -> None:
        if scaler is None:
            optimizer.step()
            return
        scaler.step(optimizer)
        scaler.update()

    return step


@dataclass
class Engine:
    """How one step runs: accelerate in one process, torch.distributed on many ranks."""

    model: nn.Module
    """What forward and backward run on (DDP's wrapper, or the model itself)."""
    inner: nn.Module
    """The model itself: hooks, evaluation, checkpoints."""
    optimizer: Any
    device: torch.device
    autocast: Callable[[], Any]
    backward: Callable[[torch.Tensor], None]
    clip: Callable[[float], Any]
    """Clip the gradient norm to max_norm; returns the norm before clipping."""
    step: Callable[[], None]
    no_sync: Callable[[bool], Any]
    """A context for one micro-batch: with True, gradients are not yet averaged over ranks."""
    wrapped: Wrapped | None = None


def engine(
    model: nn.Module, mixed: str, ctx: DistContext, build_optimizer: Callable[[nn.Module], Any]
) -> Engine:
    """Wrap `model` for this rank and say how a step runs: torch.autocast for bf16/fp16 (with
    torch.amp.GradScaler for fp16, DDP only), gradient sync skipped on all but the last
    micro-batch of an accumulation group, the norm clipped over all ranks' gradients."""
    import torch

    if mixed == "fp16" and ctx.sharded:
        raise TunelabError(
            "--train.precision fp16 cannot run with --distributed fsdp (each rank would see "
            "overflows of its own shard only): use bf16, fp32 or --distributed ddp"
        )
    w = wrap(model, ctx)
    # FSDP2 replaces the parameters with sharded ones: the optimizer is built after wrapping
    optimizer = build_optimizer(w.inner)
    dev = ctx.device
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed)
    scaler = torch.amp.GradScaler(dev.type) if mixed == "fp16" else None

    def backward(loss: torch.Tensor) -> None:
        (scaler.scale(loss) if scaler is not None else loss).backward()

    def clip(max_norm: float):
        if scaler is not None:
            scaler.unscale_(optimizer)
        params = [p for p in w.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        if hasattr(norm, "full_tensor"):  # FSDP: each rank holds a part of the norm
            norm = norm.full_tensor()
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
        return norm

    def no_sync(skip: bool):
        if ctx.sharded:
            w.model.set_requires_gradient_sync(not skip)
            return nullcontext()
        return w.model.no_sync() if skip else nullcontext()

    return Engine(
        w.model,
        w.inner,
        optimizer,
        dev,
        (lambda: torch.autocast(dev.type, dtype=dtype)) if dtype else nullcontext,
        backward,
        clip,
        optimizer_step(optimizer, scaler),
        no_sync,
        w,
    )


def full_state(w: Wrapped, ctx: DistContext, names: set[str] | None = None) -> dict:
    """The full (gathered) weights on rank 0, on the CPU, limited to `names` (other ranks: {});
    collective under FSDP, so every rank calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    if ctx.sharded:
        sd = get_model_state_dict(
            w.inner, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
    else:
        sd = dict(w.inner.state_dict()) if ctx.main else {}
    if not ctx.main:
        return {}
    keep = set(names) if names is not None else {n for n, _ in w.inner.named_parameters()}
    full = {k: v.detach().to("cpu").contiguous() for k, v in sd.items() if k in keep}
    _check_names(full, keep)
    return full


def final_model(w: Wrapped, ctx: DistContext) -> nn.Module | None:
    """The trained model as a plain module on rank 0 (None elsewhere): the DDP-wrapped module
    itself, or under FSDP the skeleton refilled with the gathered full weights."""
    if not ctx.sharded:
        return w.inner if ctx.main else None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(
        w.inner, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    return materialize(w.skeleton, full) if ctx.main else None


def _check_names(state: dict, names: set[str]) -> None:
    """A checkpoint missing a trained parameter would resume silently wrong: refuse it."""
    missing = sorted(names - state.keys())
    if missing:
        raise RuntimeError(f"the state dict lacks trained parameters {missing[:3]}")


def save_sharded(folder: Path, w: Wrapped, optimizer, names: set[str]) -> None:
    """Each rank writes its shards of the trainable weights and the optimizer state with
    torch.distributed.checkpoint (collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    model_sd = {k: v for k, v in get_model_state_dict(w.inner).items() if k in names}
    _check_names(model_sd, names)
    dcp.save(
        {"model": model_sd, "optim": get_optimizer_state_dict(w.inner, optimizer)},
        checkpoint_id=str(folder),
    )


def load_sharded(folder: Path, w: Wrapped, optimizer, names: set[str]) -> None:
    """Read back what `save_sharded` wrote into this rank's shards (collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    state = {
        "model": {k: v for k, v in get_model_state_dict(w.inner).items() if k in names},
        "optim": get_optimizer_state_dict(w.inner, optimizer),
    }
    dcp.load(state, checkpoint_id=str(folder))
    set_model_state_dict(w.inner, state["model"], options=StateDictOptions(strict=False))
    set_optimizer_state_dict(w.inner, optimizer, state["optim"])
