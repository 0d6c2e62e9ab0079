"""The `model` section of a run: which model to start from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ModelOptions:
    name: str = "minilm"
    """A local Hugging Face folder, a .gguf file, a hub id (online only), a tunelab run folder,
    or an embedded default: `minilm` (BERT encoder) or `smollm2-135m` (Llama decoder)."""
    gguf_file: str | None = None
    """File name of the GGUF weights inside `name` when `name` is a folder of GGUF files."""
    attention_dropout: float | None = 0.0
    """Dropout on attention probabilities while training (none keeps the checkpoint's value).
    Any non-zero value sends PyTorch's attention down its slow path: on CPU a BERT step takes
    about twice as long, so tunelab turns it off by default."""
