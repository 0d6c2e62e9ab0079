"""Loading a model for a task: a sequence classifier with a fresh head for any family, or a
language model with its LM head, from any source `models.sources` resolves."""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import nn

from tunelab.errors import TunelabError
from tunelab.models.families import detect_family
from tunelab.models.sources import load_config, load_tokenizer, resolve_source

ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop")
_SAFETENSORS_ONLY: ContextVar[bool] = ContextVar("tunelab_safetensors_only", default=False)


@contextmanager
def safetensors_only_within(on: bool = True):
    """Within this block, load_classifier and load_lm load safetensors weights only, for
    loaders that reach them without a `safetensors_only` keyword of their own (a run's base
    model)."""
    token = _SAFETENSORS_ONLY.set(on or _SAFETENSORS_ONLY.get())
    try:
        yield
    finally:
        _SAFETENSORS_ONLY.reset(token)


def weights_kwargs(safetensors_only: bool = False) -> dict:
    """from_pretrained's keywords for where the weights may come from: safetensors only
    (never unpickle a file) when asked here or by `safetensors_only_within`."""
    return {"use_safetensors": True} if safetensors_only or _SAFETENSORS_ONLY.get() else {}


@dataclass
class Loaded:
    """A model ready for a task, with its tokenizer and family."""

    model: nn.Module
    tokenizer: object
    family: str
    source: str
    """The resolved local folder (or hub id) the weights came from."""


def load_classifier(
    name: str,
    label_names: list[str],
    gguf_file: str | None = None,
    attention_dropout: float | None = None,
    safetensors_only: bool = False,
) -> Loaded:
    """A sequence-classification model for any family, with a fresh head for `label_names`.

    `attention_dropout`, when given, replaces the config's attention-probability dropout
    (whatever the architecture calls it); T5-style models share one dropout rate and are left
    as they are. `safetensors_only`: never unpickle weights (use_safetensors=True).

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
            source,
            config=config,
            dtype=torch.float32,
            ignore_mismatched_sizes=True,
            **weights_kwargs(safetensors_only),
        )
    except ValueError as exc:
        raise TunelabError(
            f"{config.model_type} models have no sequence-classification head in transformers "
            f"({str(exc).splitlines()[0][:120]}): pick another model"
        ) from None
    return Loaded(model, tok, detect_family(config), source)


def load_lm(
    name: str,
    gguf_file: str | None = None,
    dtype: torch.dtype = torch.float32,
    safetensors_only: bool = False,
) -> Loaded:
    """A language model with its LM head, for generation and scoring.

    Decoders load as causal LMs, encoder-decoders as seq2seq LMs; encoders (no generation head)
    are refused in one line. `name` is anything `resolve_source` accepts (a generative run
    folder that holds only an adapter or trained tensors opens with `runs.open.open_lm`).
    `safetensors_only`: never unpickle weights (use_safetensors=True).

    Raises:
        TunelabError: unknown name, an encoder model, or weights that do not load.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

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
        model = auto.from_pretrained(source, dtype=dtype, **weights_kwargs(safetensors_only))
    except ValueError as exc:
        raise TunelabError(
            f"{config.model_type} has no language-model head in transformers "
            f"({str(exc).splitlines()[0][:120]}): pick another model"
        ) from None
    tok = load_tokenizer(source)
    return Loaded(model.eval(), tok, family, source)
