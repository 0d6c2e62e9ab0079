"""The server's one model: what it is, loaded in a background thread, safetensors only.

`ModelHolder.start()` returns at once, so /health answers while the weights load and /ready
turns 200 when they are in. What the model can serve follows from what it is:

- a decoder or encoder-decoder (a name, folder, .gguf, or a causal_lm / seq2seq run folder):
  completions, chat completions and score;
- a classification run folder: classify, and embeddings from its (fine-tuned) encoder body
  when the run's family is encoder;
- a plain encoder (e.g. minilm): embeddings.

Only safetensors weights are loaded: a folder whose weights would come from a pickle file
(pytorch_model.bin, adapter_model.bin, *.pt, *.pth, *.ckpt) is refused in one line before
transformers sees it, whatever other .safetensors files it holds, and every from_pretrained
call on this path passes use_safetensors=True (the loaders' `safetensors_only`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError

log = logging.getLogger("tunelab.serve")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def pickle_weights(folder: str | Path) -> list[str]:
    """The pickle files in `folder` its weights would come from: pytorch_model*.bin with no
    model.safetensors (or its shard index), adapter_model.bin with no adapter_model.safetensors,
    and, in a folder with no .safetensors at all, every pickle file. An unrelated .safetensors
    file next to pytorch_model.bin does not count."""
    path = Path(folder)
    names = {p.name for p in path.iterdir() if p.is_file()}
    full = {"model.safetensors", "model.safetensors.index.json"} & names
    any_safetensors = any(n.endswith(".safetensors") for n in names)
    out = []
    for n in sorted(names):
        if not n.endswith(PICKLE_SUFFIXES):
            continue
        if n.startswith("pytorch_model"):
            bad = not full
        elif n.startswith("adapter_model"):
            bad = "adapter_model.safetensors" not in names
        else:  # optimizer state, training arguments: never read by a loader here
            bad = not any_safetensors
        if bad:
            out.append(n)
    return out


def require_safetensors(folder: str | Path) -> None:
    """Raise a one-line TunelabError when `folder`'s weights would come from a pickle file."""
    path = Path(folder)
    if not path.is_dir():
        return  # a hub id (online only): transformers is told use_safetensors=True
    pickles = pickle_weights(path)
    if pickles:
        raise TunelabError(
            f"{path} holds pickle weights ({', '.join(pickles[:3])}) and not their safetensors "
            "version, and tunelab serve loads safetensors only: convert them "
            "(model.save_pretrained(dir) writes model.safetensors) and remove the pickle files"
        )


@dataclass
class Served:
    """A loaded model and what the server does with it."""

    name: str
    kind: str
    """generate, classify or embed."""
    family: str
    model: Any
    tokenizer: Any
    context: int | None
    """Most tokens the model can read (max positions), None when it has no fixed limit."""
    labels: list[str] = field(default_factory=list)
    max_length: int | None = None
    """Classification runs: the length inputs are truncated to (as in training)."""
    encoder: Any = None
    """The module whose mean-pooled last hidden state is an embedding (None: no embeddings)."""
    precision: dict = field(default_factory=dict)
    """{"dtype", "device"} the model runs in (`compress.precision`)."""

    @property
    def endpoints(self) -> list[str]:
        out = {
            "generate": ["/v1/completions", "/v1/chat/completions", "/v1/score"],
            "classify": ["/v1/classify"],
            "embed": [],
        }[self.kind]
        return out + (["/v1/embeddings"] if self.encoder is not None else [])


def _context(config, tokenizer) -> int | None:
    from tunelab.decoding.context import model_window

    window = model_window(config)
    if window:
        return window
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else None


