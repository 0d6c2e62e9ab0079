"""Run folders: everything a finished run leaves behind, written atomically, and read back.

While a run trains it lives in `OUTPUT/.NAME.partial/` (checkpoints, log); only when it is
complete is that folder renamed to `OUTPUT/NAME/`, so an interrupted run never looks finished
and `--resume` knows where to continue.

Layout of a finished classification run:
    tunelab_run.json   what the run is (task, strategy, family, base model, labels)
    config.yaml        the resolved configuration
    labels.json        the label map (id -> name), also in config.json's id2label
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
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from tunelab import __version__
from tunelab.errors import TunelabError
from tunelab.evaluation.plots import plot_curves
from tunelab.models import RUN_MARKER, load_classifier, load_tokenizer, read_run_marker

TRAINED_FILE = "trained.safetensors"
WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors", TRAINED_FILE)


def partial_dir(output_dir: Path, name: str) -> Path:
    return output_dir / f".{name}.partial"


def newest_partial(output_dir: Path) -> str:
    """Name of the most recently touched unfinished run in `output_dir`."""
    found = sorted(output_dir.glob(".*.partial"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise TunelabError(f"no unfinished run in {output_dir} to resume: start a new run")
    return found[-1].name[1 : -len(".partial")]


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def save_model_files(model: nn.Module, tokenizer, folder: Path, merge: bool) -> str:
    """Write weights and the tokenizer; returns the kind written.

    full: every weight trained, or a plain model with `merge` (opens with transformers as is);
    partial: only the tensors that trained (TRAINED_FILE), for a plain model with some frozen;
    adapter: a peft adapter; merged: a peft adapter folded into full weights (+ adapter/).
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
        return "adapter"
    model.save_pretrained(folder / "adapter")
    merged = model.merge_and_unload()
    merged.save_pretrained(folder)
    return "merged"


def finish_run(
    work: Path,
    final: Path,
    model: nn.Module,
    tokenizer,
    marker: dict[str, Any],
    config: dict[str, Any],
    metrics: dict[str, Any],
    merge: bool,
) -> None:
    """Write the run's files into `work`, drop the checkpoints, and rename it to `final`."""
    kind = save_model_files(model, tokenizer, work, merge)
    if "labels" in marker:  # classification runs (generative runs have none)
        write_json(work / "labels.json", dict(enumerate(marker["labels"])))
    write_json(work / "metrics.json", metrics)
    if (work / "log.jsonl").is_file():
        plot_curves(work / "log.jsonl", work / "curves.png", config["train"]["metric"])
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    marker = {
        **marker,
        "weights": kind,
        "tunelab_version": __version__,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json(work / RUN_MARKER, marker)
    for leftover in ("checkpoint", "best.safetensors"):
        path = work / leftover
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    if final.exists():
        raise TunelabError(f"{final} appeared while training: the finished run is in {work}")
    work.rename(final)


def load_run(run_dir: str | Path):
    """(model, tokenizer, marker) of a finished classification run, ready for inference."""
    from transformers import AutoModelForSequenceClassification

    run = Path(run_dir)
    marker = read_run_marker(run)
    if marker.get("task") != "classification":
        raise TunelabError(f"{run} is a {marker.get('task')} run: this verb needs a classifier")
    if (run / "config.json").is_file():
        model = AutoModelForSequenceClassification.from_pretrained(run)
        return model, load_tokenizer(str(run)), marker
    if (run / TRAINED_FILE).is_file():
        return _load_partial(run, marker), load_tokenizer(str(run)), marker
    if (run / "adapter_config.json").is_file():
        from peft import PeftModel

        from tunelab.strategies.peft_common import prepare_loaded

        base = load_classifier(marker["base_model"], marker["labels"], marker.get("gguf_file"))
        model = prepare_loaded(PeftModel.from_pretrained(base.model, run))
        return model, load_tokenizer(str(run)), marker
    raise TunelabError(f"{run} has no weights (config.json or adapter_config.json): rerun it")


def _load_partial(run: Path, marker: dict[str, Any]) -> nn.Module:
    """The base classifier with the run's strategy re-applied and its trained tensors in."""
    base = load_classifier(marker["base_model"], marker["labels"], marker.get("gguf_file"))
    return apply_trained(run, marker, base.model, base.family).eval()


def apply_trained(run: Path, marker: dict[str, Any], base: nn.Module, family: str) -> nn.Module:
    """`base` with the run's strategy re-applied and the run's trained tensors copied in (runs
    whose weights are `trained.safetensors`: strategies that train part of a plain model)."""
    from safetensors.torch import load_file

    from tunelab.strategies import get_strategy
    from tunelab.training.checkpoint import load_trainable

    strategy = get_strategy(marker["strategy"])
    model = strategy.build(base, marker.get("strategy_options") or {}, family, 1)
    try:
        load_trainable(model, load_file(str(run / TRAINED_FILE)))
    except RuntimeError as exc:
        raise TunelabError(
            f"{run / TRAINED_FILE} does not fit {marker['base_model']} with strategy "
            f"{marker['strategy']} ({exc}): was the base model changed since the run?"
        ) from None
    return model
