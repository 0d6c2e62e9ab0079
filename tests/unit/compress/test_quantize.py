"""Post-training quantization: every scheme on an encoder classifier, a decoder LM and T5.

Tolerances are on the relative L2 error of the logits against fp32 (||q - f|| / ||f||), set
from what each scheme's rounding does to a 2-layer model and with ~2x headroom over what these
tiny random models show:
- bf16: 8 mantissa bits, ~0.2% per rounding -> ~0.5% after a few layers; tolerance 3%.
- int8-weight: per-row symmetric, step = 2*max|w|/255, about 0.8% of a weight's spread per
  Linear -> ~1% measured; tolerance 4%.
- int8-dynamic: the same weights plus per-token int8 activations -> ~3% measured; 8%.
- int4-weight (groups of 32): step = range/15, ~8% of the spread per Linear, compounding over
  the layers -> 4-17% measured on random models; tolerance 30%. A broken kernel or layout gives
  errors of order 100%.
Every check also asserts the error is above zero, so a no-op "quantization" fails.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tests.conftest import toy_examples
from tests.unit.compress.conftest import make_config
from tunelab.compress.quantize import (
    SCHEMES,
    load_quantized,
    quantize,
    quantized_bytes,
    quantized_state,
)
from tunelab.errors import TunelabError

TOLERANCE = {"bf16": 0.03, "int8-weight": 0.04, "int8-dynamic": 0.08, "int4-weight": 0.30}
KINDS = ("classifier", "lm", "seq2seq")


def build(kind: str, folders) -> nn.Module:
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
    )

    torch.manual_seed(0)
    if kind == "classifier":
        model = AutoModelForSequenceClassification.from_pretrained(folders["encoder"], num_labels=3)
    elif kind == "lm":
        model = AutoModelForCausalLM.from_pretrained(folders["decoder"])
    else:
        model = AutoModelForSeq2SeqLM.from_pretrained(folders["encoder-decoder"])
    return model.eval()


def fresh_like(model: nn.Module) -> nn.Module:
    """Same architecture and config, different random weights."""
    torch.manual_seed(123)
    return type(model)(copy.deepcopy(model.config)).eval()


@pytest.fixture(scope="module")
def batch(tiny_models):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models["encoder"])
    texts = [e["text"] for e in toy_examples(4)]
    return dict(tok(texts, padding=True, return_tensors="pt"))


def logits(model: nn.Module, batch: dict) -> torch.Tensor:
    kwargs = dict(batch)
    if model.config.is_encoder_decoder:
        kwargs["decoder_input_ids"] = batch["input_ids"][:, :4]
    with torch.inference_mode():
        return model(**kwargs).logits.float()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("kind", KINDS)
def test_quantized_outputs_close_to_fp32(kind, scheme, tiny_models, batch):
    model = build(kind, tiny_models)
    ref = logits(model, batch)
    err = rel_err(logits(quantize(model, scheme), batch), ref)
    assert 0 < err < TOLERANCE[scheme], f"{kind} {scheme}: relative error {err:.4f}"


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("kind", KINDS)
def test_saved_file_loads_into_fresh_model_with_same_outputs(
    kind, scheme, tiny_models, batch, tmp_path
):
    model = quantize(build(kind, tiny_models), scheme)
    expected = logits(model, batch)
    state, meta = quantized_state(model, scheme)
    save_file(state, tmp_path / "q.safetensors")
    meta = json.loads(json.dumps(meta))  # it travels as JSON

    fresh = fresh_like(model)
    assert not torch.equal(logits(fresh, batch), expected)  # the load has work to do
    loaded = load_quantized(fresh, load_file(tmp_path / "q.safetensors"), meta)
    assert torch.equal(logits(loaded, batch), expected)
    assert meta["scheme"] == scheme
    assert scheme == "bf16" or meta["modules"]


@pytest.mark.parametrize("scheme", ["int8-dynamic", "int8-weight", "int4-weight"])
@pytest.mark.parametrize("kind", ["classifier", "lm"])
def test_saved_file_is_smaller_than_fp32(kind, scheme, tiny_models, tmp_path):
    model = build(kind, tiny_models)
    fp32_state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(fp32_state, tmp_path / "fp32.safetensors")
    state, meta = quantized_state(quantize(model, scheme), scheme)
    save_file(state, tmp_path / "q.safetensors")

    # the quantized Linears' stored bytes against their fp32 weights: int8 is 1 byte per
    # weight + a float32 scale per row; int4 is half a byte + a bf16 scale and zero per group
    for name in meta["modules"]:
        w = fp32_state[f"{name}.weight"]
        stored = quantized_bytes(
            {k: v for k, v in state.items() if k.startswith(f"{name}.weight_")}
        )
        ratio = stored / (w.numel() * 4)
        if scheme == "int4-weight":
            assert ratio <= 1 / 8 + 1 / meta["group_size"] + 1e-9, (name, ratio)
        else:
            assert ratio <= 1 / 4 + 1 / w.shape[1] + 1e-9, (name, ratio)
    fp32_file = (tmp_path / "fp32.safetensors").stat().st_size
    q_file = (tmp_path / "q.safetensors").stat().st_size
    # the tiny models are embedding-heavy (vocab 249 x hidden 32), so the whole-file ratio is
    # milder than the Linears' own 1/4 or 1/8: 0.61 (BERT) and 0.46 (Llama) for int8, 0.35
    # and 0.34 for int4 (bf16 elsewhere); SmolLM2-shaped, 0.46 and 0.26 (its float embedding)
    assert q_file / fp32_file < (0.65 if scheme.startswith("int8") else 0.5), q_file / fp32_file


def test_state_is_plain_tensors_and_meta_is_json(tiny_models):
    model = quantize(build("lm", tiny_models), "int8-dynamic")
    state, meta = quantized_state(model, "int8-dynamic")
    assert all(type(t) is torch.Tensor and not t.is_quantized for t in state.values())
    assert json.loads(json.dumps(meta)) == meta
    q = state["model.layers.0.mlp.up_proj.weight_int8"]
    assert q.dtype == torch.int8 and q.shape == (64, 32)
    assert state["model.layers.0.mlp.up_proj.weight_scale"].dtype == torch.float32
    assert quantized_bytes(state) == sum(t.numel() * t.element_size() for t in state.values())


@pytest.mark.parametrize("scheme", ["int8-weight", "int8-dynamic", "int4-weight"])
def test_weight_format_is_as_documented(scheme, tiny_models, batch):
    """Another reader (an exporter) decoding the file by the module docstring's formula gets
    the weights the quantized model computes with."""
    model = build("lm", tiny_models)
    quantized = quantize(copy.deepcopy(model), scheme)
    state, meta = quantized_state(quantized, scheme)
    with torch.no_grad():
        for name in meta["modules"]:
            lin = model.get_submodule(name)
            if scheme == "int4-weight":
                packed = state[f"{name}.weight_int4"]
                q = torch.stack([packed & 0xF, packed >> 4], -1).reshape(packed.shape[0], -1)
                scale = state[f"{name}.weight_scale"].float()
                zero = state[f"{name}.weight_zero"].float()
                g = meta["group_size"]
                w = (q.float().unflatten(1, (-1, g)) - 8) * scale[..., None] + zero[..., None]
                lin.weight.copy_(w.flatten(1))
            else:
                lin.weight.copy_(
                    state[f"{name}.weight_int8"].float() * state[f"{name}.weight_scale"][:, None]
                )
    # weight-only int8 and int4 compute in bf16 (int8 in fp32 where torchao runs it, 1e-5);
    # int8-dynamic adds its activation rounding
    tol = {"int8-weight": 0.03, "int4-weight": 0.03, "int8-dynamic": 0.08}[scheme]
    assert rel_err(logits(quantized, batch), logits(model, batch)) < tol


def tied_lm() -> nn.Module:
    """A SmolLM2-like decoder (tied embedding / LM head) with sizes every int4 kernel takes."""
    from transformers import AutoModelForCausalLM

    sizes = dict(vocab_size=256, hidden_size=64, intermediate_size=128, max_position_embeddings=64)
    heads = dict(num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)
    config = make_config("LlamaConfig", **sizes, **heads, tie_word_embeddings=True, eos_token_id=1)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_tied_lm_head_is_quantized_and_embeddings_keep_working(scheme, tmp_path):
    model = tied_lm()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    ids = torch.randint(2, 256, (2, 8))
    ref = model(input_ids=ids).logits.detach()
    q = quantize(model, scheme)
    assert 0 < rel_err(q(input_ids=ids).logits.detach().float(), ref) < TOLERANCE[scheme]
    out = q.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape == (2, 12)

    state, meta = quantized_state(q, scheme)
    if scheme == "bf16":
        assert meta["aliases"] == {"lm_head.weight": "model.embed_tokens.weight"}
    else:
        assert "lm_head" in meta["modules"]
        assert state["model.embed_tokens.weight"].is_floating_point()
    save_file(state, tmp_path / "q.safetensors")
    fresh = fresh_like(q)
    assert fresh.lm_head.weight is fresh.model.embed_tokens.weight
    loaded = load_quantized(fresh, load_file(tmp_path / "q.safetensors"), meta)
    assert torch.equal(loaded(input_ids=ids).logits, q(input_ids=ids).logits)


def test_int4_keeps_linears_its_kernel_cannot_take(tiny_models):
    """The tiny LM's head has 249 outputs: not a multiple of 16, so it stays in bf16."""
    model = quantize(build("lm", tiny_models), "int4-weight")
    _, meta = quantized_state(model, "int4-weight")
    assert "lm_head" in meta["kept_float"] and "lm_head" not in meta["modules"]
    assert model.lm_head.weight.dtype == torch.bfloat16


