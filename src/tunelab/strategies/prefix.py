"""prefix: trained key/value vectors prepended to every attention layer (peft prefix tuning)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from tunelab.strategies.base import Strategy, first_doc_line
from tunelab.strategies.peft_common import (
    prepare_loaded,
    refuse_encoder_decoder,
    task_type,
    trained_modules,
    wrap,
)


@dataclass
class PrefixOptions:
    num_virtual_tokens: int = 20
    """Length of the prefix: key/value pairs per layer that every token can attend to (the
    P-tuning v2 range for classification is 20 to 100; 20 costs 2 x layers x hidden x 20
    parameters, 0.37M for a BERT-base). BERT-style encoders number the text's positions after
    the prefix: max_length + num_virtual_tokens must fit their position table (512)."""
    prefix_projection: bool = True
    """Compute the prefix with a two-layer MLP from per-token embeddings while training (Li &
    Liang's reparametrisation: optimising the prefix directly was less stable for them, and
    learned about half as fast on tunelab's tiny test models); only the resulting prefix is
    saved. On SmolLM2 with a 54-step budget the projected prefix did not learn at all and the
    plain one (false, lr 1e-2) reached 80% (docs/compare-smollm2.md): try both."""
    encoder_hidden_size: int | None = None
    """Width of that MLP; none: the model's hidden size."""


def apply(model: nn.Module, options: PrefixOptions, family: str, total_steps: int) -> nn.Module:
    """Wrap `model` in a peft prefix-tuning model for sequence classification.

    The classification head (and a BERT-style pooler) trains in full as peft
    `modules_to_save`; the base model stays frozen. Encoder-decoder models are refused (see
    peft_common.refuse_encoder_decoder).
    """
    import peft

    refuse_encoder_decoder("prefix", family, model)

    def config():
        return peft.PrefixTuningConfig(
            task_type=task_type(model),
            num_virtual_tokens=options.num_virtual_tokens,
            prefix_projection=options.prefix_projection,
            encoder_hidden_size=options.encoder_hidden_size,
            modules_to_save=trained_modules(model),
        )

    wrapped = wrap(model, config, "prefix", "check the --prefix.* options")
    return prepare_loaded(wrapped)


STRATEGY = Strategy("prefix", PrefixOptions, apply, first_doc_line(__doc__), can_merge=False)
