"""Opening models in a chosen precision: each dtype runs, records itself, and fp32 stays the
exact mode (the same greedy tokens as transformers' generate())."""

from __future__ import annotations

import pytest
import torch

from tunelab.compress.int8_linear import Int8PackLinear, has_kernel
from tunelab.decoding import DecodingOptions, generate
from tunelab.errors import TunelabError
from tunelab.runs.open import open_lm

PROMPTS = ["the cat sat", "a dog ran to"]


def test_fp32_is_token_identical_to_transformers(tiny_models):
    torch.manual_seed(0)  # the tiny folder holds a base model: the LM head is drawn on load
    loaded, _ = open_lm(str(tiny_models["decoder"]), "fp32", "cpu")
    assert loaded.model.tunelab_precision == {"dtype": "fp32", "device": "cpu"}
    tok = loaded.tokenizer
    outs = generate(loaded.model, tok, PROMPTS, DecodingOptions(max_new_tokens=6), batch_size=2)
    for p, o in zip(PROMPTS, outs, strict=True):
        enc = tok(p, return_tensors="pt")
        ref = loaded.model.generate(**enc, do_sample=False, max_new_tokens=6, min_new_tokens=6)
        assert o.token_ids == ref[0, enc["input_ids"].shape[1] :].tolist()[: len(o.token_ids)]


@pytest.mark.parametrize("dtype", ["bf16", "fp16", "int8", "int4"])
def test_every_dtype_opens_records_itself_and_generates(tiny_models, dtype):
    if dtype == "int8" and not has_kernel():
        pytest.skip("no int8pack kernel in this torch")
    loaded, _ = open_lm(str(tiny_models["decoder"]), dtype, "cpu")
    model = loaded.model
    assert model.tunelab_precision["dtype"] == dtype
    floats = {p.dtype for p in model.parameters() if p.is_floating_point()}
    assert floats == {torch.float16 if dtype == "fp16" else torch.bfloat16}
    if dtype == "int8":
        assert any(isinstance(m, Int8PackLinear) for m in model.modules())
    outs = generate(model, loaded.tokenizer, PROMPTS, DecodingOptions(max_new_tokens=4))
    assert all(len(o.token_ids) == 4 or o.finish_reason == "eos" for o in outs)


def test_a_seq2seq_model_opens_in_int8(tiny_models):
    loaded, _ = open_lm(str(tiny_models["encoder-decoder"]), "int8", "cpu")
    outs = generate(loaded.model, loaded.tokenizer, PROMPTS, DecodingOptions(max_new_tokens=3))
    assert len(outs) == 2


def test_a_bad_dtype_is_refused_before_loading(tmp_path):
    with pytest.raises(TunelabError, match="--dtype 'int2'"):
        open_lm(str(tmp_path / "nowhere"), "int2", "cpu")