def test_task_head_stays_float(tiny_models):
    model = quantize(build("classifier", tiny_models), "int8-dynamic")
    assert type(model.classifier) is nn.Linear
    assert model.classifier.weight.dtype == torch.float32


def one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_unknown_scheme_is_one_line_error(tiny_models):
    model = build("classifier", tiny_models)
    with pytest.raises(TunelabError) as e:
        quantize(model, "int3-weight")
    msg = one_line_error(e)
    assert "--methods" in msg and "int8-dynamic" in msg
    with pytest.raises(TunelabError) as e:
        quantized_state(model, "fp8")
    one_line_error(e)


def test_bad_group_size_is_one_line_error(tiny_models):
    with pytest.raises(TunelabError) as e:
        quantize(build("lm", tiny_models), "int4-weight", group_size=48)
    assert "int4-weight-g32" in one_line_error(e)


def test_model_without_linear_layers_is_one_line_error():
    model = nn.Sequential(nn.Embedding(10, 4))
    with pytest.raises(TunelabError) as e:
        quantize(model, "int8-dynamic")
    assert "--methods" in one_line_error(e)


def test_weights_of_another_model_are_one_line_error(tiny_models):
    state, meta = quantized_state(
        quantize(build("lm", tiny_models), "int8-dynamic"), "int8-dynamic"
    )
    with pytest.raises(TunelabError) as e:
        load_quantized(build("classifier", tiny_models), state, meta)
    assert "--methods" in one_line_error(e)
    with pytest.raises(TunelabError) as e:
        load_quantized(build("lm", tiny_models), state, {"scheme": "int8-dynamic"})
    one_line_error(e)
    with pytest.raises(TunelabError) as e:  # same names, other sizes
        load_quantized(tied_lm(), state, meta)
    assert "--methods" in one_line_error(e)


