"""Pruning on tiny models of the three families (4 heads, 3-4 blocks, hidden 32)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from tests.unit.compress.conftest import (
    VOCAB,
    calibration,
    generates,
    prune_model,
    reload,
    run,
    weights,
)
from tunelab.compress import blocks, prune, structured
from tunelab.errors import TunelabError


def pruned(kind: str, method, amount) -> tuple[nn.Module, nn.Module, list[dict], int, dict]:
    """A model of `kind` pruned by `method` (structured.heads, ffn or layers) on its
    calibration batches: the model, a copy from before, the batches, the parameter count
    before, and the plan (JSON-able)."""
    model = prune_model(kind)
    original = copy.deepcopy(model)
    batches = calibration(kind)
    before = prune.count_params(model)
    plan = method(model, amount, batches)
    json.dumps(plan)
    return model, original, batches, before, plan


def same_function(model: nn.Module, reference: nn.Module, batches: list[dict], kind: str) -> None:
    """`model` computes what `reference` does on `batches`, and (but BERT) generates."""
    for batch in batches:
        torch.testing.assert_close(run(model, batch), run(reference, batch), atol=1e-5, rtol=1e-4)
    if kind != "bert":
        generates(model)


def reloads(model: nn.Module, config, apply, plan: dict, batches: list[dict], tmp) -> nn.Module:
    """The model rebuilt from `config` with `plan` re-applied and `model`'s saved weights
    loaded: it gives exactly `model`'s outputs on `batches`."""
    other = reload(model, config, apply, plan, tmp)
    for batch in batches:
        assert torch.equal(run(other, batch), run(model, batch))
    return other


# ------------------------------------------------------------------------------- unstructured


@pytest.mark.parametrize("kind", ["bert", "llama", "t5"])
@pytest.mark.parametrize("per_layer", [False, True])
def test_magnitude_hits_target_and_zeros_survive_save_load(kind, per_layer, tmp_path):
    model = prune_model(kind)
    untouched = dict(copy.deepcopy(model).named_parameters())
    linears = blocks._prunable(model)
    report = prune.magnitude(model, 0.4, per_layer=per_layer)

    total = sum(m.weight.numel() for _, m in linears)
    zeros = sum(int((m.weight == 0).sum()) for _, m in linears)
    assert abs(zeros - 0.4 * total) <= len(linears)
    if per_layer:
        for _, m in linears:
            assert abs(int((m.weight == 0).sum()) - 0.4 * m.weight.numel()) <= 1
    assert report["achieved"] == pytest.approx(prune.sparsity(model), abs=1e-6)
    assert set(report["layers"]) == {n for n, _ in linears}
    json.dumps(report)
    # permanent: plain parameters, no masks or hooks left
    assert not any(n.endswith(("_orig", "_mask")) for n, _ in model.named_parameters())
    # embeddings, norms and the task head are not touched
    for name, p in model.named_parameters():
        if not any(name.startswith(f"{n}.") for n, _ in linears):
            assert torch.equal(p, untouched[name]), name

    other = reload(model, model.config, tmp=tmp_path)
    for (_, a), (_, b) in zip(linears, blocks._prunable(other), strict=True):
        assert torch.equal(a.weight == 0, b.weight == 0)
    assert prune.sparsity(other) == pytest.approx(prune.sparsity(model))


def test_global_and_per_layer_magnitude_differ():
    a, b = prune_model("bert"), prune_model("bert")
    with torch.no_grad():  # one Linear with tiny weights: a global ranking empties it first
        a.bert.encoder.layer[0].intermediate.dense.weight.mul_(0.01)
        b.bert.encoder.layer[0].intermediate.dense.weight.mul_(0.01)
    ra, rb = prune.magnitude(a, 0.3), prune.magnitude(b, 0.3, per_layer=True)
    name = "bert.encoder.layer.0.intermediate.dense"
    assert ra["layers"][name] > 0.9
    assert rb["layers"][name] == pytest.approx(0.3, abs=0.01)


