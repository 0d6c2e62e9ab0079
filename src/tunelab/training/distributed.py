"""Many processes on one or more machines: torch.distributed under torchrun.

Every rank runs the whole recipe; the training loop asks this module who it is (`context()`),
trains its shard of every global batch and reduces what it logs. DDP by default (every rank
holds the whole model, gradients are averaged), FSDP2 (`fully_shard` on every transformer
block, then on the root) with `--train.distributed fsdp`: parameters, gradients and optimizer
state are sharded across ranks. gloo on CPU, NCCL on GPU.

Why torch.distributed directly and not accelerate's multi-process mode: accelerate turns its
FSDP plugin on only for GPU-like devices (its MULTI_CPU mode has no FSDP), so FSDP2 over gloo,
which CI tests on CPU, would be impossible, and one code path for DDP and FSDP2 on both
device kinds is simpler to reason about. accelerate still runs the one-process case.

Batching: `--train.batch_size` is per process. A global batch is batch_size x world examples
of the same epoch order a one-process run uses; rank r trains its r-th contiguous slice, so a
2-process run with batch 4 sees, step for step, what a 1-process run with batch 8 sees (the
last, short global batch of an epoch is split as evenly as possible and padded round-robin, as
torch's DistributedSampler does, so no rank is left without data).

Evaluation: every rank evaluates the whole validation split with identical batches (FSDP needs
every rank in each forward); rank 0's metrics are broadcast so every rank takes the same
keep-best and early-stopping decision. Only rank 0 writes the run folder, logs, trackers and
progress bars; checkpoints are written by all ranks together (DCP shards under FSDP).
"""

from __future__ import annotations

import atexit
import copy
import os
import sys
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tunelab.errors import TunelabError

if TYPE_CHECKING:  # torch is imported where it runs: the CLI's --nproc checks need none
    import torch
    from torch import nn

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """Who this process is in a many-process run."""

    rank: int
    world: int
    local_rank: int
    mode: str = "ddp"
    """ddp or fsdp."""

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.mode == "fsdp"

    @property
    def device(self) -> torch.device:
        import torch

        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


def world_size() -> int:
    """Processes in this run, from torchrun's environment (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Whether this process writes the run folder (rank 0; always true in one process)."""
    return rank() == 0


def context(mode: str = "ddp") -> DistContext | None:
    """This rank's context with the process group up (gloo on CPU, NCCL on GPU), or None in a
    one-process run. Safe to call again: the group is created once and torn down at exit."""
    import torch
    import torch.distributed as dist

    if world_size() <= 1:
        return None
    ctx = DistContext(rank(), world_size(), int(os.environ.get("LOCAL_RANK", "0")), mode)
    if not dist.is_initialized():
        # the other ranks wait while rank 0 alone works (a pretrain tokenizer and token store,
        # a DDP evaluation); a rank that dies ends the run sooner through torchrun anyway
        timeout = timedelta(hours=3)
        if torch.cuda.is_available():
            torch.cuda.set_device(ctx.local_rank)
            dist.init_process_group("nccl", device_id=ctx.device, timeout=timeout)
        else:
            dist.init_process_group("gloo", timeout=timeout)
        atexit.register(teardown)
    return ctx


def teardown() -> None:
    """Destroy the process group (at exit; a no-op when there is none)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def broadcast(value: T) -> T:
    """Rank 0's `value` on every rank (any picklable object; unchanged in one process)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn: Callable[[], T]) -> T | None:
    """Run `fn` on rank 0 only, then let every rank go on together; a TunelabError there is
    raised on every rank (with the same message), so no rank waits for one that gave up."""
    error, value = None, None
    if is_main():
        try:
            value = fn()
        except TunelabError as exc:
            error = str(exc)
    error = broadcast(error)
    if error is not None:
        raise TunelabError(error)
    return value


def refuse(
    strategy: str, mode: str, has_view: bool, flag: str = "--nproc / torchrun", world: int = 0
) -> None:
    """One-line refusal of what cannot train on many processes (in any one-process run: no-op).

    features trains a small head on features cached by a pass over the data that every rank
    would repeat; gradual unfreezing changes which parameters train mid-run, which DDP's
    gradient buckets and FSDP's flat shards fix at wrapping time; AdaLoRA's rank allocation
    reads whole gradients, which FSDP shards. `world`: the processes about to be launched
    (default: this run's).
    """
    if (world or world_size()) <= 1:
        return
    if has_view or strategy == "features":
        why = "it trains a small head on cached features: run it in one process"
    elif strategy == "gradual":
        why = "it unfreezes layers mid-run, which DDP/FSDP cannot follow: run it in one process"
    elif strategy == "adalora" and mode == "fsdp":
        why = "its rank allocation needs whole gradients: use --distributed ddp"
    else:
        return
    raise TunelabError(f"strategy {strategy} cannot run on many processes ({flag}): {why}")


def shard(indices: list[int], rank_: int, world: int) -> list[int]:
    """Rank `rank_`'s part of one global batch: a contiguous slice of ceil(len / world)
    examples, padded round-robin from the batch when the batch is short."""
    if not indices:
        return []
    size = -(-len(indices) // world)
    mine = indices[rank_ * size : (rank_ + 1) * size]
    pad = size - len(mine)
    return mine + [indices[(rank_ * size + len(mine) + i) % len(indices)] for i in range(pad)]


def mean(value: float) -> float:
    """The mean of `value` over all ranks (for logged losses)."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        return value
    t = torch.tensor([float(value)], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


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

    def step() -> None:
        if scaler is None:
            optimizer.step()
            return
        scaler.step(optimizer)
        scaler.update()

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
        step,
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
