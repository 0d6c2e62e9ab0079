"""Saving a finished run: weights (full, trained tensors, adapter or merged), tokenizer,
labels, metrics, curves, the resolved config and the marker; then the work folder becomes
the run folder.

Layout of a finished run:
    tunelab_run.json   what the run is (runs/marker.py)
    config.yaml        the resolved configuration
    labels.json        classification: the label map (id -> name), also in config.json
    metrics.json       test (and best validation) metrics
    log.jsonl          training curve and evaluations
    curves.png         the same as a picture (training loss, validation loss and metric)
    tokenizer files
    config.json + model.safetensors            (full weights: opens with transformers as is)
    adapter_config.json + adapter_model.safetensors   (adapter strategies, without --merge)
    adapter/ + config.json + model.safetensors        (adapter strategies with --merge)
    trained.safetensors     (strategies that train part of a plain model, e.g. freeze,
                             features, adapter: only the tensors that trained; loading rebuilds
                             the base, re-applies the strategy and copies them in)
    README.md          the model card (runs/card.py), written last: it replaces peft's template

The base model is recorded by its portable identity (`RunMarker.base_hub_id`, `base_revision`)
beside where it was loaded from (`base_source`); an adapter's `adapter_config.json` names it by
that hub id, so plain peft on another machine fetches it from the hub.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from torch import nn

from tunelab.evaluation.plots import plot_curves
from tunelab.runs.card import CARD_FILE, write_card
from tunelab.runs.marker import RunMarker, identified, write_marker
from tunelab.runs.workdir import LEFTOVERS, finish_workdir, write_json, write_yaml

TRAINED_FILE = "trained.safetensors"
WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors", TRAINED_FILE)
ADAPTER_CONFIG = "adapter_config.json"


def name_base(adapter_dir: Path, hub_id: str | None, revision: str | None) -> None:
    """Make the peft adapter in `adapter_dir` name its base by `hub_id` (and `revision`)
    instead of the path it was loaded from on this machine; no hub id: left as peft wrote it.
    peft's README.md template there is dropped (the run's card is the folder's README.md)."""
    file = adapter_dir / ADAPTER_CONFIG
    if hub_id and file.is_file():
        config = json.loads(file.read_text())
        config["base_model_name_or_path"] = hub_id
        config["revision"] = revision
        write_json(file, config)
    (adapter_dir / CARD_FILE).unlink(missing_ok=True)


def model_commit(model: nn.Module) -> str | None:
    """The hub commit transformers loaded `model`'s weights at (None: from a local folder)."""
    config = getattr(model, "config", None)
    commit = getattr(config, "_commit_hash", None)
    return commit if isinstance(commit, str) else None


def save_model_files(
    model: nn.Module,
    tokenizer,
    folder: Path,
    merge: bool,
    base_hub_id: str | None = None,
    base_revision: str | None = None,
) -> str:
    """Write weights and the tokenizer; returns the kind written.

    full: every weight trained, or a plain model with `merge` (opens with transformers as is);
    partial: only the tensors that trained (TRAINED_FILE), for a plain model with some frozen;
    adapter: a peft adapter; merged: a peft adapter folded into full weights (+ adapter/).
    An adapter names its base by `base_hub_id` when there is one (`name_base`).
    """
    from peft import PeftModel
    from safetensors.torch import save_file

    from tunelab.training.checkpoint import trainable_state

    tokenizer.save_pretrained(folder)
    if not isinstance(model, PeftModel):
        if merge or all(p.requires_grad for p in model.parameters()):
            model.save_pretrained(folder)
            return "full"
        save_file(trainable_state(model), str(folder / TRAINED_FILE))
        return "partial"
    if not merge:
        model.save_pretrained(folder)
        name_base(folder, base_hub_id, base_revision)
        return "adapter"
    model.save_pretrained(folder / "adapter")
    name_base(folder / "adapter", base_hub_id, base_revision)
    merged = model.merge_and_unload()
    merged.save_pretrained(folder)
    return "merged"


def write_run_files(
    work: Path,
    marker: RunMarker,
    config: dict[str, Any],
    metrics: dict[str, Any],
    curve_metric: str,
) -> None:
    """Labels, metrics, curves, config, marker and model card (README.md) of a run whose
    weights are already in `work`; the marker gains its base's portable identity."""
    marker = identified(marker)
    if marker.labels is not None:
        write_json(work / "labels.json", dict(enumerate(marker.labels)))
    write_json(work / "metrics.json", metrics)
    if (work / "log.jsonl").is_file():
        plot_curves(work / "log.jsonl", work / "curves.png", curve_metric)
    write_yaml(work / "config.yaml", config)
    marker = write_marker(work, marker)
    write_card(work, marker, config, metrics)


def finish_run(
    work: Path,
    final: Path,
    model: nn.Module,
    tokenizer,
    marker: RunMarker,
    config: dict[str, Any],
    metrics: dict[str, Any],
    merge: bool,
    leftovers: tuple[str, ...] = LEFTOVERS,
) -> None:
    """Write the run's files into `work`, drop the work-only files, and rename it to `final`."""
    marker = identified(marker, model_commit(model))
    kind = save_model_files(model, tokenizer, work, merge, marker.base_hub_id, marker.base_revision)
    marker = dataclasses.replace(marker, weights=kind)
    write_run_files(work, marker, config, metrics, config["train"]["metric"])
    finish_workdir(work, final, leftovers)