@pytest.mark.parametrize("kind", ["bert", "llama-gqa", "t5"])
def test_wanda_prunes_per_row_by_weight_times_input_norm(kind):
    model = prune_model(kind)
    original = copy.deepcopy(model)
    batches = calibration(kind)
    report = prune.wanda(model, batches, 0.5)

    for name, m in blocks._prunable(model):
        per_row = (m.weight == 0).sum(dim=1)
        assert torch.all(per_row == int(m.in_features * 0.5)), name
        assert report["per_row"][name] == int(m.in_features * 0.5)
    assert report["achieved"] == pytest.approx(0.5, abs=1e-6)

    # the first block's first Linear sees unpruned inputs: its mask must be Wanda's per row
    name, first = blocks._prunable(original)[0]
    sq = torch.zeros(first.in_features)

    def observe(_, args):
        nonlocal sq
        x = args[0]
        if x.shape[:-1] == mask.shape:
            x = x[mask.bool()]
        sq += x.reshape(-1, x.shape[-1]).pow(2).sum(0)

    handle = first.register_forward_pre_hook(observe)
    for batch in batches:
        mask = batch["attention_mask"]
        run(original, batch)
    handle.remove()
    score = first.weight.abs() * sq.sqrt()
    expected = torch.zeros_like(score, dtype=torch.bool)
    expected.scatter_(1, score.topk(first.in_features // 2, dim=1, largest=False).indices, True)
    assert torch.equal(model.get_submodule(name).weight == 0, expected)
    # and it is not plain magnitude: the input norms changed the choice somewhere
    magnitude = torch.zeros_like(expected)
    magnitude.scatter_(1, first.weight.abs().topk(16, dim=1, largest=False).indices, True)
    assert not torch.equal(expected, magnitude)


# ------------------------------------------------------------------------------- heads


def head_params(kind: str, model: nn.Module, plan: dict) -> int:
    """Parameters the plan's removed heads held: q,k,v rows (+bias) and o columns."""
    hidden, d = 32, 8
    removed = sum(len(v) for v in plan["heads"].values())
    if kind == "bert":
        return removed * (4 * d * hidden + 3 * d)
    if kind == "llama-gqa":  # a KV group = 2 query heads + 1 k head + 1 v head
        return removed * 2 * d * hidden + removed // 2 * 2 * d * hidden
    return removed * 4 * d * hidden


def zero_removed_heads(model: nn.Module, plan: dict) -> None:
    """The same function as the pruned model: the removed heads' output columns zeroed."""
    atts = {b.key: a for b, a in blocks._attentions(model)}
    with torch.no_grad():
        for key, removed in plan["heads"].items():
            for h in removed:
                atts[key].o.weight[:, h * 8 : (h + 1) * 8] = 0


@pytest.mark.parametrize("kind", ["bert", "llama", "llama-gqa", "t5"])
def test_heads_shrink_run_and_reload(kind, tmp_path):
    model, original, batches, before, plan = pruned(kind, structured.heads, 0.25)

    atts = blocks._attentions(model)
    total_before = sum(plan["num_heads"].values())
    removed = sum(len(v) for v in plan["heads"].values())
    assert removed == round(0.25 * total_before)
    assert plan["importance"] == "gradient"
    assert prune.count_params(model) == before - head_params(kind, model, plan)
    assert plan["params_after"] == prune.count_params(model)
    for block, att in atts:
        assert att.num_heads >= 1
        assert att.num_heads == plan["num_heads"][block.key] - len(plan["heads"].get(block.key, []))
        assert att.q.out_features == att.o.in_features == att.num_heads * att.head_dim

    # pruning = masking those heads out of the original model (T5: the right bias rows too)
    reference = copy.deepcopy(original)
    zero_removed_heads(reference, plan)
    same_function(model, reference, batches, kind)

    other = reloads(model, original.config, structured.apply_head_plan, plan, batches, tmp_path)
    if kind != "bert":
        generates(other)


def test_heads_keep_one_per_layer_and_refuse_more():
    model = prune_model("bert")
    plan = structured.heads(model, 0.75, calibration("bert"))  # 12 of 16: one left in every layer
    assert all(len(v) == 3 for v in plan["heads"].values()) and len(plan["heads"]) == 4
    for _, att in blocks._attentions(model):
        assert att.num_heads == 1
    with pytest.raises(TunelabError) as err:  # 13 of 16 cannot keep one each
        structured.heads(prune_model("bert"), 0.8, calibration("bert"))
    assert "\n" not in str(err.value) and "prune-heads" in str(err.value)


def test_heads_remove_the_one_that_does_nothing():
    model = prune_model("bert")
    with torch.no_grad():  # head 2 of layer 1 writes nothing: its mask gradient is zero
        model.bert.encoder.layer[1].attention.output.dense.weight[:, 16:24] = 0
    plan = structured.heads(model, 1 / 16, calibration("bert"))
    assert plan["heads"] == {"1": [2]}


def test_heads_without_a_loss_use_the_activation_proxy():
    model = prune_model("bert")
    batches = [{k: v for k, v in b.items() if k != "labels"} for b in calibration("bert")]
    plan = structured.heads(model, 0.25, batches)
    assert plan["importance"] == "activation"
    assert sum(len(v) for v in plan["heads"].values()) == 4


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5])
def test_heads_bad_fraction_is_one_line(fraction):
    with pytest.raises(TunelabError) as err:
        structured.heads(prune_model("llama"), fraction, calibration("llama"))
    assert "\n" not in str(err.value)


