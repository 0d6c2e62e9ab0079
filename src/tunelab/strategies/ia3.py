"""ia3: learned vectors rescale attention keys, values and feed-forward activations (peft)."""

from __future__ import annotations

from torch import nn

from tunelab.strategies.base import Strategy, first_doc_line
from tunelab.strategies.options import Ia3Options
from tunelab.strategies.peft_common import (
    module_names,
    prepare_loaded,
    task_type,
    trained_modules,
    wrap,
)

FFN_OUTPUT_NAMES = ("down_proj", "fc2", "wo", "w2", "dense_4h_to_h", "fc_out")
"""Names that second feed-forward layers go by (Llama, OPT, T5, Mixtral, GPT-NeoX, GPT-J):
(IA)^3 rescales their input, the feed-forward activations, when peft has no mapping."""


def _linear_names(model: nn.Module) -> set[str]:
    return {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def default_modules(model: nn.Module) -> tuple[list[str] | str, list[str]]:
    """(target, feedforward) modules: peft's mapping for the architecture, else every linear
    layer (its output rescaled) with second feed-forward layers found by name (input rescaled):
    without a mapping that still scales keys and values as (IA)^3 does, and more."""
    from peft.utils import constants

    kind = model.config.model_type
    targets = constants.TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING.get(kind)
    feedforward = constants.TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING.get(kind)
    if targets is not None and feedforward is not None:
        return list(targets), list(feedforward)
    present = _linear_names(model)
    return "all-linear", [n for n in FFN_OUTPUT_NAMES if n in present]


def apply(model: nn.Module, options: Ia3Options, family: str, total_steps: int) -> nn.Module:
    """Wrap `model` in a peft (IA)^3 model for sequence classification.

    The classification head (and a BERT-style pooler) trains in full, as with lora; the
    vectors start at 1 (the model unchanged) and fold into the weights on merge.
    """
    import peft

    default_targets, default_ff = default_modules(model)
    targets = module_names(options.target_modules) or default_targets
    feedforward = module_names(options.feedforward_modules)
    if feedforward is None:
        feedforward = default_ff
        if isinstance(targets, list):  # peft wants feedforward_modules within target_modules
            feedforward = [f for f in feedforward if f in targets]

    def config():
        return peft.IA3Config(
            task_type=task_type(model),
            target_modules=targets,
            feedforward_modules=feedforward,
            modules_to_save=trained_modules(model),
        )

    wrapped = wrap(
        model,
        config,
        "ia3",
        "set --ia3.target_modules to module names it has (e.g. all-linear) and "
        "--ia3.feedforward_modules to some of them",
    )
    _unload_heads_whole(wrapped.base_model)
    return prepare_loaded(wrapped)


def _unload_heads_whole(tuner: nn.Module) -> None:
    """Let `merge_and_unload` put the trained head copies back whatever their structure.

    peft 0.21's IA3Model unloads a `modules_to_save` wrapper with the generic
    `_replace_module`, which copies `child.weight` onto the unloaded module: fine for a
    Linear head (Llama's score), an AttributeError for a BERT pooler or T5's two-layer head.
    For those wrappers the trained copy is put in place as it is (what LoraModel does).
    """
    from peft.utils.other import ModulesToSaveWrapper

    generic = tuner._replace_module

    def replace_module(parent, child_name, new_module, child):
        if isinstance(child, ModulesToSaveWrapper):
            setattr(parent, child_name, new_module)
            return
        generic(parent, child_name, new_module, child)

    tuner._replace_module = replace_module


STRATEGY = Strategy("ia3", Ia3Options, apply, first_doc_line(__doc__))
