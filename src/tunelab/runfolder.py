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
    """Write weights (full, adapter, or adapter + merged) and the tokenizer; returns the kind."""
    from peft import PeftModel

    tokenizer.save_pretrained(folder)
    if not isinstance(model, PeftModel):
        model.save_pretrained(folder)
        return "full"
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
    if (run / "adapter_config.json").is_file():
        from peft import PeftModel

        base = load_classifier(marker["base_model"], marker["labels"], marker.get("gguf_file"))
        model = PeftModel.from_pretrained(base.model, run)
        return model, load_tokenizer(str(run)), marker
    raise TunelabError(f"{run} has no weights (config.json or adapter_config.json): rerun it")
