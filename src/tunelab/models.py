"""Loading models and tokenizers from wherever a user keeps them; family detection; task heads.

Sources, in the order they are tried: an embedded default name, a tunelab run folder, a local
Hugging Face folder, a GGUF file (converted once into the cache, see `convert_gguf`), and a
hub id (online only).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tunelab.defaults import EMBEDDED_MODELS, cache_dir
from tunelab.errors import TunelabError

FAMILIES = ("encoder", "decoder", "encoder-decoder")
HEAD_NAMES = ("classifier", "score", "classification_head")
RUN_MARKER = "tunelab_run.json"


@dataclass
class Loaded:
    """A model ready for a task, with its tokenizer and family."""

    model: nn.Module
    tokenizer: object
    family: str
    source: str
    """The resolved local folder (or hub id) the weights came from."""


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def detect_family(config) -> str:
    """encoder, decoder or encoder-decoder, from a transformers config."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder"
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(
        config, "is_decoder", False
    ):
        return "encoder"
    return "decoder"


def head_module_names(model: nn.Module) -> list[str]:
    """Names of the task head(s) on a transformers model, e.g. ['classifier']."""
    return [n for n in HEAD_NAMES if isinstance(getattr(model, n, None), nn.Module)]


def convert_gguf(gguf_path: str | Path, out_dir: str | Path | None = None) -> Path:
    """Dequantize a GGUF checkpoint into an fp32 Hugging Face folder (cached; done once).

    transformers refuses `save_pretrained` on a GGUF-loaded model, so the weights are moved into
    a model built from the same config without its quantization_config. Written to a temporary
    folder and renamed, so a killed conversion leaves nothing half-written.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise TunelabError(f"GGUF file {gguf_path} not found: pass an existing .gguf file")
    out = Path(out_dir) if out_dir else cache_dir() / "models" / gguf_path.stem
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
    if path.is_dir():
        if gguf_file:
            return str(convert_gguf(path / gguf_file))
        if (path / RUN_MARKER).is_file() and not (path / "config.json").is_file():
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


ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop")


def load_classifier(
    name: str,
    label_names: list[str],
    gguf_file: str | None = None,
    attention_dropout: float | None = None,
) -> Loaded:
    """A sequence-classification model for any family, with a fresh head for `label_names`.

    `attention_dropout`, when given, replaces the config's attention-probability dropout
    (whatever the architecture calls it); T5-style models share one dropout rate and are left
    as they are.

    Raises:
        TunelabError: unknown name, offline hub id, or an architecture with no classifier.
    """
    from transformers import AutoModelForSequenceClassification

    source = resolve_source(name, gguf_file)
    config = load_config(name, source)
    tok = load_tokenizer(source)
    id2label = dict(enumerate(label_names))
    config.num_labels = len(label_names)
    config.id2label = id2label
    config.label2id = {v: k for k, v in id2label.items()}
    config.pad_token_id = tok.pad_token_id
    if attention_dropout is not None:
        for key in ATTENTION_DROPOUT_KEYS:
            if hasattr(config, key):
                setattr(config, key, attention_dropout)
    if getattr(config, "problem_type", None) is None:
        config.problem_type = "single_label_classification"
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            source, config=config, dtype=torch.float32, ignore_mismatched_sizes=True
        )
    except ValueError as exc:
        raise TunelabError(
            f"{config.model_type} models have no sequence-classification head in transformers "
            f"({str(exc).splitlines()[0][:120]}): pick another model"
        ) from None
    return Loaded(model, tok, detect_family(config), source)


def read_run_marker(run_dir: str | Path) -> dict:
    """The tunelab_run.json of a run folder, or a one-line error when it is not one."""
    path = Path(run_dir)
    marker = path / RUN_MARKER
    if not marker.is_file():
        why = "does not exist" if not path.exists() else f"has no {RUN_MARKER}"
        raise TunelabError(
            f"{path} is not a tunelab run folder ({why}): pass a folder written by tunelab finetune"
        )
    return json.loads(marker.read_text())


def load_lm(name: str, gguf_file: str | None = None, dtype: torch.dtype = torch.float32) -> Loaded:
    """A language model with its LM head, for generation and scoring.

    Decoders load as causal LMs, encoder-decoders as seq2seq LMs; encoders (no generation head)
    are refused in one line. `name` is anything `resolve_source` accepts, or a run folder of a
    generative fine-tuning (causal_lm / seq2seq) whatever it holds: full weights, the tensors
    that trained, or a peft adapter (both over the run's base model, see generative.open_run).

    Raises:
        TunelabError: unknown name, an encoder model, or weights that do not load.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    run = Path(name).expanduser()
    if (run / RUN_MARKER).is_file() and not (run / "config.json").is_file():
        marker = read_run_marker(run)
        if marker.get("task") in ("causal_lm", "seq2seq"):
            from tunelab.generative import open_run

            return open_run(run, marker, dtype)
    source = resolve_source(name, gguf_file)
    config = load_config(name, source)
    family = detect_family(config)
    if family == "encoder":
        raise TunelabError(
            f"{name} is an encoder ({config.model_type}) and cannot generate text: "
            "use a decoder or an encoder-decoder model"
        )
    auto = AutoModelForSeq2SeqLM if family == "encoder-decoder" else AutoModelForCausalLM
    try:
        model = auto.from_pretrained(source, dtype=dtype)
    except ValueError as exc:
        raise TunelabError(
            f"{config.model_type} has no language-model head in transformers "
            f"({str(exc).splitlines()[0][:120]}): pick another model"
        ) from None
    tok = load_tokenizer(source)
    return Loaded(model.eval(), tok, family, source)
