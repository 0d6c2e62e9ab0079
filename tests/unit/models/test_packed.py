"""Packed bf16 Linears: the same outputs as plain bf16 F.linear, in modules and whole models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import tiny_config
from tunelab.models.packed import PackedLinear, can_pack, pack_linears

pytestmark = pytest.mark.skipif(not can_pack(), reason="this CPU/torch has no native bf16 oneDNN")


@pytest.mark.parametrize("shape", [(1, 48), (5, 48), (3, 7, 48), (1, 1, 48)])
@pytest.mark.parametrize("bias", [True, False])
def test_same_outputs_as_plain_bf16(shape, bias):
    torch.manual_seed(0)
    lin = nn.Linear(48, 40, bias=bias).to(torch.bfloat16)
    packed = PackedLinear.from_linear(lin)
    x = torch.randn(*shape).to(torch.bfloat16)
    with torch.inference_mode():
        want = lin(x)
        got = packed(x)
    assert got.shape == want.shape and got.dtype == torch.bfloat16
    assert torch.equal(got, want)
    assert torch.equal(packed.weight, lin.weight.detach())


def test_other_input_dtypes_and_layouts():
    torch.manual_seed(0)
    lin = nn.Linear(32, 24).to(torch.bfloat16)
    packed = PackedLinear.from_linear(lin)
    x = torch.randn(4, 32)
    with torch.no_grad():
        got = packed(x)  # fp32 in: computed in bf16, returned as fp32
        assert got.dtype == torch.float32
        assert torch.equal(got, lin(x.to(torch.bfloat16)).float())
        xt = torch.randn(32, 4).to(torch.bfloat16).t()  # not contiguous
        assert torch.equal(packed(xt), F.linear(xt, lin.weight, lin.bias))


def test_pack_linears_keeps_a_tiny_llama_token_for_token():
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    cfg = tiny_config("decoder", 96)
    cfg.tie_word_embeddings = True
    model = LlamaForCausalLM(cfg).eval().to(torch.bfloat16)
    ids = torch.randint(0, 96, (2, 9))
    with torch.inference_mode():
        want = model(ids).logits
        want_gen = model.generate(ids, max_new_tokens=6, do_sample=False)
    assert pack_linears(model) == 2 * 7 + 1  # 7 per block and the (tied) head
    assert isinstance(model.lm_head, PackedLinear)
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16  # the embedding stays
    with torch.inference_mode():
        assert torch.equal(model(ids).logits, want)
        assert torch.equal(model.generate(ids, max_new_tokens=6, do_sample=False), want_gen)


def test_fp32_linears_are_left_alone():
    model = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16).to(torch.bfloat16))
    assert pack_linears(model) == 1
    assert type(model[0]) is nn.Linear and isinstance(model[1], PackedLinear)
