"""gradual: groups unfreeze top-down on schedule through the real loop, frozen ones stay put,
layer-wise learning rates reach the optimizer, and a resumed run is in the same state."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from tests.conftest import FAMILIES, toy_examples
from tunelab.errors import TunelabError
from tunelab.models.load import load_classifier
from tunelab.strategies import get_strategy
from tunelab.strategies.layers import layer_groups
from tunelab.tasks.classification import encode_examples, make_collate
from tunelab.training.loop import train
from tunelab.training.options import TrainOptions

LABELS = ["money", "sport", "tech"]
GRADUAL = get_strategy("gradual")
BERT_ORDER = ["head", "encoder.1", "encoder.0", "embeddings"]
"""The tiny BERT's groups in the order they start training."""


@pytest.fixture(scope="module")
def bases(tiny_models):
    """family -> (model, tokenizer), loaded once with dropout off; tests take deep copies."""
    out = {}
    for family in FAMILIES:
        torch.manual_seed(0)
        loaded = load_classifier(str(tiny_models[family]), LABELS, attention_dropout=0.0)
        for m in loaded.model.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0
        out[family] = (loaded.model, loaded.tokenizer, loaded.family)
    return out


def build(bases, family: str = "encoder", **options):
    """(model with gradual applied, its options, tokenizer)."""
    model, tok, fam = bases[family]
    opts = GRADUAL.options(options)
    return GRADUAL.build(copy.deepcopy(model), opts, fam, 10), opts, tok


def open_groups(model) -> list[str]:
    """Names of the groups that train now (each group is all-trainable or all-frozen)."""
    params = dict(model.named_parameters())
    out = []
    for g in layer_groups(model):
        flags = {params[n].requires_grad for n in g.params}
        assert len(flags) == 1, f"group {g.name} is partly frozen"
        if flags == {True}:
            out.append(g.name)
    return out


def group_weights(model) -> dict[str, list[torch.Tensor]]:
    params = dict(model.named_parameters())
    return {g.name: [params[n].detach().clone() for n in g.params] for g in layer_groups(model)}


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def cfg(**kw) -> TrainOptions:
    base = dict(precision="fp32", batch_size=4, lr=1e-3, keep_best=False, seed=0)
    base.update(schedule="constant", warmup_ratio=0.0)
    return TrainOptions(**{**base, **kw})


def run_gradual(model, opts, tok, config, workdir, n_examples=12, record=None, **kw):
    """Train through the real loop with the strategy's hooks, as api.finetune wires them;
    `record(model, step, epoch)` runs after the strategy's before_step."""
    data = encode_examples(toy_examples(n_examples), tok, LABELS, 32)

    def before(m, step, epoch):
        GRADUAL.before_step(m, opts, step, epoch)
        if record is not None:
            record(m, step, epoch)

    return train(
        model,
        data,
        make_collate(tok),
        config,
        workdir,
        before_step=before,
        param_groups=lambda m, lr, wd: GRADUAL.param_groups(m, opts, lr, wd),
        show_progress=False,
        **kw,
    )


# -- the schedule as a function of (step, epoch) ----------------------------------------------


@pytest.mark.parametrize(
    "family,start",
    [
        ("encoder", ["encoder.1", "head"]),
        ("decoder", ["decoder.1", "head"]),
        ("encoder-decoder", ["decoder.1", "head"]),
    ],
)
def test_step_zero_trains_the_head_and_the_top_block(bases, family, start):
    model, _, _ = build(bases, family)
    assert open_groups(model) == start


def test_start_groups(bases):
    model, _, _ = build(bases, start_groups=0)
    assert open_groups(model) == ["head"]
    model, _, _ = build(bases, start_groups=2)
    assert open_groups(model) == ["encoder.0", "encoder.1", "head"]
    model, _, _ = build(bases, start_groups=9)
    assert open_groups(model) == ["embeddings", "encoder.0", "encoder.1", "head"]


def test_before_step_is_a_function_of_step_and_epoch(bases):
    model, opts, _ = build(bases, every="3")
    seen = {}
    for step in [7, 0, 4, 2, 3, 6, 5, 1, 100]:  # any order: no memory of earlier calls
        GRADUAL.before_step(model, opts, step, epoch=5)
        seen[step] = len(open_groups(model))
    assert seen == {0: 2, 1: 2, 2: 2, 3: 3, 4: 3, 5: 3, 6: 4, 7: 4, 100: 4}

    model, opts, _ = build(bases)  # every epoch: the step does not matter
    for epoch, n in [(2, 4), (0, 2), (1, 3), (0, 2)]:
        GRADUAL.before_step(model, opts, 50, epoch)
        assert sorted(open_groups(model)) == sorted(BERT_ORDER[:n])


def test_without_embeddings_they_never_unfreeze(bases):
    model, opts, _ = build(bases, embeddings=False)
    GRADUAL.before_step(model, opts, 1000, 1000)
    assert open_groups(model) == ["encoder.0", "encoder.1", "head"]
    names = {n for g in GRADUAL.param_groups(model, opts, 1e-3, 0.01) for n in _names(model, g)}
    assert not any(n.startswith("bert.embeddings.") for n in names)


@pytest.mark.parametrize(
    "options,message",
    [
        ({"every": "often"}, "gradual.every must be epoch or a positive number"),
        ({"every": "0"}, "gradual.every"),
        ({"start_groups": -1}, "start_groups must be >= 0"),
        ({"decay": 0.0}, "decay must be positive"),
    ],
)
def test_bad_options_are_one_line_errors(bases, options, message):
    with pytest.raises(TunelabError, match=message) as info:
        build(bases, **options)
    assert "\n" not in str(info.value)


