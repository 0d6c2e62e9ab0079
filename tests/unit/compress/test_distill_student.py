"""Knowledge distillation's student: make_student keeps a spread of the teacher's blocks (and
everything around them) in a smaller model of the same class.

Teachers are tiny 4-layer models built from conftest's configs (so `half` keeps 2 blocks).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.unit.compress.conftest import (
    assert_one_line,
    batch_for,
    distill_model,
    make_config,
)
from tunelab.compress.distill import Distiller, make_student, student_layers
from tunelab.compress.options import DistillOptions
from tunelab.errors import TunelabError

STACKS = {
    "bert-cls": ["bert.encoder.layer"],
    "llama-lm": ["model.layers"],
    "llama-cls": ["model.layers"],
    "t5": ["encoder.block", "decoder.block"],
}


# --- make_student --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "depth,layers,kept",
    [
        (4, "half", [0, 2]),
        (5, "half", [0, 2, 4]),
        (6, 3, [0, 3, 5]),
        (4, "3", [0, 2, 3]),
        (12, 6, [0, 2, 4, 7, 9, 11]),
        (4, 1, [3]),
    ],
)
def test_student_layers(depth, layers, kept):
    assert student_layers(depth, layers) == kept


@pytest.mark.parametrize("depth,layers", [(1, "half"), (4, 4), (4, 9), (4, 0), (4, "two")])
def test_student_layers_refuses_what_is_not_smaller(depth, layers):
    with pytest.raises(TunelabError) as exc:
        student_layers(depth, layers)
    assert_one_line(exc)


@pytest.mark.parametrize("kind", list(STACKS))
def test_make_student_keeps_every_second_block_and_the_rest(kind):
    teacher = distill_model(kind)
    student = make_student(teacher)
    assert type(student) is type(teacher)
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for path in STACKS[kind]:
        assert len(student.get_submodule(path)) == 2
        for i, j in enumerate([0, 2]):
            names = [n for n in s_state if n.startswith(f"{path}.{i}.")]
            assert names
            for name in names:
                source = name.replace(f"{path}.{i}.", f"{path}.{j}.", 1)
                assert torch.equal(s_state[name], t_state[source]), name
    in_blocks = tuple(f"{p}." for p in STACKS[kind])
    rest = [n for n in s_state if not n.startswith(in_blocks)]
    assert rest  # embeddings, final norms, the head
    for name in rest:
        assert torch.equal(s_state[name], t_state[name]), name
    assert sum(p.numel() for p in student.parameters()) < sum(
        p.numel() for p in teacher.parameters()
    )
    out = student(**batch_for(kind))
    assert torch.isfinite(out.loss)


def test_make_student_spreads_n_blocks_and_counts_them_in_the_config():
    teacher = distill_model("llama-lm")
    student = make_student(teacher, "3")
    assert student.config.num_hidden_layers == 3 == len(student.model.layers)
    assert teacher.config.num_hidden_layers == 4  # the teacher's config is not touched
    for i, j in enumerate([0, 2, 3]):
        assert torch.equal(
            student.model.layers[i].mlp.up_proj.weight, teacher.model.layers[j].mlp.up_proj.weight
        )


def test_t5_student_of_one_block_takes_the_position_bias_of_block_0():
    teacher = distill_model("t5")
    student = make_student(teacher, 1)
    assert student.config.num_layers == student.config.num_decoder_layers == 1
    for stack in ("encoder", "decoder"):
        s, t = student.get_submodule(f"{stack}.block"), teacher.get_submodule(f"{stack}.block")
        attn, t0, t3 = s[0].layer[0].SelfAttention, t[0].layer[0].SelfAttention, t[3].layer[0]
        assert torch.equal(attn.relative_attention_bias.weight, t0.relative_attention_bias.weight)
        assert torch.equal(attn.q.weight, t3.SelfAttention.q.weight)
    assert torch.isfinite(student(**batch_for("t5")).loss)


def test_llama_student_renumbers_its_blocks_and_generates_with_a_cache():
    teacher = distill_model("llama-lm")
    student = make_student(teacher).eval()
    assert [layer.self_attn.layer_idx for layer in student.model.layers] == [0, 1]
    prompt = batch_for("llama-lm")["input_ids"][:1, :4]
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    cached = student.generate(prompt, use_cache=True, **kw)
    uncached = student.generate(prompt, use_cache=False, **kw)
    assert torch.equal(cached, uncached)


def test_per_layer_types_are_sliced_with_the_blocks():
    from transformers import Qwen2ForCausalLM

    window = dict(use_sliding_window=True, sliding_window=4, max_window_layers=2)
    config = make_config("Qwen2Config", num_attention_heads=2, num_key_value_heads=2, **window)
    torch.manual_seed(0)
    teacher = Qwen2ForCausalLM(config).eval()
    types = teacher.config.layer_types
    student = make_student(teacher).eval()
    assert student.config.layer_types == [types[0], types[2]]
    prompt = batch_for("llama-lm")["input_ids"][:1, :4]
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(
        student.generate(prompt, use_cache=True, **kw),
        student.generate(prompt, use_cache=False, **kw),
    )


def test_make_student_refuses_in_one_line():
    for bad, layers in [
        (nn.Linear(4, 4), "half"),
        (distill_model("llama-lm", depth=1), "half"),
        (distill_model("bert-cls"), 4),
    ]:
        with pytest.raises(TunelabError) as exc:
            make_student(bad, layers)
        assert_one_line(exc)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # transformers' own, on bert2bert labels
def test_bert2bert_student_halves_its_encoder_and_its_decoder():
    from transformers import EncoderDecoderConfig, EncoderDecoderModel

    def bert(**kw):
        return make_config("BertConfig", num_attention_heads=2, **kw)

    config = EncoderDecoderConfig.from_encoder_decoder_configs(
        bert(), bert(is_decoder=True, add_cross_attention=True)
    )
    config.decoder_start_token_id, config.pad_token_id = 2, 0
    torch.manual_seed(0)
    teacher = EncoderDecoderModel(config).eval()
    student = make_student(teacher)
    assert len(student.encoder.encoder.layer) == len(student.decoder.bert.encoder.layer) == 2
    assert student.config.encoder.num_hidden_layers == student.config.decoder.num_hidden_layers
    assert teacher.config.decoder.num_hidden_layers == 4
    for side, path in (
        ("encoder", "encoder.encoder.layer"),
        ("decoder", "decoder.bert.encoder.layer"),
    ):
        s, t = student.get_submodule(path), teacher.get_submodule(path)
        assert torch.equal(s[1].output.dense.weight, t[2].output.dense.weight), side
    batch = batch_for("t5")
    d = Distiller(student, teacher, DistillOptions(alpha=1.0)).eval()
    assert torch.isfinite(d.objective(**batch).loss)
