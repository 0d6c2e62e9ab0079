"""The options of every fine-tuning strategy, one dataclass each (`XxxOptions`).

Kept apart from the strategy modules, which import torch and peft, so that the registry,
`tunelab finetune --help` and config parsing read them without importing anything heavy.
Attribute docstrings are the --help text of `--STRATEGY.key` flags.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunelab.errors import TunelabError


@dataclass
class FullOptions:
    """`full` has no options of its own."""


@dataclass
class FreezeOptions:
    embeddings: bool = True
    """Freeze the embeddings (token, position and token-type embeddings and their norm)."""
    layers: int | None = None
    """Freeze the lowest N transformer blocks, counted bottom to top (in an encoder-decoder:
    every encoder block, then the decoder's). Default: half of them, rounded down (3 of
    MiniLM's 6), or 0 when `part` is set."""
    patterns: str | None = None
    """Comma-separated parameter names to freeze as well: shell globs matched against the whole
    name (`*.bias`, `*attention*`), or regular expressions searched in it after `re:`
    (`re:layer\\.[0-3]\\.`). Each must match some parameter; the head always trains."""
    part: str | None = None
    """`encoder` or `decoder`: freeze every block of that stack of an encoder-decoder model
    (T5, BART), the encoder's final norm included; the decoder's final norm is part of the
    head, which always trains."""


@dataclass
class GradualOptions:
    start_groups: int = 1
    """Blocks that train from step 0 beside the head, from the top (0: the head alone)."""
    every: str = "epoch"
    """When the next lower group is unfrozen: `epoch` (at the start of each epoch) or a number
    of optimizer steps, e.g. 50."""
    embeddings: bool = True
    """Unfreeze the embeddings last, after the lowest block (false: frozen the whole run)."""
    decay: float = 1.0
    """Discriminative learning rates, as a divisor per group from the top: the head trains at
    lr, the top block at lr / decay, the next at lr / decay**2 ... the embeddings at
    lr / decay**(blocks + 1). 1: one learning rate for all; ULMFiT used 2.6."""


@dataclass
class FeaturesOptions:
    cache: bool = True
    """Run the frozen backbone once and train the head on the kept features (false: run the
    backbone every step, e.g. to compare the two)."""


@dataclass
class LoraOptions:
    r: int = 8
    """Rank of the update matrices."""
    alpha: int = 16
    """Scaling numerator: updates are scaled by alpha / r."""
    dropout: float = 0.1
    """Dropout on the LoRA input."""
    target_modules: str | None = None
    """Comma-separated module names to adapt, or `all-linear` (default: peft's choice for the
    architecture, e.g. query,value for BERT, q_proj,v_proj for Llama, q,v for T5)."""


@dataclass
class AdaLoraOptions:
    init_r: int = 12
    """Rank every adapted weight starts with."""
    target_r: int = 8
    """Average rank per adapted weight once the budget has been cut (below init_r): the ranks
    that remain go to the weights whose updates matter most."""
    alpha: int = 24
    """Scaling numerator: updates are scaled by alpha / init_r (24 / 12 = 2, as lora's 16 / 8)."""
    dropout: float = 0.1
    """Dropout on the adapter input."""
    target_modules: str | None = None
    """Comma-separated module names to adapt, or `all-linear` (default: lora's, i.e. peft's
    LoRA choice for the architecture, e.g. query,value for BERT, q_proj,v_proj for Llama, q,v
    for T5; all-linear spreads the budget over every weight, as the AdaLoRA paper does)."""
    tinit: float = 0.1
    """Fraction of the run's steps trained at init_r before the budget starts to shrink."""
    tfinal: float = 0.5
    """Fraction of the run's steps, at the end, trained with the final ranks fixed (the
    AdaLoRA paper's GLUE runs spend about 10% warming up and half the run in this phase)."""
    deltaT: int = 10
    """Steps between two reallocations of the budget while it shrinks."""
    orth_reg_weight: float = 0.1
    """Weight of the penalty keeping the singular vectors orthogonal (the paper's 0.1), added
    to the training loss only: evaluation losses stay the plain task loss."""


@dataclass
class Ia3Options:
    target_modules: str | None = None
    """Comma-separated module names to rescale, or `all-linear` (default: peft's choice for the
    architecture, e.g. key,value,output.dense for BERT, k_proj,v_proj,down_proj for Llama,
    k,v,wo for T5; all linear layers where peft has none)."""
    feedforward_modules: str | None = None
    """Comma-separated target modules whose input is rescaled instead of their output, i.e.
    second feed-forward layers (default: peft's choice, e.g. down_proj for Llama, wo for T5;
    where peft has none, the layers named like one of down_proj, fc2, wo, w2, dense_4h_to_h)."""


@dataclass
class AdapterOptions:
    placement: str = "pfeiffer"
    """Where adapters go in every block: `pfeiffer` (after the feed-forward output only) or
    `houlsby` (after the attention output and the feed-forward output)."""
    reduction: int = 16
    """Bottleneck size = hidden size // reduction (at least 1), e.g. 24 for a 384-wide MiniLM."""
    activation: str = "relu"
    """Non-linearity inside the bottleneck: relu, gelu, silu or tanh."""
    init_scale: float = 0.0
    """Standard deviation of the up projection's initial weights; 0 starts every adapter as an
    exact identity (the adapted model computes what the base did until it trains)."""
    train_norms: bool = False
    """Also train the model's LayerNorm / RMSNorm weights (Houlsby et al. did); by default the
    base model stays frozen as it is (AdapterHub's default)."""
    layers: str | None = None
    """Comma-separated block indices to adapt, counted in each stack of blocks (T5's encoder
    and decoder separately); negative ones count from the end, e.g. -2,-1; none adapts every
    block."""


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


@dataclass
class PromptOptions:
    num_virtual_tokens: int = 20
    """Virtual tokens put before every text (Lester et al. found 20 close to longer prompts;
    each one lengthens every sequence the model reads)."""
    init: str = "vocab"
    """Starting embeddings when no init_text is given: vocab (those of randomly drawn
    vocabulary tokens, on the scale the model knows) or random (peft's N(0, 1), far larger
    than real token embeddings)."""
    init_text: str | None = None
    """A text whose token embeddings start the prompt (repeated or cut to num_virtual_tokens),
    e.g. a description of the task; read with the model's own tokenizer."""


@dataclass
class PtuningOptions:
    num_virtual_tokens: int = 20
    """Virtual tokens put before every text (as prompt's; each one lengthens every sequence)."""
    encoder_hidden_size: int | None = None
    """Width of the prompt encoder; none: the model's hidden size."""
    encoder: str = "mlp"
    """Prompt encoder: mlp (peft's default, three linear layers) or lstm (a bidirectional LSTM
    before the MLP, as in the P-tuning paper; slower)."""


AT_LEAST_ONE = {
    "lora": ("r", "alpha"),
    "adalora": ("init_r", "target_r", "alpha"),
    "prefix": ("num_virtual_tokens",),
    "prompt": ("num_virtual_tokens",),
    "ptuning": ("num_virtual_tokens",),
}
"""Options that are counts (ranks, scales, virtual tokens): 0 or less trains nothing."""
DROPOUTS = {"lora": ("dropout",), "adalora": ("dropout",)}


def check_ranges(strategy: str, options: dict) -> None:
    """Counts and dropouts of a strategy's options, checked before anything is loaded.

    Raises:
        TunelabError: a count below 1 or a dropout outside [0, 1), naming its flag.
    """
    for key in AT_LEAST_ONE.get(strategy, ()):
        if options[key] < 1:
            raise TunelabError(f"--{strategy}.{key} must be at least 1, got {options[key]}")
    for key in DROPOUTS.get(strategy, ()):
        if not 0 <= options[key] < 1:
            raise TunelabError(f"--{strategy}.{key} must be in [0, 1), got {options[key]}")
