"""What the peft-backed strategies share: trained head modules, wrapping, loaded-model fixes.

Not a strategy itself (it defines no STRATEGY). Every peft strategy wraps the classifier with
`wrap`, keeping the new classification head (and a BERT-style pooler before it) trainable as
peft `modules_to_save`, and turns peft's or transformers' complaints about the model or the
options into a one-line TunelabError. `prepare_loaded` makes a peft model read back from a run
folder behave as the trained one did (see there).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from tunelab.errors import TunelabError
from tunelab.models.families import detect_family, head_module_names

ENCODER_DECODER = "encoder-decoder"


def pooler_names(model: nn.Module) -> list[str]:
    """['pooler'] when the model feeds its head through a pooler layer (BERT-style)."""
    return ["pooler"] if any(n.endswith(".pooler") for n, _ in model.named_modules()) else []


def trained_modules(model: nn.Module) -> list[str]:
    """Modules trained in full beside the adapter (peft `modules_to_save`): the new head, and a
    BERT-style pooler, which is part of the head BertForSequenceClassification uses. A
    language model (generative tasks) has no new head: none."""
    heads = head_module_names(model)
    return heads + pooler_names(model) if heads else []


def task_type(model: nn.Module) -> str:
    """peft's task type for `model`: SEQ_CLS for a classifier (it has a head tunelab knows),
    else SEQ_2_SEQ_LM for an encoder-decoder language model and CAUSAL_LM for a decoder one
    (generative tasks: peft then wraps the LM head's forward and `generate`)."""
    import peft

    if head_module_names(model):
        return peft.TaskType.SEQ_CLS
    if getattr(model.config, "is_encoder_decoder", False):
        return peft.TaskType.SEQ_2_SEQ_LM
    return peft.TaskType.CAUSAL_LM


def module_names(text: str | None) -> list[str] | str | None:
    """A comma-separated option as peft wants it: a list of names, `all-linear`, or None."""
    if text is None or text.strip() == "all-linear":
        return None if text is None else "all-linear"
    names = [t.strip() for t in text.split(",") if t.strip()]
    return names or None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


@contextmanager
def peft_errors(strategy: str, fix: str) -> Iterator[None]:
    """Turn a ValueError / TypeError (or OSError: a tokenizer not found) that peft or
    transformers raise while configuring or wrapping a model into a one-line TunelabError:
    `{strategy} cannot adapt this model (reason): {fix}`."""
    try:
        yield
    except (ValueError, TypeError, OSError) as exc:
        raise TunelabError(
            f"{strategy} cannot adapt this model ({_one_line(exc)}): {fix}"
        ) from None


def wrap(model: nn.Module, make_config: Callable[[], Any], strategy: str, fix: str) -> nn.Module:
    """`peft.get_peft_model(model, make_config())`, with errors as one line (see peft_errors).

    The config is built inside the guard too: peft checks option values in its configs.
    """
    import peft

    with peft_errors(strategy, fix):
        return peft.get_peft_model(model, make_config())


def refuse_encoder_decoder(strategy: str, family: str, model: nn.Module | None = None) -> None:
    """Prompt-learning methods cannot drive encoder-decoder classifiers: a one-line error.
    An encoder-decoder language model (`model` without a classification head: seq2seq
    fine-tuning) is fine: peft prepends the virtual tokens to its encoder input.

    peft feeds them `inputs_embeds` (prompt tuning, P-tuning), which T5- and BART-style
    classifiers refuse because they find the end-of-sequence token to pool from `input_ids`,
    or `past_key_values` (prefix tuning), which they do not take at all.
    """
    if model is not None and not head_module_names(model):
        return
    if family == ENCODER_DECODER:
        raise TunelabError(
            f"{strategy} does not work with encoder-decoder models (their classifiers pool at "
            "the end-of-sequence token found in input_ids, which prompt learning replaces): "
            "use lora, adalora or ia3, or an encoder or decoder model"
        )


POOLING_FIXED = "_tunelab_pools_last_attended"


def pool_last_attended(model: nn.Module) -> None:
    """Make a decoder classifier under prompt tuning / P-tuning pool its last real token.

    Decoder classifiers (LlamaForSequenceClassification and friends) pool the logits of the
    last non-pad token, which they find in `input_ids`. peft prepends the virtual tokens to
    `inputs_embeds` and passes no `input_ids`, so transformers falls back to the last position:
    a pad token whenever a batch is right-padded, which made a text's logits depend on the
    other texts in its batch. Two hooks fix that: one remembers the attention mask (peft has
    already extended it over the virtual tokens), the other moves the head's output at the last
    attended position of each row to the last position, where transformers pools. Nothing is
    saved: call this again on a model loaded from a run folder (`prepare_loaded`).
    """
    base = model.base_model
    score = getattr(base, "score", None)
    if not isinstance(score, nn.Module) or getattr(base, POOLING_FIXED, False):
        return
    seen: dict[str, torch.Tensor | None] = {"mask": None}

    def remember_mask(module, args, kwargs):
        embeds_only = not args and kwargs.get("input_ids") is None
        seen["mask"] = kwargs.get("attention_mask") if embeds_only else None

    def last_attended_to_end(module, args, output):
        mask = seen["mask"]
        if mask is None or output.dim() != 3 or tuple(mask.shape) != tuple(output.shape[:2]):
            return output
        positions = torch.arange(mask.shape[1], device=output.device)
        last = (positions * (mask.to(output.device) > 0)).argmax(-1)  # (batch,)
        rows = torch.arange(output.shape[0], device=output.device)
        return torch.cat([output[:, :-1], output[rows, last].unsqueeze(1)], dim=1)

    base.register_forward_pre_hook(remember_mask, with_kwargs=True)
    score.register_forward_hook(last_attended_to_end)
    setattr(base, POOLING_FIXED, True)


def prepare_loaded(model: nn.Module) -> nn.Module:
    """A peft model from `PeftModel.from_pretrained`, made to behave as it did in training.

    - prompt tuning / P-tuning on a decoder: the pooling hooks of `pool_last_attended`;
    - AdaLoRA: peft 0.21 loads it without `trainable_adapter_name`, so any forward with labels
      (evaluation, the matrix tests) raised AttributeError (peft issue #571, only half fixed);
      the attribute is set back (the saved orth_reg_weight is 0, see adalora, so the loss
      stays the plain task loss).

    Anything else is returned unchanged; calling it twice is harmless.
    """
    import peft

    if not isinstance(model, peft.PeftModel):
        return model
    config = model.active_peft_config
    virtual_tokens = (peft.PeftType.PROMPT_TUNING, peft.PeftType.P_TUNING)
    if config.peft_type in virtual_tokens and detect_family(model.base_model.config) == "decoder":
        pool_last_attended(model)
    if config.peft_type == peft.PeftType.ADALORA:
        tuner = model.base_model
        if not hasattr(tuner, "trainable_adapter_name"):
            tuner.trainable_adapter_name = model.active_adapter
    return model
