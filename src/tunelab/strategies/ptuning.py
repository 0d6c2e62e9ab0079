"""ptuning: virtual-token embeddings computed by a small trained encoder (peft P-tuning)."""

from __future__ import annotations

from torch import nn

from tunelab.errors import TunelabError
from tunelab.strategies.base import Strategy, first_doc_line
from tunelab.strategies.options import PtuningOptions
from tunelab.strategies.peft_common import (
    prepare_loaded,
    refuse_encoder_decoder,
    task_type,
    trained_modules,
    wrap,
)

ENCODERS = {"mlp": "MLP", "lstm": "LSTM"}


def apply(model: nn.Module, options: PtuningOptions, family: str, total_steps: int) -> nn.Module:
    """Wrap `model` in a peft P-tuning model for sequence classification.

    The encoder trains and only its output, the virtual-token embeddings, is saved. The
    classification head (and a BERT-style pooler) trains in full as peft `modules_to_save`.
    Decoders get their pooling fixed (peft_common.pool_last_attended); encoder-decoder models
    are refused (peft_common.refuse_encoder_decoder).
    """
    import peft

    refuse_encoder_decoder("ptuning", family, model)
    if options.encoder not in ENCODERS:
        raise TunelabError(
            f"unknown ptuning.encoder {options.encoder!r}: choose {' or '.join(ENCODERS)}"
        )

    def config():
        return peft.PromptEncoderConfig(
            task_type=task_type(model),
            num_virtual_tokens=options.num_virtual_tokens,
            encoder_hidden_size=options.encoder_hidden_size,
            encoder_reparameterization_type=ENCODERS[options.encoder],
            modules_to_save=trained_modules(model),
        )

    wrapped = wrap(model, config, "ptuning", "check the --ptuning.* options")
    return prepare_loaded(wrapped)


STRATEGY = Strategy("ptuning", PtuningOptions, apply, first_doc_line(__doc__), can_merge=False)