def _encoder_body(model):
    """The transformer body of a sequence classifier (peft-wrapped or not)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, "base_model", base)


def load_served(
    source: str, name: str | None = None, dtype: str = "auto", device: str = "auto"
) -> Served:
    """Load `source` for serving (see the module docstring), on `device` in `dtype`
    (`models.precision`).

    Raises:
        TunelabError: not a model, pickle-only weights, or nothing this server can serve.
    """
    import torch

    from tunelab.compress.precision import apply_precision, precision_of
    from tunelab.models.families import detect_family
    from tunelab.models.precision import check, resolve
    from tunelab.models.sources import resolve_source
    from tunelab.runs.marker import find_marker

    check(dtype, device)

    path = Path(source).expanduser()
    name = name or (path.name if path.exists() else source)
    marker = find_marker(path)
    if marker is not None:
        require_safetensors(path)
        if not (path / "config.json").is_file() and marker.base_model:
            from tunelab.runs.open import resolve_base

            require_safetensors(resolve_source(*resolve_base(marker)))
        if marker.task == "classification":
            from tunelab.runs.open import open_classifier

            model, tok, marker = open_classifier(path, True, dtype, device)
            model.eval()
            enc = _encoder_body(model) if marker.family == "encoder" else None
            return Served(
                name,
                "classify",
                marker.family or "encoder",
                model,
                tok,
                _context(model.config, tok),
                list(marker.labels or []),
                marker.max_length,
                enc,
                precision_of(model),
            )
        return _generator(name, str(path), dtype, device)
    folder = resolve_source(source)
    require_safetensors(folder)
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(folder)
    family = detect_family(config)
    if family == "encoder":
        from tunelab.models.sources import load_tokenizer

        model = AutoModel.from_pretrained(folder, use_safetensors=True, dtype=torch.float32)
        model = apply_precision(model, *resolve(dtype, device), kind="encoder")
        tok = load_tokenizer(folder)
        ctx = _context(config, tok)
        return Served(
            name, "embed", family, model, tok, ctx, encoder=model, precision=precision_of(model)
        )
    return _generator(name, folder, dtype, device)


def _generator(name: str, source: str, dtype: str, device: str) -> Served:
    """A causal or seq2seq LM (model, run folder or merged run) served for generation."""
    from tunelab.compress.precision import precision_of
    from tunelab.runs.open import open_lm

    loaded, _ = open_lm(source, dtype, device, safetensors_only=True)
    return Served(
        name,
        "generate",
        loaded.family,
        loaded.model,
        loaded.tokenizer,
        _context(loaded.model.config, loaded.tokenizer),
        precision=precision_of(loaded.model),
    )


class ModelHolder:
    """Holds the served model; loads it in a background thread (or takes a loaded one)."""

    def __init__(self, source: str | None = None, name: str | None = None, loader=load_served):
        self.source = source
        self.name = name or (Path(source).name if source and Path(source).exists() else source)
        self.served: Served | None = None
        self.error: str | None = None
        self._loader = loader
        self._thread: threading.Thread | None = None
        self.ready_event = threading.Event()

    @classmethod
    def of(cls, served: Served) -> ModelHolder:
        """A holder that is ready at once (tests, embedding the app in another program)."""
        holder = cls(None, served.name)
        holder.served = served
        holder.ready_event.set()
        return holder

    @property
    def ready(self) -> bool:
        return self.served is not None

    def start(self) -> None:
        """Begin loading in a daemon thread (no-op when already loaded or loading)."""
        if self.served is not None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._load, name="tunelab-load", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        t0 = time.perf_counter()
        try:
            self.served = self._loader(self.source, self.name)
            log.info(
                "model %s loaded (%s, %s) in %.1f s",
                self.name,
                self.served.kind,
                self.served.family,
                time.perf_counter() - t0,
            )
        except TunelabError as exc:
            self.error = str(exc)
            log.error("cannot serve %s: %s", self.source, exc)
        except Exception as exc:  # noqa: BLE001 - reported on /ready, traceback in the log
            self.error = f"loading failed ({type(exc).__name__}): see the server log"
            log.exception("loading %s failed", self.source)
        finally:
            self.ready_event.set()


def check_source(source: str) -> None:
    """Cheap checks before the server binds (the load itself happens in the background).

    Raises:
        TunelabError: a missing path, a folder that is not a model, or pickle-only weights.
    """
    from tunelab.defaults import EMBEDDED_MODELS
    from tunelab.runs.marker import MARKER_FILE, is_run, read_marker

    path = Path(source).expanduser()
    if source in EMBEDDED_MODELS and not path.exists():
        return
    if path.is_dir() and is_run(path):
        marker = read_marker(path)
        require_safetensors(path)
        if not (path / "config.json").is_file() and marker.base_model:
            from tunelab.runs.open import resolve_base

            base = resolve_base(marker)[0]  # adapters / trained tensors load over their base
            if base:
                check_source(base)
        return
    if path.is_dir():
        if not (path / "config.json").is_file() and not any(path.glob("*.gguf")):
            raise TunelabError(
                f"{path} is not a model folder (no config.json, no .gguf, no {MARKER_FILE}): "
                "pass a run folder, a Hugging Face model folder or an embedded model name"
            )
        if (path / "config.json").is_file():
            require_safetensors(path)
        return
    if path.is_file() and path.suffix == ".gguf":
        return
    if path.exists() or source.startswith((".", "/", "~")):
        raise TunelabError(
            f"{source} is not a model: pass a run folder, a model folder, a .gguf file or an "
            f"embedded name ({', '.join(EMBEDDED_MODELS)})"
        )
    from tunelab.models.sources import resolve_source

    resolve_source(source)  # raises the one-line error for an unknown or offline name
