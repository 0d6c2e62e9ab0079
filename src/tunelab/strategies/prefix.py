"""prefix: trained key/value vectors prepended to every attention layer (peft prefix tuning)."""

from __future__ import annotations

from torch import nn

from tunelab.strategies.base import Strategy, first_doc_line
from tunelab.strategies.options import PrefixOptions
from tunelab.strategies.peft_common import (
    prepare_loaded,
    refuse_encoder_decoder,
    task_type,
    trained_modules,
    wrap,
)


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
