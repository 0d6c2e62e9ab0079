"""lora: low-rank update matrices beside the attention weights (peft); the base stays frozen."""

from __future__ import annotations

from torch import nn

from tunelab.errors import TunelabError
from tunelab.strategies.base import Strategy, first_doc_line
from tunelab.strategies.options import LoraOptions
from tunelab.strategies.peft_common import task_type, trained_modules


def apply(model: nn.Module, options: LoraOptions, family: str, total_steps: int) -> nn.Module:
    """Wrap `model` in a peft LoRA model (see `lora_model`)."""
    return lora_model(model, options)


def lora_model(model: nn.Module, options: LoraOptions, strategy: str = "lora") -> nn.Module:
    """Wrap `model` in a peft LoRA model for sequence classification; errors name the flags
    of `strategy` (qlora shares these options).

    The classification head is trained in full (peft `modules_to_save`) because it is new,
    and so is a BERT-style pooler in front of it: it is part of the head that
    BertForSequenceClassification uses, and frozen it held the embedded MiniLM at 35% on a
    300-article BBC subset where training it gave over 80% (tests/integration).
    """
    import peft

    targets = options.target_modules
    if targets and targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    if targets is None:
        mapping = peft.utils.constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
        if model.config.model_type not in mapping:
            targets = "all-linear"
    cfg = peft.LoraConfig(
        task_type=task_type(model),
        r=options.r,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=targets,
        modules_to_save=trained_modules(model),
    )
    try:
        return peft.get_peft_model(model, cfg)
    except ValueError as exc:
        raise TunelabError(
            f"{strategy} cannot adapt this model ({exc}); set --{strategy}.target_modules to "
            "module names it has, e.g. all-linear"
        ) from None


STRATEGY = Strategy("lora", LoraOptions, apply, first_doc_line(__doc__))
