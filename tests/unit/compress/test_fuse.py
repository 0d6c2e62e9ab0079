"""Fused q/k/v and gate/up products: the same numbers as the separate projections."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.conftest import tiny_config
from tunelab.compress.fuse import FusedSlice, fuse_projections
from tunelab.compress.int8_linear import Int8PackLinear, has_kernel
from tunelab.models.packed import PackedLinear, can_pack, pack_linears


def tiny_llama():
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_config("decoder", 96)).eval()


def as_int8(model):
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, Int8PackLinear.from_linear(child))
    return model.to(torch.bfloat16)


def as_packed(model):
    model.to(torch.bfloat16)
    pack_linears(model)
    return model


KINDS = {
    "int8": pytest.param(as_int8, marks=pytest.mark.skipif(not has_kernel(), reason="no kernel")),
    "packed": pytest.param(
        as_packed, marks=pytest.mark.skipif(not can_pack(), reason="no native bf16 oneDNN")
    ),
}


@pytest.mark.parametrize("convert", list(KINDS.values()), ids=list(KINDS))
def test_fused_model_gives_the_same_logits_and_text(convert):
    model = convert(tiny_llama())
    ids = torch.randint(0, 96, (2, 9))
    with torch.inference_mode():
        want = model(ids).logits
        want_gen = model.generate(ids, max_new_tokens=6, do_sample=False)
    assert fuse_projections(model) == 2 * 2  # q/k/v and gate/up in each of 2 blocks
    attn = model.model.layers[0].self_attn
    assert isinstance(attn.q_proj, FusedSlice) and attn.k_proj.out_features == 32
    with torch.inference_mode():
        assert torch.equal(model(ids).logits, want)
        assert torch.equal(model.generate(ids, max_new_tokens=6, do_sample=False), want_gen)


@pytest.mark.skipif(not can_pack(), reason="no native bf16 oneDNN")
def test_a_member_called_on_another_input_recomputes():
    block = nn.Module()
    block.gate_proj, block.up_proj = nn.Linear(16, 24), nn.Linear(16, 8)
    block.to(torch.bfloat16)
    gate, up = block.gate_proj, block.up_proj
    pack_linears(block)
    assert fuse_projections(block) == 1
    assert isinstance(block.fused_gate_up, PackedLinear)
    a, b = torch.randn(3, 16).bfloat16(), torch.randn(3, 16).bfloat16()
    with torch.no_grad():
        assert torch.equal(block.gate_proj(a), gate(a))
        assert torch.equal(block.up_proj(b), up(b))  # not a's cached slice
        assert torch.equal(block.up_proj(a), up(a))


def test_mixed_or_plain_groups_are_left_alone():
    block = nn.Module()
    block.gate_proj, block.up_proj = nn.Linear(16, 24), nn.Linear(16, 8, bias=False)
    assert fuse_projections(block) == 0  # plain Linears: nothing to fuse
    assert type(block.gate_proj) is nn.Linear