def test_int8_dynamic_through_torchao_and_files_interchange(monkeypatch, tiny_models, batch):
    """Where torch.ao's dynamic Linear is gone (or on GPU) int8-dynamic runs on torchao; its
    file then loads on torch.ao's kernels and the reverse: same weights, each backend rounding
    the activations its own way (so within the int8-dynamic tolerance, not bit-identical)."""
    import tunelab.compress.quantize as q

    model = build("lm", tiny_models)
    ref = logits(model, batch)
    monkeypatch.setattr(q, "_ao_dynamic_ok", lambda: False)
    via_torchao = quantize(copy.deepcopy(model), "int8-dynamic")
    state, meta = quantized_state(via_torchao, "int8-dynamic")
    assert meta["backend"] == q.TORCHAO_INT8_DYNAMIC
    expected = logits(via_torchao, batch)
    assert 0 < rel_err(expected, ref) < TOLERANCE["int8-dynamic"]
    assert torch.equal(logits(load_quantized(fresh_like(model), state, meta), batch), expected)

    monkeypatch.undo()
    on_ao = load_quantized(fresh_like(model), state, meta)
    assert type(on_ao.lm_head).__module__.startswith("torch.ao.nn.quantized.dynamic")
    assert 0 < rel_err(logits(on_ao, batch), expected) < TOLERANCE["int8-dynamic"]