def test_unknown_architecture_is_one_line():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4))
    with pytest.raises(TunelabError) as err:
        structured.heads(gpt2, 0.25, calibration("gpt2"))
    assert "\n" not in str(err.value) and "head pruning supports" in str(err.value)
    with pytest.raises(TunelabError) as err:
        structured.ffn(gpt2, 0.25, calibration("gpt2"))
    assert "\n" not in str(err.value)
    with pytest.raises(TunelabError) as err:
        prune.magnitude(nn.Sequential(nn.Linear(4, 4)), 0.5)
    assert "\n" not in str(err.value) and "cannot prune" in str(err.value)
    with pytest.raises(TunelabError):
        prune.wanda(prune_model("bert"), [], 0.5)


def test_head_plan_for_another_shape_is_refused():
    model = prune_model("bert")
    plan = structured.heads(model, 0.25, calibration("bert"))
    with pytest.raises(TunelabError):
        structured.apply_head_plan(model, plan)  # already pruned: 4 heads expected, fewer there


# ------------------------------------------------------------------------------- ffn


def ffn_params(kind: str, removed: int) -> int:
    per = {"bert": 2 * 32 + 1, "llama": 3 * 32, "t5": 2 * 32, "t5-gated": 3 * 32}[kind]
    return removed * per


@pytest.mark.parametrize("kind", ["bert", "llama", "t5", "t5-gated"])
def test_ffn_shrink_run_and_reload(kind, tmp_path):
    model, original, batches, before, plan = pruned(kind, structured.ffn, 0.25)

    assert all(len(v) == 16 for v in plan["ffn"].values())
    removed = sum(len(v) for v in plan["ffn"].values())
    assert prune.count_params(model) == before - ffn_params(kind, removed)
    for _, f in blocks._ffns(model):
        assert f.out.in_features == 48 and all(i.out_features == 48 for i in f.ins)

    reference = copy.deepcopy(original)
    with torch.no_grad():
        for block, f in blocks._ffns(reference):
            f.out.weight[:, plan["ffn"][block.key]] = 0
    same_function(model, reference, batches, kind)

    reloads(model, original.config, structured.apply_ffn_plan, plan, batches, tmp_path)


def test_ffn_removes_the_neuron_that_does_nothing():
    model = prune_model("llama")
    with torch.no_grad():
        model.model.layers[2].mlp.down_proj.weight[:, 7] = 0
    plan = structured.ffn(model, 1 / 64, calibration("llama"))
    assert plan["ffn"]["2"] == [7]


# ------------------------------------------------------------------------------- layers