# -- optimizer groups -------------------------------------------------------------------------


def _names(model, group: dict) -> list[str]:
    ids = {id(p) for p in group["params"]}
    return [n for n, p in model.named_parameters() if id(p) in ids]


@pytest.mark.parametrize("family", FAMILIES)
def test_param_groups_cover_every_group_with_layerwise_lr_and_decay_split(bases, family):
    model, opts, _ = build(bases, family, decay=2.6)
    groups = GRADUAL.param_groups(model, opts, 1e-3, 0.01)
    listed = [n for g in groups for n in _names(model, g)]
    # every parameter once, the frozen ones too (the loop's optimizer and checkpoints)
    assert sorted(listed) == sorted(n for n, _ in model.named_parameters())
    assert len(listed) == len(set(listed))
    assert any(not p.requires_grad for g in groups for p in g["params"])

    order = ["head", *[g.name for g in layer_groups(model)][-2:0:-1], "embeddings"]
    depth = {name: i for i, name in enumerate(order)}
    for g in groups:
        assert g["lr"] == pytest.approx(1e-3 / 2.6 ** depth[g["name"]])
        for n in _names(model, g):
            no_decay = n.endswith(".bias") or "norm" in n.lower()
            assert g["weight_decay"] == (0.0 if no_decay else 0.01), n
    assert {g["name"] for g in groups} == set(order)


def test_layerwise_lrs_reach_the_loops_optimizer(bases, tmp_path):
    model, opts, tok = build(bases, decay=2.0)
    seen: list[dict[str, float]] = []

    def grab(optimizer, args, kwargs):
        seen.append({g["name"]: g["lr"] for g in optimizer.param_groups})

    handle = register_optimizer_step_pre_hook(grab)
    try:
        run_gradual(model, opts, tok, cfg(max_steps=2, lr=1e-2), tmp_path)
    finally:
        handle.remove()
    assert seen and seen[0] == pytest.approx(
        {"head": 1e-2, "encoder.1": 5e-3, "encoder.0": 2.5e-3, "embeddings": 1.25e-3}
    )


# -- through the real loop --------------------------------------------------------------------


@pytest.mark.parametrize(
    "every,expected",
    [
        # 12 examples / batch 4 = 3 steps per epoch: one more group per epoch
        ("epoch", [2, 2, 2, 3, 3, 3, 4, 4, 4]),
        # every 2 optimizer steps, whatever the epoch
        ("2", [2, 2, 3, 3, 4, 4, 4, 4, 4]),
    ],
)
def test_loop_unfreezes_on_schedule_and_frozen_groups_stay_put(bases, tmp_path, every, expected):
    model, opts, tok = build(bases, every=every)
    states: list[tuple[int, int, list[str]]] = []
    weights: list[dict[str, list[torch.Tensor]]] = []

    def record(m, step, epoch):
        states.append((step, epoch, open_groups(m)))
        weights.append(group_weights(m))

    run_gradual(model, opts, tok, cfg(epochs=3, weight_decay=0.1), tmp_path, record=record)
    weights.append(group_weights(model))

    assert [s[0] for s in states] == list(range(9))
    assert [s[1] for s in states] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for (step, _, groups), n in zip(states, expected, strict=True):
        assert sorted(groups) == sorted(BERT_ORDER[:n]), step
    # a group moves in exactly the steps it is open for: bit-identical before
    for step, (_, _, groups) in enumerate(states):
        for name in BERT_ORDER:
            moved = not same(weights[step][name], weights[step + 1][name])
            assert moved == (name in groups), f"{name} at step {step}"


@pytest.mark.parametrize("every", ["epoch", "3"])
def test_resume_mid_run_gives_the_same_unfreezing_and_weights(bases, tmp_path, every):
    # 12 examples / batch 4 = 3 steps per epoch, 9 steps; checkpoints at steps 4 and 8:
    # the step-4 one is mid-epoch 1, with the embeddings still frozen in both modes
    config = cfg(epochs=3, eval_every=4)
    model_a, opts, tok = build(bases, every=every)
    log_a: list[tuple[int, int, list[str]]] = []
    run_gradual(
        model_a,
        opts,
        tok,
        config,
        tmp_path / "a",
        record=lambda m, s, e: log_a.append((s, e, open_groups(m))),
    )

    def killed(m, step, epoch):
        if step == 6:
            raise KeyboardInterrupt

    model_b, _, _ = build(bases, every=every)
    with pytest.raises(KeyboardInterrupt):
        run_gradual(model_b, opts, tok, config, tmp_path / "b", record=killed)
    state = json.loads((tmp_path / "b" / "checkpoint" / "state.json").read_text())
    assert (state["step"], state["epoch"]) == (4, 1)

    model_b, _, _ = build(bases, every=every)  # a new process: back to the step-0 state
    log_b: list[tuple[int, int, list[str]]] = []
    run_gradual(
        model_b,
        opts,
        tok,
        config,
        tmp_path / "b",
        record=lambda m, s, e: log_b.append((s, e, open_groups(m))),
        resume=True,
    )
    assert log_b == log_a[4:]
    assert "embeddings" not in log_b[0][2] and "embeddings" in log_b[-1][2]
    a, b = group_weights(model_a), group_weights(model_b)
    assert all(same(a[name], b[name]) for name in BERT_ORDER)
