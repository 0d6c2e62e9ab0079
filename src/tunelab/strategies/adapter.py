"""adapter: small bottleneck layers inside every block (Houlsby / Pfeiffer); the base stays frozen.

A bottleneck adapter is `x + up(act(down(x)))` with `down` to hidden // reduction features. It
sits on the output of a sub-layer's output projection, before that sub-layer's residual add and
LayerNorm (Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP"):

    houlsby   after the attention output projection and after the feed-forward output
              projection of every block (and after the cross-attention one in a T5 decoder)
    pfeiffer  after the feed-forward output projection only (Pfeiffer et al. 2020,
              "AdapterFusion"): half the adapters, reported on par with houlsby.
              The adapter reads the feed-forward output as in houlsby; AdapterHub's SeqBn
              variant instead reads LayerNorm(output + residual) and normalises once more.

Defaults: pfeiffer placement, reduction 16, relu and frozen LayerNorms are AdapterHub's SeqBn
defaults (about 1% of MiniLM's or SmolLM2's weights train, pooler and head included). The up
projection starts at zero (as LoRA's B does, AdapterHub's "mam_adapter" init) instead of
Houlsby's 1e-2 noise, so a fresh adapter changes nothing; `init_scale` gives the noise back.

Where, found structurally in each block (an element of the model's ModuleList of layers): the
attention output projection is the last Linear of each outermost `*Attention*` module of the
block, the feed-forward output is the block's last Linear outside them that maps back to the
hidden size. That gives BERT `attention.output.dense` / `output.dense`, Llama
`self_attn.o_proj` / `mlp.down_proj`, T5 `SelfAttention.o` (+ `EncDecAttention.o`) /
`DenseReluDense.wo`, and GPT-2-style `Conv1D` `attn.c_proj` / `mlp.c_proj`.

How: the adapter is registered as a child `adapter` of that projection and added by a forward
hook, so the base weights keep their names, the model keeps its module types, and the adapter
weights are `<projection>.adapter.down.weight` etc.: applying the strategy again with the same
options rebuilds the same names (what loading a `partial` run folder relies on). The up
projection starts at zero, so the adapted model computes exactly what the base did until it
trains. The classification head and a BERT-style pooler train in full, as for `lora` (see
strategies/lora.py: a frozen pooler held the embedded MiniLM far below a trained one).

Why not AdapterHub's `adapters` library: its latest release (1.3.0, checked on PyPI) requires
transformers ~=4.57.6 and patches transformers' model classes, while tunelab runs on
transformers 5; peft 0.21 has no bottleneck adapters. The module is small enough to own.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from tunelab.errors import TunelabError
from tunelab.models.families import head_module_names
from tunelab.strategies.base import Strategy, first_doc_line
from tunelab.strategies.features import head_parameter_names
from tunelab.strategies.options import AdapterOptions

PLACEMENTS = ("houlsby", "pfeiffer")
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}
ADAPTER = "adapter"
"""Attribute (and state-dict name part) of an adapter on its projection."""


class Bottleneck(nn.Module):
    """x + up(act(down(x))), in the adapter's own dtype (fp32) whatever the input's."""

    def __init__(self, dim: int, size: int, activation: str, init_scale: float, device=None):
        super().__init__()
        kw = {"device": device, "dtype": torch.float32}
        self.down = nn.Linear(dim, size, **kw)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(size, dim, **kw)
        with torch.no_grad():
            nn.init.zeros_(self.up.bias)
            if init_scale > 0:
                nn.init.normal_(self.up.weight, std=init_scale)
            else:
                nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(self.act(self.down(x.to(self.down.weight.dtype))))
        return x + h.to(x.dtype)


def _add_adapter(module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
    """Forward hook on an adapted projection. Module-level (no closure), so a deep-copied
    model's hooks use the copy's own adapters."""
    return getattr(module, ADAPTER)(output)


def _out_features(module: nn.Module) -> int | None:
    """Output width of a Linear or a transformers Conv1D (GPT-2), else None."""
    if isinstance(module, nn.Linear):
        return module.out_features
    if type(module).__name__ == "Conv1D" and isinstance(getattr(module, "nf", None), int):
        return module.nf
    return None


def _is_attention(module: nn.Module) -> bool:
    return "Attention" in type(module).__name__


def _attention_modules(block: nn.Module) -> list[nn.Module]:
    """The outermost modules of `block` whose class is an attention (below the block)."""
    found: list[tuple[str, nn.Module]] = []
    for name, module in block.named_modules():
        if name and _is_attention(module) and not any(name.startswith(f + ".") for f, _ in found):
            found.append((name, module))
    return [m for _, m in found]


def _projections(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if _out_features(m) is not None]


def find_blocks(model: nn.Module) -> list[list[nn.Module]]:
    """The model's stacks of transformer blocks: outermost ModuleLists whose every element
    holds an attention module (BERT encoder.layer, Llama layers, T5 encoder/decoder.block)."""
    stacks: list[tuple[str, nn.ModuleList]] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if any(name.startswith(s + ".") for s, _ in stacks):
            continue
        if all(not _is_attention(b) and _attention_modules(b) for b in module):
            stacks.append((name, module))
    return [list(stack) for _, stack in stacks]


def block_targets(block: nn.Module, placement: str) -> list[nn.Module]:
    """The projections of one block to adapt, in forward order: each attention's output
    projection (houlsby only), then the feed-forward output projection."""
    attentions = _attention_modules(block)
    attn_outs = [_projections(a)[-1] for a in attentions if _projections(a)]
    if len(attn_outs) != len(attentions):
        raise TunelabError(
            f"adapter found no output projection in {type(attentions[0]).__name__} of "
            f"{type(block).__name__}: this architecture is not supported, pick another strategy"
        )
    hidden = _out_features(attn_outs[0])
    inside = {id(m) for a in attentions for m in a.modules()}
    ffn = [m for m in _projections(block) if id(m) not in inside and _out_features(m) == hidden]
    if not ffn:
        raise TunelabError(
            f"adapter found no feed-forward output projection in {type(block).__name__}: this "
            "architecture is not supported, pick another strategy"
        )
    return (attn_outs if placement == "houlsby" else []) + [ffn[-1]]


def _layer_indices(spec: str | None, n: int) -> list[int]:
    """Block indices (0..n-1) selected by a `layers` option for a stack of n blocks."""
    if spec is None or not str(spec).strip():
        return list(range(n))
    picked = []
    for token in re.split(r"[\s,\[\]]+", str(spec)):
        if not token:
            continue
        try:
            i = int(token)
        except ValueError:
            raise TunelabError(
                f"adapter.layers expects comma-separated block indices, got {spec!r}"
            ) from None
        if not -n <= i < n:
            raise TunelabError(f"adapter.layers: block {i} does not exist (this stack has {n})")
        picked.append(i % n)
    return sorted(set(picked))


def check_options(options: AdapterOptions) -> None:
    """One-line errors for option values that cannot work."""
    if options.placement not in PLACEMENTS:
        raise TunelabError(
            f"adapter.placement must be one of {', '.join(PLACEMENTS)}, got {options.placement!r}"
        )
    if options.activation not in ACTIVATIONS:
        raise TunelabError(
            f"adapter.activation must be one of {', '.join(ACTIVATIONS)}, "
            f"got {options.activation!r}"
        )
    if options.reduction < 1:
        raise TunelabError(f"adapter.reduction must be at least 1, got {options.reduction}")
    if options.init_scale < 0:
        raise TunelabError(f"adapter.init_scale must be >= 0, got {options.init_scale}")


def bottleneck_size(dim: int, reduction: int) -> int:
    return max(1, dim // reduction)


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm | nn.RMSNorm) or type(module).__name__.endswith(
        ("LayerNorm", "RMSNorm")
    )


def apply(model: nn.Module, options: AdapterOptions, family: str, total_steps: int) -> nn.Module:
    """Freeze the model, add adapters to every selected block, train them and the head."""
    check_options(options)
    stacks = find_blocks(model)
    if not stacks:
        raise TunelabError(
            f"adapter found no transformer blocks in {type(model).__name__}: this architecture "
            "is not supported, pick another strategy"
        )
    # a language model (generative tasks) has no new head: only the adapters train
    train = head_parameter_names(model) if head_module_names(model) else set()
    for p in model.parameters():
        p.requires_grad_(False)
    for stack in stacks:
        for i in _layer_indices(options.layers, len(stack)):
            for proj in block_targets(stack[i], options.placement):
                if hasattr(proj, ADAPTER):
                    raise TunelabError("this model already has adapters: load the base again")
                dim = _out_features(proj)
                weight = next(proj.parameters())
                adapter = Bottleneck(
                    dim,
                    bottleneck_size(dim, options.reduction),
                    options.activation,
                    options.init_scale,
                    device=weight.device,
                )
                proj.add_module(ADAPTER, adapter)
                proj.register_forward_hook(_add_adapter)
                adapter.requires_grad_(True)
    if options.train_norms:
        for module in model.modules():
            if _is_norm(module):
                module.requires_grad_(True)
    for n, p in model.named_parameters():
        if n in train:
            p.requires_grad_(True)
    return model


def adapters(model: nn.Module) -> dict[str, Bottleneck]:
    """Name of each adapted projection -> its adapter."""
    return {
        name.removesuffix(f".{ADAPTER}"): m
        for name, m in model.named_modules()
        if isinstance(m, Bottleneck)
    }


STRATEGY = Strategy("adapter", AdapterOptions, apply, first_doc_line(__doc__), can_merge=False)