def block_params(model: nn.Module, stack: str, index: int) -> int:
    block = next(b for b in blocks._blocks(model) if b.stack == stack and b.index == index)
    moved = 0
    if index == 0 and model.config.is_encoder_decoder:  # T5's bias moves to the new block 0
        moved = block.module.layer[0].SelfAttention.relative_attention_bias.weight.numel()
    return prune.count_params(block.module) - moved


@pytest.mark.parametrize("kind", ["bert", "llama-gqa", "t5"])
def test_layers_drop_run_and_reload(kind, tmp_path):
    model, original, batches, before, plan = pruned(kind, structured.layers, 2)

    expected = sum(
        block_params(original, stack, i) for stack, idx in plan["layers"].items() for i in idx
    )
    assert sum(len(v) for v in plan["layers"].values()) == 2
    assert prune.count_params(model) == before - expected
    counts = {b.stack: 0 for b in blocks._blocks(model)}
    for b in blocks._blocks(model):
        counts[b.stack] += 1
        for m in b.module.modules():
            if isinstance(getattr(m, "layer_idx", None), int):
                assert m.layer_idx == b.index
    for stack, n in plan["num_layers"].items():
        assert counts[stack] == n - len(plan["layers"].get(stack, []))
    if kind == "t5":
        assert model.config.num_layers == counts["encoder"]
        assert model.config.num_decoder_layers == counts["decoder"]
        assert model.encoder.config.num_layers == counts["encoder"]
        assert model.decoder.config.num_layers == counts["decoder"]
    else:
        assert model.config.num_hidden_layers == sum(counts.values())
    for batch in batches:
        run(model, batch)
    if kind != "bert":
        generates(model)

    reloads(model, original.config, structured.apply_layer_plan, plan, batches, tmp_path)
    # built from the pruned config (as a saved run is): the plan leaves it as it is
    torch.manual_seed(5)
    native = type(model)(copy.deepcopy(model.config)).eval()
    structured.apply_layer_plan(native, plan)
    native.load_state_dict(weights(model), strict=True)
    for batch in batches:
        assert torch.equal(run(native, batch), run(model, batch))


def test_layers_drop_the_block_that_does_nothing():
    model = prune_model("llama")
    with torch.no_grad():  # block 2 adds nothing to the residual stream: cosine 1
        model.model.layers[2].self_attn.o_proj.weight.zero_()
        model.model.layers[2].mlp.down_proj.weight.zero_()
    plan = structured.layers(model, 1, calibration("llama"))
    assert plan["layers"] == {"decoder": [2]}
    assert plan["scores"]["2"] == pytest.approx(0.0, abs=1e-5)


def test_t5_dropping_block_zero_keeps_the_position_bias(tmp_path):
    model = prune_model("t5")
    original = copy.deepcopy(model)
    plan = {"layers": {"encoder": [0], "decoder": [0]}, "num_layers": {"encoder": 3, "decoder": 3}}
    structured.apply_layer_plan(model, plan)
    for stack in (model.encoder, model.decoder):
        assert stack.block[0].layer[0].SelfAttention.has_relative_attention_bias
    for batch in calibration("t5"):
        run(model, batch)
    generates(model)
    batches = calibration("t5")[:1]
    reloads(model, original.config, structured.apply_layer_plan, plan, batches, tmp_path)


def test_t5_heads_then_layers_compose():
    model = prune_model("t5")
    structured.heads(model, 0.25, calibration("t5"))
    structured.layers(model, 2, calibration("t5"))
    run(model, calibration("t5")[0])
    generates(model)


@pytest.mark.parametrize(
    ("kind", "count"), [("llama", 0), ("llama", 4), ("llama", True), ("t5", 5)]
)
def test_layers_bad_count_is_one_line(kind, count):
    with pytest.raises(TunelabError) as err:
        structured.layers(prune_model(kind), count, calibration(kind))
    assert "\n" not in str(err.value) and "prune-layers" in str(err.value)


def test_count_params_counts_a_tied_weight_once():
    model = prune_model("t5")
    assert prune.count_params(model) == sum(p.numel() for p in model.parameters())
    assert prune.count_params(nn.Linear(3, 2)) == 8
