"""Checkpoints for `--resume` and keep-best: only what training changes is written.

A checkpoint holds the trainable parameters (safetensors), the optimizer and scheduler state,
the RNG state and the loop's counters. For LoRA that is a few MB instead of the whole model.
Every write goes to a temporary folder that is renamed into place, so a kill mid-write leaves
the previous checkpoint intact.

Many processes (`save_checkpoint_ranks`): all ranks write into the same temporary folder and
rank 0 renames it once every rank is done. DDP ranks hold the same weights and optimizer state,
so rank 0 writes them as above; FSDP ranks each write their shards with
torch.distributed.checkpoint (`sharded/`). Each rank keeps its own RNG state (`rng-RANK.pt`),
and state.json records the number of processes, which a resumed run must match.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tunelab.errors import TunelabError
from tunelab.training.distributed import DistContext, barrier
from tunelab.training.sharding import Wrapped, load_sharded, save_sharded

SHARDED_DIR = "sharded"


def trainable_state(model: nn.Module, names: set[str] | None = None) -> dict[str, torch.Tensor]:
    """The parameters that require grad (or those named in `names`: all a run's optimizer
    holds, including ones a strategy unfreezes later), by name, on the CPU (no copy when
    already there: this is only written to disk, and a copy of a full model's weights costs
    its size in RAM)."""
    return {
        n: p.detach().to("cpu").contiguous()
        for n, p in model.named_parameters()
        if (p.requires_grad if names is None else n in names)
    }


def load_trainable(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy `state` into the model's parameters of the same names (all must exist)."""
    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise RuntimeError(f"checkpoint has parameters the model lacks: {missing[:3]}")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t)


def _replace_dir(tmp: Path, final: Path) -> None:
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def save_weights(model: nn.Module, path: Path, names: set[str] | None = None) -> None:
    """Trainable parameters only (see `trainable_state`), atomically (the best checkpoint)."""
    save_tensors(trainable_state(model, names), path)


def save_tensors(state: dict[str, torch.Tensor], path: Path) -> None:
    """`state` as safetensors, atomically (a kill mid-write keeps the previous file)."""
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp))
    tmp.replace(path)


def load_weights(model: nn.Module, path: Path) -> None:
    load_trainable(model, load_file(str(path)))


def save_checkpoint(
    folder: Path,
    model: nn.Module,
    optimizer,
    scheduler,
    state: dict[str, Any],
    names: set[str] | None = None,
) -> None:
    """Write the resumable state of a run into `folder` (replacing the previous one)."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable_state(model, names), str(tmp / "trainable.safetensors"))
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
        tmp / "optimizer.pt",
    )
    (tmp / "state.json").write_text(json.dumps({**state, "python_rng": list(random.getstate()[1])}))
    _replace_dir(tmp, folder)


def load_checkpoint(folder: Path, model: nn.Module, optimizer, scheduler) -> dict[str, Any]:
    """Restore what `save_checkpoint` wrote; returns the loop's counters.

    Raises:
        TunelabError: the checkpoint is of a many-process run.
    """
    world = json.loads((folder / "state.json").read_text()).get("world", 1)
    if world != 1:
        raise TunelabError(
            f"the checkpoint in {folder.parent} was written by {world} processes: resume it "
            f"with --nproc {world}"
        )
    load_weights(model, folder / "trainable.safetensors")
    blob = torch.load(folder / "optimizer.pt", weights_only=True)
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    torch.set_rng_state(blob["torch_rng"])
    if blob.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["cuda_rng"])
    state = json.loads((folder / "state.json").read_text())
    random.setstate((3, tuple(state.pop("python_rng")), None))
    return state


def _rng_state() -> dict[str, Any]:
    return {
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python_rng": list(random.getstate()[1]),
    }


def save_checkpoint_ranks(
    folder: Path,
    w: Wrapped,
    ctx: DistContext,
    optimizer,
    scheduler,
    state: dict[str, Any],
    names: set[str],
) -> None:
    """`save_checkpoint` of a many-process run; every rank calls it (it is collective)."""
    tmp = folder.with_name(folder.name + ".tmp")
    if ctx.main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    if ctx.sharded:
        save_sharded(tmp / SHARDED_DIR, w, optimizer, names)
    if ctx.main:
        blob = {"scheduler": scheduler.state_dict()}
        if not ctx.sharded:
            save_file(trainable_state(w.inner, names), str(tmp / "trainable.safetensors"))
            blob["optimizer"] = optimizer.state_dict()
        torch.save(blob, tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({**state, "world": ctx.world}))
    rng = _rng_state()
    torch.save({**rng, "python_rng": torch.tensor(rng["python_rng"])}, tmp / f"rng-{ctx.rank}.pt")
    barrier()
    if ctx.main:
        _replace_dir(tmp, folder)
    barrier()


def load_checkpoint_ranks(
    folder: Path, w: Wrapped, ctx: DistContext, optimizer, scheduler, names: set[str]
) -> dict[str, Any]:
    """Restore what `save_checkpoint_ranks` wrote, on every rank; returns the loop's counters.

    Raises:
        TunelabError: the checkpoint was written by another number of processes.
    """
    state = json.loads((folder / "state.json").read_text())
    world = state.pop("world", 1)
    if world != ctx.world or not (folder / f"rng-{ctx.rank}.pt").is_file():
        raise TunelabError(
            f"the checkpoint in {folder.parent} was written by {world} process(es), this run "
            f"has {ctx.world}: resume it with --nproc {world}"
        )
    if ctx.sharded != (folder / SHARDED_DIR).is_dir():
        saved = "fsdp" if (folder / SHARDED_DIR).is_dir() else "ddp"
        raise TunelabError(
            f"the checkpoint in {folder.parent} is of a {saved} run: resume with --distributed "
            f"{saved}"
        )
    blob = torch.load(folder / "optimizer.pt", weights_only=True)
    if ctx.sharded:
        load_sharded(folder / SHARDED_DIR, w, optimizer, names)
    else:
        load_weights(w.inner, folder / "trainable.safetensors")
        optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    rng = torch.load(folder / f"rng-{ctx.rank}.pt", weights_only=True)
    torch.set_rng_state(rng["torch_rng"])
    if rng.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda_rng"])
    random.setstate((3, tuple(int(x) for x in rng["python_rng"].tolist()), None))
    return state
