"""adalora: LoRA whose rank budget moves during training to the weights that matter most (peft)."""

from __future__ import annotations

import torch
from torch import nn

from tunelab.errors import TunelabError
from tunelab.strategies.base import Strategy, first_doc_line
from tunelab.strategies.options import AdaLoraOptions
from tunelab.strategies.peft_common import (
    module_names,
    prepare_loaded,
    task_type,
    trained_modules,
    wrap,
)


def schedule(options: AdaLoraOptions, total_steps: int) -> tuple[int, int]:
    """(tinit, tfinal) in optimizer steps for a run of `total_steps`.

    The loop passes steps 0 .. total_steps - 1 to `after_step`; peft cuts the budget to
    target_r at step total_steps - tfinal, so tfinal is at least 1 (when the run has two steps)
    and tinit leaves at least one step for the budget to shrink: tinit + tfinal < total_steps,
    which peft requires, also for tiny budgets.
    """
    for name in ("tinit", "tfinal"):
        value = getattr(options, name)
        if not 0 <= value < 1:
            raise TunelabError(f"adalora.{name} is a fraction of the run's steps: give 0 to <1")
    if options.tinit + options.tfinal >= 1:
        raise TunelabError(
            "adalora.tinit + adalora.tfinal must stay below 1: leave steps for the budget to shrink"
        )
    total = max(1, total_steps)
    tfinal = min(max(1, round(options.tfinal * total)), total - 1)
    tinit = max(0, min(round(options.tinit * total), total - tfinal - 1))
    return tinit, tfinal


def _check(options: AdaLoraOptions) -> None:
    if options.target_r < 1 or options.init_r <= options.target_r:
        raise TunelabError(
            f"adalora needs 1 <= target_r < init_r (got target_r {options.target_r}, init_r "
            f"{options.init_r}): lower --adalora.target_r or use lora for a fixed rank"
        )
    if options.deltaT < 1:
        raise TunelabError("adalora.deltaT counts steps between reallocations: give 1 or more")
    if options.orth_reg_weight < 0:
        raise TunelabError("adalora.orth_reg_weight must be 0 or more")


def apply(model: nn.Module, options: AdaLoraOptions, family: str, total_steps: int) -> nn.Module:
    """Wrap `model` in a peft AdaLoRA model for sequence classification.

    As with lora, the classification head (and a BERT-style pooler) trains in full. The
    orthogonality penalty is added by a hook of our own in training mode only (peft would add
    it to every loss computed with labels, evaluation included, and a model loaded in
    inference mode then failed: see peft_common.prepare_loaded), so peft's own weight is 0.
    """
    import peft

    _check(options)
    tinit, tfinal = schedule(options, total_steps)
    targets = module_names(options.target_modules)
    if targets is None:
        # lora's mapping, not peft's AdaLoRA one (all six T5 weights but only two of BERT's):
        # the same weights as lora by default, so the two compare on budget allocation alone
        mapping = peft.utils.constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
        targets = list(mapping.get(model.config.model_type, [])) or "all-linear"

    def config():
        return peft.AdaLoraConfig(
            task_type=task_type(model),
            init_r=options.init_r,
            target_r=options.target_r,
            lora_alpha=options.alpha,
            lora_dropout=options.dropout,
            target_modules=targets,
            tinit=tinit,
            tfinal=tfinal,
            deltaT=options.deltaT,
            total_step=max(1, total_steps),
            orth_reg_weight=0.0,
            modules_to_save=trained_modules(model),
        )

    wrapped = wrap(
        model,
        config,
        "adalora",
        "set --adalora.target_modules to module names it has, e.g. all-linear",
    )
    weight = options.orth_reg_weight

    def add_penalty(module, args, kwargs, output):
        loss = getattr(output, "loss", None)
        if module.training and weight > 0 and isinstance(loss, torch.Tensor):
            output.loss = loss + weight * orthogonal_penalty(module)
        return output

    wrapped.register_forward_hook(add_penalty, with_kwargs=True)
    return prepare_loaded(wrapped)


def _tuner(model: nn.Module):
    """(peft's AdaLoraModel inside the PeftModel, the name of the adapter that trains)."""
    tuner = model.base_model
    return tuner, tuner.trainable_adapter_name


def orthogonal_penalty(model: nn.Module) -> torch.Tensor:
    """Mean over adapted weights of ||A A^T - I|| + ||B^T B - I|| (Frobenius), as peft's."""
    tuner, name = _tuner(model)
    terms = []
    for n, p in tuner.model.named_parameters():
        if f"lora_A.{name}" in n:
            cov = p @ p.T
        elif f"lora_B.{name}" in n:
            cov = p.T @ p
        else:
            continue
        eye = torch.eye(cov.shape[0], device=cov.device, dtype=cov.dtype)
        terms.append(torch.linalg.matrix_norm(cov - eye))
    return torch.stack(terms).mean()


RANK_PATTERN = "_tunelab_rank_pattern"
"""Attribute of the AdaLoraModel holding the rank pattern between steps (see after_step)."""


def _masked_ranks(tuner, name: str) -> dict[str, list[bool]]:
    """The rank pattern as the zeros of the singular values: right after a masking step they
    are exact zeros where a rank was cut (checkpoints are written then)."""
    return {
        n: (p.detach() != 0).view(-1).tolist()
        for n, p in tuner.model.named_parameters()
        if f"lora_E.{name}" in n
    }


def before_step(model: nn.Module, options: AdaLoraOptions, step: int, epoch: int) -> None:
    """A run resumed in the final phase gets its rank pattern back from the checkpoint's
    zeroed singular values (peft kept it only in memory; without it the next step failed)."""
    tuner, name = _tuner(model)
    config = tuner.peft_config[name]
    if step > config.total_step - config.tfinal and getattr(tuner, RANK_PATTERN, None) is None:
        setattr(tuner, RANK_PATTERN, _masked_ranks(tuner, name))


def after_step(model: nn.Module, options: AdaLoraOptions, step: int) -> None:
    """peft's `update_and_allocate(step)`: importance scores from this step's gradients, and
    at every deltaT-th step the budget is cut and the least important ranks are zeroed.

    Between steps the rank pattern lives outside peft's config: saving a model whose config
    holds one drops the cut ranks from the file, which is wrong when the weights come from
    another step than the pattern (keep-best, early stopping). Cut ranks have zero singular
    values, so the full-size file gives exactly the same outputs.
    """
    tuner, name = _tuner(model)
    config = tuner.peft_config[name]
    allocator = tuner.rankallocator
    if step == config.total_step - config.tfinal and not allocator.exp_avg_ipt:
        allocator.update_ipt(tuner.model)  # resumed right at the final cut: scores from now on
    config.rank_pattern = getattr(tuner, RANK_PATTERN, None)
    try:
        tuner.update_and_allocate(step)
    finally:
        setattr(tuner, RANK_PATTERN, config.rank_pattern)
        config.rank_pattern = None


STRATEGY = Strategy(
    "adalora",
    AdaLoraOptions,
    apply,
    first_doc_line(__doc__),
    before_step=before_step,
    after_step=after_step,
)
