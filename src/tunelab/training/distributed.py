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

Wrapping the model, how a step runs on many ranks and their state: `training/sharding.py`.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar

from tunelab.errors import TunelabError

if TYPE_CHECKING:  # torch is imported where it runs: the CLI's --nproc checks need none
    import torch

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
