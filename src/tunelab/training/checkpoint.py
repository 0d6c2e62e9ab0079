"""Checkpoints for `--resume` and keep-best: only what training changes is written.

A checkpoint holds the trainable parameters (safetensors), the optimizer and scheduler state,
the RNG state and the loop's counters. For LoRA that is a few MB instead of the whole model.
Every write goes to a temporary folder that is renamed into place, so a kill mid-write leaves
the previous checkpoint intact.
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
    tmp = path.with_name(path.name + ".tmp")
    save_file(trainable_state(model, names), str(tmp))
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
    """Restore what `save_checkpoint` wrote; returns the loop's counters."""
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
