"""Open any run folder (or plain model) for any verb and the server.

- `open_classifier(run)`: a classification run, whatever it holds (full weights, trained
  tensors over its base, a peft adapter over its base).
- `open_lm(name)`: a language model for generation and scoring: an embedded name, a model
  folder, a GGUF file, or a generative run folder (full, trained tensors or adapter).
- `apply_trained`: a base model with a run's strategy re-applied and its trained tensors in.
- `resolve_base`: where to load a run's base model from on this machine (a run folder copied
  elsewhere, or to another machine, finds its base by the hub id its marker records).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from tunelab.errors import TunelabError
from tunelab.models.load import Loaded
from tunelab.runs.marker import RunMarker, find_marker, read_marker
from tunelab.runs.save import TRAINED_FILE


@contextmanager
def _loading(run: Path) -> Iterator[None]:
    """A damaged weight or config file is a one-line error, not a traceback."""
    from safetensors import SafetensorError

    try:
        yield
    except TunelabError:
        raise
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        first = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise TunelabError(
            f"the weights in {run} do not load ({first}): the folder is damaged or incomplete; "
            "restore it or rerun the run"
        ) from None


def _local_model(path: str | None) -> bool:
    """Whether `path` is a model folder (or GGUF file) on this machine."""
    if not path:
        return False
    where = Path(path).expanduser()
    looks_local = path.startswith((".", "/", "~")) or where.is_absolute() or path.count("/") != 1
    return looks_local and (
        (where / "config.json").is_file() or (where.is_file() and where.suffix == ".gguf")
    )


def resolve_base(marker: RunMarker) -> tuple[str | None, str | None]:
    """(name, gguf_file) to load `marker`'s base model from here, first that is there:

    1. the folder it was loaded from when the run trained (`base_source`);
    2. the name it was asked for, when that is an embedded model whose package is installed
       or a path that exists (runs written before the hub id was recorded);
    3. the embedded package of its hub id (`base_hub_id`), when installed;
    4. its hub id: its folder in this machine's hub cache (at base_revision), else the hub
       (online; offline, an embedded model's name, so that the error says what to install);
    5. the name it was asked for (loading it then says what is missing).
    """
    from tunelab.models.sources import (
        EMBEDDED_MODELS,
        cached_snapshot,
        embedded_for_hub_id,
        embedded_path,
        hub_offline,
    )

    name, gguf = marker.base_model, marker.gguf_file
    if _local_model(marker.base_source):
        return marker.base_source, None  # a folder: a GGUF base was converted into it
    if name in EMBEDDED_MODELS and embedded_path(name) is not None:
        return name, None
    if name and name not in EMBEDDED_MODELS and Path(name).expanduser().exists():
        return name, gguf
    hub_id = marker.base_hub_id
    if hub_id:
        embedded = embedded_for_hub_id(hub_id)
        if embedded is not None:
            return embedded, None
        cached = cached_snapshot(hub_id, marker.base_revision)
        if cached is not None:
            return cached, None
        if hub_offline():  # an embedded model's package name says what to install
            return embedded_for_hub_id(hub_id, installed=False) or hub_id, None
        return hub_id, None
    return name, gguf


def _no_weights(run: Path) -> TunelabError:
    return TunelabError(f"{run} has no weights (config.json or adapter_config.json): rerun it")


def _adapter(run: Path, base: nn.Module, marker: RunMarker) -> nn.Module:
    from peft import PeftModel

    from tunelab.strategies.peft_common import prepare_loaded

    if marker.strategy == "qlora":  # the adapter trained over NF4 weights: rebuild them
        from tunelab.strategies.qlora import quantize_base

        quantize_base(base)
    return prepare_loaded(PeftModel.from_pretrained(base, run))


def apply_trained(run: Path, marker: RunMarker, base: nn.Module, family: str) -> nn.Module:
    """`base` with the run's strategy re-applied and the run's trained tensors copied in (runs
    whose weights are `trained.safetensors`: strategies that train part of a plain model)."""
    from safetensors.torch import load_file

    from tunelab.strategies import get_strategy
    from tunelab.training.checkpoint import load_trainable

    strategy = get_strategy(marker.strategy or "full")
    model = strategy.build(base, marker.strategy_options, family, 1)
    try:
        load_trainable(model, load_file(str(run / TRAINED_FILE)))
    except RuntimeError as exc:
        raise TunelabError(
            f"{run / TRAINED_FILE} does not fit {marker.base_model} with strategy "
            f"{marker.strategy} ({exc}): was the base model changed since the run?"
        ) from None
    return model


def open_classifier(
    run_dir: str | Path,
    safetensors_only: bool = False,
    dtype: str | None = None,
    device: str = "auto",
) -> tuple[nn.Module, object, RunMarker]:
    """(model, tokenizer, marker) of a finished classification run, ready for inference on
    `device` in `dtype` (`models.precision`: --dtype / --device; None: float32 on the CPU as
    saved, autocast left to `autocast_for`); `safetensors_only` (the server): never unpickle
    weights (use_safetensors=True)."""
    from tunelab.models.precision import check

    if dtype is not None:
        dtype, device = check(dtype, device)
    run = Path(run_dir).expanduser()
    marker = read_marker(run)
    if marker.task != "classification":
        raise TunelabError(f"{run} is a {marker.task} run: this verb needs a classifier")
    with _loading(run):
        model, tok, marker = _open_classifier(run, marker, safetensors_only)
    if dtype is None:
        return model, tok, marker
    return _placed(model, run, marker, dtype, device, "encoder"), tok, marker


def _placed(model, run: Path, marker: RunMarker, dtype: str, device: str, kind: str):
    """`model` in the precision and on the device asked for; a quantized or ONNX run keeps
    its own, recorded as its compression method (asking for another is an error)."""
    from tunelab.compress.precision import PRECISION_ATTR, apply_precision
    from tunelab.models.precision import resolve

    own = marker.compression is not None and marker.weights in ("quantized", "onnx")
    if own:
        method = (marker.compression or {}).get("method")
        if dtype != "auto" or device not in ("auto", "cpu"):
            raise TunelabError(
                f"{run} is a compressed run ({method}) that runs in its own precision on the"
                " CPU: drop --dtype and --device (or open the run it was compressed from)"
            )
        setattr(model, PRECISION_ATTR, {"dtype": str(method), "device": "cpu"})
        return model
    return apply_precision(model, *resolve(dtype, device), kind=kind)


def _open_classifier(run: Path, marker: RunMarker, safetensors_only: bool):
    from transformers import AutoModelForSequenceClassification

    from tunelab.models.load import load_classifier, weights_kwargs
    from tunelab.models.sources import load_tokenizer

    if marker.compression is not None:
        from tunelab.runs.compressed import open_compressed

        model = open_compressed(run, marker, safetensors_only)
        return model, load_tokenizer(str(run)), marker
    if (run / "config.json").is_file():
        model = AutoModelForSequenceClassification.from_pretrained(
            run, **weights_kwargs(safetensors_only)
        )
        return model.eval(), load_tokenizer(str(run)), marker
    if not (run / TRAINED_FILE).is_file() and not (run / "adapter_config.json").is_file():
        raise _no_weights(run)
    base_name, gguf_file = resolve_base(marker)
    base = load_classifier(
        base_name, marker.labels or [], gguf_file, safetensors_only=safetensors_only
    )
    if (run / TRAINED_FILE).is_file():
        model = apply_trained(run, marker, base.model, base.family)
    else:
        model = _adapter(run, base.model, marker)
    return model.eval(), load_tokenizer(str(run)), marker


def open_generative_run(
    run: Path, marker: RunMarker, dtype: torch.dtype = torch.float32, safetensors_only: bool = False
) -> Loaded:
    """A generative run folder that holds no full weights, ready for generation: its base
    model with the trained tensors copied in (`partial`) or its peft adapter (`adapter`)."""
    from tunelab.models.load import safetensors_only_within
    from tunelab.models.sources import load_tokenizer
    from tunelab.tasks.generative import load_base

    base_name, gguf_file = resolve_base(marker)
    with safetensors_only_within(safetensors_only):
        base = load_base(base_name, marker.task, gguf_file, dtype)
    tok = load_tokenizer(str(run))
    if (run / TRAINED_FILE).is_file():
        model = apply_trained(run, marker, base.model, base.family)
    elif (run / "adapter_config.json").is_file():
        model = _adapter(run, base.model, marker)
    else:
        raise _no_weights(run)
    return Loaded(model.eval(), tok, base.family, str(run))


def open_lm(
    name: str, dtype: str | None = None, device: str = "auto", safetensors_only: bool = False
) -> tuple[Loaded, RunMarker | None]:
    """(language model, the run's marker or None) for any model name or generative run folder,
    on `device` in `dtype` (`models.precision`: --dtype / --device; "fp32" is the exact mode;
    None: float32 on the CPU as saved); `safetensors_only` (the server): never unpickle
    weights (use_safetensors=True).

    Raises:
        TunelabError: unknown name, an encoder model, a classification run, bad weights, or a
            dtype / device this machine or this model cannot run.
    """
    from dataclasses import replace

    from tunelab.compress.precision import apply_precision
    from tunelab.models.precision import check, resolve, torch_dtype

    if dtype is not None:
        dtype, device = check(dtype, device)
    marker = find_marker(name)
    path = Path(name).expanduser()
    if marker is None:
        from tunelab.models.load import load_lm

        if dtype is None:
            return load_lm(name, safetensors_only=safetensors_only), None
        d, dev = resolve(dtype, device)  # before loading: a missing GPU is said at once
        loaded = load_lm(name, dtype=torch_dtype(d), safetensors_only=safetensors_only)
        return replace(loaded, model=apply_precision(loaded.model, d, dev)), None
    if not marker.generative:
        raise TunelabError(
            f"{path} is a {marker.task} run: generate, score and generative eval need a "
            "causal_lm or seq2seq run or a language model (a classifier: tunelab predict)"
        )
    with _loading(path):
        loaded = _open_lm_run(path, marker, torch.float32, safetensors_only)
    if dtype is None:
        return loaded, marker
    model = _placed(loaded.model, path, marker, dtype, device, "lm")
    return replace(loaded, model=model), marker


def _open_lm_run(path: Path, marker: RunMarker, dtype: torch.dtype, safetensors_only: bool):
    from tunelab.models.load import load_lm

    name = str(path)
    if marker is not None and marker.compression is not None and marker.weights == "gguf":
        from transformers import AutoModelForCausalLM

        from tunelab.models.sources import convert_gguf, load_tokenizer

        # weights from the GGUF (dequantized once into the cache); the tokenizer from the run's
        # own files, which the source run had (GGUF's rebuilt one may lack its special tokens)
        folder = convert_gguf(path / "model.gguf")
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, use_safetensors=True)
        return Loaded(model.eval(), load_tokenizer(str(path)), "decoder", str(path))
    if marker is not None and marker.compression is not None:
        from tunelab.models.sources import load_tokenizer
        from tunelab.runs.compressed import open_compressed

        model = open_compressed(path, marker, safetensors_only)
        return Loaded(model, load_tokenizer(str(path)), marker.family or "decoder", str(path))
    if marker.generative and not (path / "config.json").is_file():
        return open_generative_run(path, marker, dtype, safetensors_only)
    return load_lm(name, dtype=dtype, safetensors_only=safetensors_only)


def run_prompts(pairs, loaded: Loaded, marker: RunMarker | None, chat_template: bool | None):
    """The prompts of `pairs` as the run (or plain model) `loaded` should read them."""
    from tunelab.tasks.generative import format_prompts

    trained = bool(marker.chat_template) if marker is not None else None
    sep = marker.extra.get("separator", "\n") if marker is not None else "\n"
    return format_prompts(pairs, loaded.tokenizer, loaded.family, trained, chat_template, sep)
