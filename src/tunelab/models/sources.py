"""Where a model comes from: an embedded default name, a local Hugging Face folder, a GGUF file
(converted once into the cache, see `convert_gguf`), or a hub id (online only), in that order.
Tokenizers and transformers configs are read here too.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tunelab.defaults import EMBEDDED_MODELS, cache_dir
from tunelab.errors import TunelabError

RUN_MARKER_FILE = "tunelab_run.json"
"""The file that makes a folder a tunelab run (its content is owned by `runs/marker.py`)."""


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def convert_gguf(gguf_path: str | Path, out_dir: str | Path | None = None) -> Path:
    """Dequantize a GGUF checkpoint into an fp32 Hugging Face folder (cached; done once).

    transformers refuses `save_pretrained` on a GGUF-loaded model, so the weights are moved into
    a model built from the same config without its quantization_config. Written to a temporary
    folder and renamed, so a killed conversion leaves nothing half-written.
    """
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise TunelabError(f"GGUF file {gguf_path} not found: pass an existing .gguf file")
    with gguf_path.open("rb") as fh:
        if fh.read(4) != b"GGUF":
            raise TunelabError(
                f"{gguf_path} is not a GGUF file (it does not start with GGUF): pass a .gguf "
                "model file, e.g. one llama.cpp wrote"
            )
    if out_dir is not None and Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise TunelabError(f"--out {out_dir} is a file: name a folder for the converted model")
    import struct

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if out_dir is None:
        # the cache is keyed by the file itself: two files named model.gguf are two models
        import hashlib

        st = gguf_path.resolve().stat()
        key = f"{gguf_path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        digest = hashlib.sha256(key.encode()).hexdigest()[:10]
        out_dir = cache_dir() / "models" / f"{gguf_path.stem}-{digest}"
    out = Path(out_dir)
    if (out / "config.json").is_file():
        return out
    folder, name = gguf_path.parent, gguf_path.name
    try:
        src = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except ImportError as exc:
        raise TunelabError(
            f"reading GGUF needs the gguf package ({exc}): pip install gguf"
        ) from None
    except (ValueError, KeyError, OSError, EOFError, struct.error) as exc:  # a damaged GGUF
        first = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise TunelabError(
            f"cannot read {gguf_path} ({first}): the file is damaged or holds an architecture "
            "transformers cannot load from GGUF"
        ) from None
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(src.state_dict())
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def resolve_source(name: str, gguf_file: str | None = None) -> str:
    """A local HF folder (or, online, a hub id) for any accepted model name."""
    if name in EMBEDDED_MODELS:
        emb = EMBEDDED_MODELS[name]
        path = emb.locate()
        return str(convert_gguf(path) if emb.is_gguf else path)
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return str(convert_gguf(path))
    if path.is_file():
        raise TunelabError(
            f"model {name} is a file, not a model: pass a model folder, a .gguf file or an "
            f"embedded name ({', '.join(EMBEDDED_MODELS)})"
        )
    if path.is_dir():
        if gguf_file:
            return str(convert_gguf(path / gguf_file))
        if (path / RUN_MARKER_FILE).is_file() and not (path / "config.json").is_file():
            raise TunelabError(
                f"run folder {path} holds only an adapter: finetune it with --run.merge true "
                "to get a full model, or start from its base model"
            )
        if (path / "config.json").is_file():
            return str(path)
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return str(convert_gguf(ggufs[0]))
        hint = f" (pick one with --model.gguf_file: {', '.join(g.name for g in ggufs)})"
        raise TunelabError(f"{path} is not a model folder (no config.json){hint if ggufs else ''}")
    embedded = ", ".join(EMBEDDED_MODELS)
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1
    if looks_local:
        raise TunelabError(
            f"model {name} not found: pass an existing folder or an embedded name ({embedded})"
        )
    if hub_offline():
        raise TunelabError(
            f"model {name!r} is not a local folder and the hub is offline (HF_HUB_OFFLINE=1): "
            f"pass a local folder, a .gguf file, a run folder or an embedded name ({embedded})"
        )
    return name


def load_config(name: str, source: str):
    """The transformers config of resolved `source` (asked for as `name`), or a one-line error."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source)
    except OSError as exc:
        raise TunelabError(
            f"cannot load model {name!r} ({str(exc).splitlines()[0]}): pass a local folder, a "
            f".gguf file or an embedded name ({', '.join(EMBEDDED_MODELS)})"
        ) from None


def load_tokenizer(source: str):
    """The tokenizer of `source`, with a pad token (decoders often lack one: reuse EOS)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(source)
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise TunelabError(f"tokenizer of {source} has neither a pad nor an EOS token")
        tok.pad_token = tok.eos_token
    return tok
