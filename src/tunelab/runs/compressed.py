"""Opening a run that `tunelab compress` wrote: the marker's `compression` block says how to
rebuild it. bf16, unstructured pruning, dropped layers and distilled students are ordinary
weights; quantized and head/neuron-pruned runs are rebuilt from their config and then get
their saved tensors; ONNX runs run in onnxruntime behind the model interface."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from tunelab.errors import TunelabError
from tunelab.runs.marker import RunMarker

QUANTIZED_FILE, PRUNED_FILE = "quantized.safetensors", "pruned.safetensors"


def _auto(marker: RunMarker):
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
    )

    if marker.task == "classification":
        return AutoModelForSequenceClassification
    return AutoModelForSeq2SeqLM if marker.family == "encoder-decoder" else AutoModelForCausalLM


def _skeleton(run: Path, marker: RunMarker) -> nn.Module:
    """A model of the run's architecture with untrained weights (they are overwritten)."""
    from transformers import AutoConfig

    return _auto(marker).from_config(AutoConfig.from_pretrained(run), dtype=torch.float32)


def open_compressed(run: Path, marker: RunMarker, safetensors_only: bool = False) -> nn.Module:
    """The model of a compressed run, in eval mode, ready for inference. Its tensors come from
    safetensors, ONNX or GGUF files; `safetensors_only` also tells from_pretrained so."""
    from safetensors.torch import load_file

    from tunelab.models.load import weights_kwargs

    comp = marker.compression or {}
    kind = comp.get("kind", "")
    try:
        if marker.weights == "onnx":
            from transformers import AutoConfig

            from tunelab.compress.export import OnnxClassifier

            return OnnxClassifier(run / "model.onnx", AutoConfig.from_pretrained(run))
        if marker.weights == "quantized":
            from tunelab.compress import quantize

            state = load_file(str(run / QUANTIZED_FILE))
            model = quantize.load_quantized(_skeleton(run, marker), state, comp["meta"])
        elif marker.weights == "pruned":
            from tunelab.compress import structured

            model = _skeleton(run, marker)
            plan = comp["plan"]
            apply = (
                structured.apply_head_plan if kind == "prune-heads" else structured.apply_ffn_plan
            )
            apply(model, plan)
            model.load_state_dict(load_file(str(run / PRUNED_FILE)), strict=True)
        else:
            dtype = torch.bfloat16 if kind == "bf16" else torch.float32
            model = _auto(marker).from_pretrained(
                run, dtype=dtype, **weights_kwargs(safetensors_only)
            )
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        raise TunelabError(
            f"{run} holds a compressed run ({comp.get('method')}) that does not load "
            f"({str(exc).splitlines()[0][:120]}): re-run tunelab compress for it"
        ) from None
    return model.eval()
