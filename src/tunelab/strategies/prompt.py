"""prompt: trained embeddings of virtual tokens put before the text (peft prompt tuning)."""

from __future__ import annotations

from torch import nn

from tunelab.errors import TunelabError
from tunelab.strategies.base import Strategy, first_doc_line
from tunelab.strategies.options import PromptOptions
from tunelab.strategies.peft_common import (
    prepare_loaded,
    refuse_encoder_decoder,
    task_type,
    trained_modules,
    wrap,
)

INITS = {"vocab": "SAMPLE_VOCAB", "random": "RANDOM"}


def tokenizer_source(model: nn.Module) -> str:
    """The folder (or hub id) the model, and so its tokenizer, was loaded from."""
    source = getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", "")
    if not source:
        raise TunelabError(
            "prompt.init_text needs the model's tokenizer but the model has no source folder: "
            "drop --prompt.init_text"
        )
    return str(source)


def apply(model: nn.Module, options: PromptOptions, family: str, total_steps: int) -> nn.Module:
    """Wrap `model` in a peft prompt-tuning model for sequence classification.

    The classification head (and a BERT-style pooler) trains in full as peft
    `modules_to_save`. Decoders get their pooling fixed (peft_common.pool_last_attended);
    encoder-decoder models are refused (peft_common.refuse_encoder_decoder).
    """
    import peft

    refuse_encoder_decoder("prompt", family, model)
    if options.init_text is None and options.init not in INITS:
        raise TunelabError(
            f"unknown prompt.init {options.init!r}: choose {' or '.join(INITS)} "
            "(or give prompt.init_text)"
        )
    init = {"prompt_tuning_init": INITS.get(options.init)}
    if options.init_text is not None:
        if not options.init_text.strip():
            raise TunelabError("prompt.init_text is empty: give a text or drop the option")
        init = {
            "prompt_tuning_init": peft.PromptTuningInit.TEXT,
            "prompt_tuning_init_text": options.init_text,
            "tokenizer_name_or_path": tokenizer_source(model),
        }

    def config():
        return peft.PromptTuningConfig(
            task_type=task_type(model),
            num_virtual_tokens=options.num_virtual_tokens,
            modules_to_save=trained_modules(model),
            **init,
        )

    wrapped = wrap(model, config, "prompt", "check the --prompt.* options")
    return prepare_loaded(wrapped)


STRATEGY = Strategy("prompt", PromptOptions, apply, first_doc_line(__doc__), can_merge=False)
