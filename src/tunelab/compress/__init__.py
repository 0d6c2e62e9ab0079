"""Compression methods: quantization, pruning, distillation, export. One module per kind, one
registry line per method, selected by a spec string (`int8-dynamic`, `prune-30`,
`prune-heads-25`, `distill-half`, `onnx` ...); the registry imports nothing heavy.

The modules here work on models in memory and on their weight formats; they know nothing of
run folders. `recipes/compress.py` opens the source run, calls the method, writes each output
as a run folder (`runs/`), and measures it; `runs/open.py` rebuilds a compressed run from its
marker's `compression` block with the functions named there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tunelab.errors import TunelabError


@dataclass(frozen=True)
class MethodInfo:
    """A compression method as the registry knows it, without importing it."""

    pattern: str
    """Regular expression of its specs; named groups are its parameters (as strings)."""
    kind: str
    """quantize, prune (unstructured), structured (heads, neurons, layers), distill, export."""
    summary: str
    example: str


METHODS: dict[str, MethodInfo] = {
    "bf16": MethodInfo(r"bf16", "quantize", "bfloat16 weights (half the size)", "bf16"),
    "int8-dynamic": MethodInfo(
        r"int8-dynamic",
        "quantize",
        "int8 weights and dynamically quantized int8 activations in every Linear",
        "int8-dynamic",
    ),
    "int8-weight": MethodInfo(
        r"int8-weight", "quantize", "int8 weight-only (per channel), fp32 compute", "int8-weight"
    ),
    "int4-weight": MethodInfo(
        r"int4-weight(?:-g(?P<group>\d+))?",
        "quantize",
        "int4 weight-only, group-wise (default groups of 32)",
        "int4-weight-g32",
    ),
    "prune": MethodInfo(
        r"prune-(?P<percent>\d+)(?P<scope>-layer)?",
        "prune",
        "unstructured magnitude pruning to PERCENT% sparsity (global, or -layer: per layer)",
        "prune-30",
    ),
    "wanda": MethodInfo(
        r"wanda-(?P<percent>\d+)",
        "prune",
        "Wanda: |weight| x input-activation norm, per output row, on calibration text",
        "wanda-50",
    ),
    "prune-heads": MethodInfo(
        r"prune-heads-(?P<percent>\d+)",
        "structured",
        "remove PERCENT% of attention heads (lowest importance), then recover",
        "prune-heads-25",
    ),
    "prune-ffn": MethodInfo(
        r"prune-ffn-(?P<percent>\d+)",
        "structured",
        "remove PERCENT% of feed-forward neurons (lowest importance), then recover",
        "prune-ffn-30",
    ),
    "prune-layers": MethodInfo(
        r"prune-layers-(?P<count>\d+)",
        "structured",
        "drop COUNT whole blocks (the least important), then recover",
        "prune-layers-2",
    ),
    "distill": MethodInfo(
        r"distill-(?P<layers>half|\d+)",
        "distill",
        "a student with every second layer (or N layers) of the teacher, trained on its logits",
        "distill-half",
    ),
    "onnx": MethodInfo(
        r"onnx(?P<int8>-int8)?",
        "export",
        "ONNX export run by onnxruntime (-int8: ORT dynamic int8 quantization)",
        "onnx",
    ),
    "gguf": MethodInfo(
        r"gguf-(?P<qtype>f16|q8_0)",
        "export",
        "GGUF file for llama.cpp (decoders, merged weights)",
        "gguf-q8_0",
    ),
}


@dataclass(frozen=True)
class MethodSpec:
    """One parsed `--methods` entry."""

    spec: str
    """As the user wrote it (also the output folder's name)."""
    name: str
    """Its registry name."""
    params: dict[str, str]


def parse_method(spec: str) -> MethodSpec:
    """The registry entry that `spec` names, with its parameters, or a one-line error."""
    for name, info in METHODS.items():
        m = re.fullmatch(info.pattern, spec.strip())
        if m:
            params = {k: v for k, v in m.groupdict().items() if v is not None}
            _check_params(spec.strip(), params)
            return MethodSpec(spec.strip(), name, params)
    known = ", ".join(i.example for i in METHODS.values())
    raise TunelabError(f"unknown compression method {spec!r}: --methods takes e.g. {known}")


def _check_params(spec: str, params: dict[str, str]) -> None:
    """Numbers in a spec that no model can take, refused before any method runs."""
    if "percent" in params and not 1 <= int(params["percent"]) <= 99:
        raise TunelabError(
            f"--methods {spec}: the percentage must be from 1 to 99, got {params['percent']}"
        )
    what = {"count": "blocks to drop", "layers": "student layers", "group": "group size"}
    for key, words in what.items():
        value = params.get(key, "")
        if value.isdigit() and int(value) < 1:
            raise TunelabError(f"--methods {spec}: the {words} must be at least 1, got {value}")
