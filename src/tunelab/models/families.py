"""Model families (encoder, decoder, encoder-decoder) and where their task heads are."""

from __future__ import annotations

from torch import nn

FAMILIES = ("encoder", "decoder", "encoder-decoder")
HEAD_NAMES = ("classifier", "score", "classification_head")


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
