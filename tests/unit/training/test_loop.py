"""Behaviour of the training loop: resume, accumulation, learning, early stopping, keep-best.

Every test trains the tiny random BERT classifier from conftest for a handful of steps in
fp32 with dropout off, so two runs that should match can be compared parameter by parameter.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from tests.conftest import toy_examples
from tunelab.errors import TunelabError
from tunelab.training.checkpoint import trainable_state
from tunelab.training.loop import LoopResult, train
from tunelab.training.options import TrainOptions
from tunelab.training.state import LoopState

LABELS = ["money", "sport", "tech"]


def snapshot(model):
    """A copy of the trainable weights (trainable_state shares CPU storage with the model)."""
    return {k: v.clone() for k, v in trainable_state(model).items()}


@pytest.fixture(scope="module")
def base(tiny_models):
    """(model, tokenizer) loaded once: each test trains a deepcopy, so all start identical."""
    from tunelab.models.load import load_classifier

    torch.manual_seed(0)  # the new classification head is random
    loaded = load_classifier(str(tiny_models["encoder"]), LABELS, attention_dropout=0.0)
    return loaded.model, loaded.tokenizer


@pytest.fixture
def setup(base) -> Callable:
    """make(n_examples, dropout) -> (fresh model copy, dataset, collate)."""
    from tunelab.tasks.classification import encode_examples, make_collate

    model, tok = base

    def make(n: int = 26, dropout: float = 0.0):
        data = encode_examples(toy_examples(n), tok, LABELS, max_length=32)
        copied = copy.deepcopy(model)
        for m in copied.modules():
            if isinstance(m, nn.Dropout):
                m.p = dropout
        return copied, data, make_collate(tok)

    return make


def cfg(**kw) -> TrainOptions:
    """fp32, deterministic defaults for these tests; keyword arguments override."""
    defaults = dict(precision="fp32", batch_size=4, lr=1e-3, max_steps=8, keep_best=False, seed=0)
    return TrainOptions(**{**defaults, **kw})


def run(model, data, collate, config: TrainOptions, workdir: Path, **kw) -> LoopResult:
    return train(model, data, collate, config, workdir, show_progress=False, **kw)


def read_log(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "log.jsonl").read_text().splitlines()]


def params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def differing(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """Names whose tensors are not bit-identical (the keys must match)."""
    assert a.keys() == b.keys()
    return [n for n in a if not torch.equal(a[n], b[n])]


@contextmanager
def before_optimizer_steps(hook: Callable[[torch.optim.Optimizer], object]) -> Iterator[None]:
    """Calls hook(optimizer) before every optimizer step taken inside the block."""
    handle = register_optimizer_step_pre_hook(lambda optimizer, args, kwargs: hook(optimizer))
    try:
        yield
    finally:
        handle.remove()


def const_eval(model: nn.Module) -> dict:
    return {"macro_f1": 0.5, "loss": 1.0}


def killed_at_call(k: int) -> Callable:
    """An evaluate callback that acts like Ctrl-C on its k-th call (const_eval before)."""
    calls = iter(range(1, k + 1))

    def evaluate(model: nn.Module) -> dict:
        if next(calls) == k:
            raise KeyboardInterrupt
        return const_eval(model)

    return evaluate


def scripted(*values: float, key: str = "macro_f1"):
    """An evaluate callback returning `values` one per call, under `key`."""
    it = iter(values)
    return lambda model: {key: next(it), **({} if key == "macro_f1" else {"macro_f1": 0.0})}


# -- resume ----------------------------------------------------------------------------------


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_resume_after_kill_equals_uninterrupted_run(setup, tmp_path, grad_accum):
    # 26 examples / batch 4 = 7 batches per epoch (the last one holds 2 examples).
    # grad_accum 1: 7 steps per epoch, the step-3 checkpoint is at batch 3 of epoch 0.
    # grad_accum 2: groups of 2,2,2,1 = 4 steps per epoch, the step-3 checkpoint is at
    # batch 6 of epoch 0 (mid-epoch); 8 steps end exactly after epoch 1.
    # A linear schedule with warmup makes a lost scheduler state visible in the weights.
    config = cfg(grad_accum=grad_accum, eval_every=3, schedule="linear", warmup_ratio=0.25)

    model_a, data, collate = setup()
    result_a = run(model_a, data, collate, config, tmp_path / "a", evaluate=const_eval)

    # Ctrl-C in the 2nd evaluation (step 6): after the step-3 checkpoint, before the step-6 one
    model_b, _, _ = setup()
    with pytest.raises(KeyboardInterrupt):
        run(model_b, data, collate, config, tmp_path / "b", evaluate=killed_at_call(2))
    state_file = tmp_path / "b" / "checkpoint" / "state.json"
    state = json.loads(state_file.read_text())
    assert state["step"] == 3
    # resume from the state.json as tunelab wrote it before LoopState, to show that such
    # checkpoints still resume: the same keys, but "stopped_early" only once it was true
    assert state.pop("stopped_early") is False
    state_file.write_text(json.dumps(state))

    model_b, _, _ = setup()  # a new process would start from the pretrained weights again
    result_b = run(model_b, data, collate, config, tmp_path / "b", evaluate=const_eval, resume=True)

    assert result_a.steps == result_b.steps == 8
    assert result_b.epochs == pytest.approx(result_a.epochs)
    assert [h["step"] for h in result_b.history] == [h["step"] for h in result_a.history]
    assert [h["step"] for h in result_a.history] == [3, 6, 8]
    resumed = [r for r in read_log(tmp_path / "b") if r.get("event") == "resumed"]
    assert resumed == [{"event": "resumed", "step": 3}]

    # fp32 on CPU, same batches in the same order, dropout off: bit-identical weights
    assert differing(params(model_a), params(model_b)) == []


def test_resume_continues_the_dropout_randomness(setup, tmp_path):
    # with dropout on, only a restored RNG state gives the uninterrupted run's masks
    config = cfg(max_steps=6, eval_every=3)
    model_a, data, collate = setup(dropout=0.1)
    run(model_a, data, collate, config, tmp_path / "a", evaluate=const_eval)

    model_b, _, _ = setup(dropout=0.1)
    with pytest.raises(KeyboardInterrupt):
        run(model_b, data, collate, config, tmp_path / "b", evaluate=killed_at_call(2))
    model_b, _, _ = setup(dropout=0.1)
    run(model_b, data, collate, config, tmp_path / "b", evaluate=const_eval, resume=True)
    assert differing(params(model_a), params(model_b)) == []


@pytest.mark.parametrize("stopped_early", [False, True], ids=["finished", "stopped-early"])
def test_resume_of_an_ended_run_trains_no_more(setup, tmp_path, stopped_early):
    # a run killed after its last step or after early stopping (while testing or saving) is
    # still unfinished (a .partial folder) and `--resume` continues it: it must not train on.
    # Retraining from scratch would end in the same weights, so the steps are counted too.
    if stopped_early:
        config, scores = cfg(max_steps=20, eval_every=1, patience=2), (0.9, 0.8, 0.7, 0.6)
    else:
        config, scores = cfg(max_steps=3, eval_every=3), (0.5, 0.5)
    model, data, collate = setup()
    first = run(model, data, collate, config, tmp_path, evaluate=scripted(*scores))
    assert (first.steps, first.stopped_early) == (3, stopped_early)
    ended = params(model)

    model, _, _ = setup()
    taken: list[torch.optim.Optimizer] = []
    again = dict(evaluate=scripted(*scores), resume=True)
    with before_optimizer_steps(taken.append):
        result = run(model, data, collate, config, tmp_path, **again)
    assert taken == []
    assert read_log(tmp_path)[-1] == {"event": "resumed", "step": 3}  # and no evaluation
    assert differing(params(model), ended) == []
    # the counters come back from the checkpoint
    assert (result.steps, result.stopped_early) == (3, stopped_early)
    assert (result.best_step, result.best_metric) == (first.best_step, first.best_metric)
    assert result.history == first.history


def test_a_state_json_without_the_counters_is_a_clear_error():
    with pytest.raises(TunelabError, match="lacks step, batch.*without --resume"):
        LoopState.from_dict({"epoch": 0, "best": None})


# -- gradient accumulation -------------------------------------------------------------------


def test_grad_accum_matches_one_big_batch(setup, tmp_path):
    grads: list[dict[int, torch.Tensor]] = []

    def grab(optimizer):
        ps = [p for g in optimizer.param_groups for p in g["params"]]
        grads.append({i: p.grad.detach().clone() for i, p in enumerate(ps)})

    common = dict(max_steps=1, schedule="constant", warmup_ratio=0.0, max_grad_norm=None, lr=1e-3)
    with before_optimizer_steps(grab):
        model_small, data, collate = setup(16)
        run(model_small, data, collate, cfg(batch_size=4, grad_accum=2, **common), tmp_path / "a")
        model_big, _, _ = setup(16)
        run(model_big, data, collate, cfg(batch_size=8, grad_accum=1, **common), tmp_path / "b")

    # the gradient of 2 x 4 accumulated (each loss / 2) is the gradient of the mean over 8;
    # this pins the loss scaling, which AdamW's update (scale-invariant) would hide
    assert len(grads) == 2
    assert grads[0].keys() == grads[1].keys()
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], atol=1e-6, rtol=1e-4)

    # not bit-identical: the two batches of 4 are padded to their own lengths, the batch of 8
    # to its longest, and the sums run in another order; the step moves weights by ~lr = 1e-3
    start, small, big = params(setup(16)[0]), params(model_small), params(model_big)
    moved = False
    for name, p in small.items():
        torch.testing.assert_close(p, big[name], atol=1e-5, rtol=0)
        moved |= not torch.allclose(p, start[name], atol=1e-5, rtol=0)
    assert moved, "one optimizer step changed nothing"


def test_short_last_group_of_an_epoch_is_one_step(setup, tmp_path):
    # 26 examples / batch 4 = 7 batches; groups of 3: 3,3,1 -> 3 optimizer steps per epoch,
    # and a group never straddles two epochs
    calls: list[tuple[int, int, int]] = []  # (optimizer steps so far, step, epoch)
    taken: list[torch.optim.Optimizer] = []
    model, data, collate = setup(26)
    config = cfg(grad_accum=3, max_steps=None, epochs=2)
    with before_optimizer_steps(taken.append):
        hook = lambda m, step, epoch: calls.append((len(taken), step, epoch))  # noqa: E731
        result = run(model, data, collate, config, tmp_path, before_step=hook)
    # once per optimizer step, before it, with the loop's step and epoch counters
    assert calls == [(0, 0, 0), (1, 1, 0), (2, 2, 0), (3, 3, 1), (4, 4, 1), (5, 5, 1)]
    assert result.steps == len(taken) == 6
    assert result.epochs == pytest.approx(2.0)


# -- learning --------------------------------------------------------------------------------


def test_loss_falls_when_overfitting(setup, tmp_path):
    # the whole set is one batch, so each logged loss is the loss over all 16 examples
    model, data, collate = setup(16)
    config = cfg(max_steps=30, batch_size=16, lr=1e-2, schedule="constant", warmup_ratio=0.0)
    run(model, data, collate, config, tmp_path)
    losses = [r["loss"] for r in read_log(tmp_path) if "loss" in r]
    steps = [r["step"] for r in read_log(tmp_path) if "loss" in r]
    assert steps == [10, 20, 30]
    assert losses[-1] < losses[0] / 2, losses


# -- early stopping and keep-best ------------------------------------------------------------


def test_early_stopping_after_patience_bad_evals(setup, tmp_path):
    worse_each_time = scripted(0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)
    model, data, collate = setup()
    config = cfg(max_steps=20, eval_every=1, patience=2)
    result = run(model, data, collate, config, tmp_path, evaluate=worse_each_time)
    assert (result.stopped_early, result.steps, len(result.history)) == (True, 3, 3)
    assert (result.best_step, result.best_metric) == (1, pytest.approx(0.9))


def test_patience_counts_consecutive_bad_evals(setup, tmp_path):
    # never two bad evaluations in a row: an improvement resets the count
    zigzag = scripted(0.5, 0.4, 0.6, 0.5, 0.7, 0.6)
    model, data, collate = setup()
    config = cfg(max_steps=6, eval_every=1, patience=2)
    result = run(model, data, collate, config, tmp_path, evaluate=zigzag)
    assert (result.stopped_early, result.steps) == (False, 6)
    assert (result.best_step, result.best_metric) == (5, pytest.approx(0.7))


def test_lower_is_better_for_loss_metric(setup, tmp_path):
    losses = scripted(3.0, 1.0, 2.0, 4.0, key="loss")
    model, data, collate = setup()
    config = cfg(max_steps=4, eval_every=1, metric="loss")
    result = run(model, data, collate, config, tmp_path, evaluate=losses)
    assert (result.best_step, result.best_metric) == (2, pytest.approx(1.0))


def snapshotting(*values: float):
    """(evaluate, snapshots): a scripted evaluate that also copies the weights it is shown."""
    score = scripted(*values)
    snapshots: list[dict[str, torch.Tensor]] = []

    def evaluate(model):
        snapshots.append(snapshot(model))
        return score(model)

    return evaluate, snapshots


def test_keep_best_restores_the_best_weights(setup, tmp_path):
    best_first, snapshots = snapshotting(0.9, 0.5, 0.4, 0.3)
    model, data, collate = setup()
    config = cfg(max_steps=4, eval_every=1, keep_best=True)
    result = run(model, data, collate, config, tmp_path, evaluate=best_first)

    assert result.best_step == 1
    assert len(snapshots) == 4
    saved = load_file(str(tmp_path / "best.safetensors"))
    final = snapshot(model)
    assert differing(final, saved) == []
    assert differing(final, snapshots[0]) == []
    # the weights the loop ended with (seen by the last evaluation) were different
    assert differing(final, snapshots[-1]), "training did not move the weights"


def test_without_keep_best_the_last_weights_stay(setup, tmp_path):
    best_first, snapshots = snapshotting(0.9, 0.5, 0.4)
    model, data, collate = setup()
    config = cfg(max_steps=3, eval_every=1, keep_best=False)
    run(model, data, collate, config, tmp_path, evaluate=best_first)
    assert differing(snapshot(model), snapshots[-1]) == []
    assert not (tmp_path / "best.safetensors").exists()


# -- frozen parameters -----------------------------------------------------------------------


def test_frozen_parameters_stay_bit_identical(setup, tmp_path):
    model, data, collate = setup()
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("classifier."))
    before = params(model)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    head = [n for n, p in model.named_parameters() if p.requires_grad]
    assert frozen and head

    run(model, data, collate, cfg(max_steps=5, weight_decay=0.1), tmp_path)

    changed = differing(params(model), before)
    assert sorted(changed) == sorted(head)  # every frozen one bit-identical, the head moved
    ckpt = load_file(str(tmp_path / "checkpoint" / "trainable.safetensors"))
    assert sorted(ckpt) == sorted(head)


# -- hooks (precision: test_precision.py) ----------------------------------------------------


def test_step_hooks_see_the_model_and_gradients(setup, tmp_path):
    model, data, collate = setup(12)
    before: list[tuple[int, int]] = []
    after: list[tuple[int, bool]] = []

    def before_step(m, step, epoch):
        assert m is model
        before.append((step, epoch))

    def after_step(m, step):
        # gradients are still there (AdaLoRA's rank allocation reads them)
        after.append((step, all(p.grad is not None for p in m.parameters() if p.requires_grad)))

    hooks = dict(before_step=before_step, after_step=after_step)
    result = run(model, data, collate, cfg(max_steps=None, epochs=3), tmp_path, **hooks)
    assert result.steps == 9  # 12 examples / batch 4 = 3 steps per epoch
    assert before == [(s, s // 3) for s in range(9)]
    assert after == [(s, True) for s in range(9)]


def test_strategy_param_groups_set_the_learning_rates(setup, tmp_path):
    model, data, collate = setup(8)
    first = next(p for p in model.parameters())

    def groups(m, lr, weight_decay):
        rest = [p for p in m.parameters() if p is not first]
        return [{"params": [first], "lr": 0.0}, {"params": rest, "lr": lr}]

    before = first.detach().clone()
    run(model, data, collate, cfg(max_steps=2), tmp_path, param_groups=groups)
    assert torch.equal(first.detach(), before), "a group with lr 0 still moved"
    assert differing(params(model), params(setup(8)[0])), "no step"


def test_empty_training_data_is_a_clear_error(setup, tmp_path):
    model, data, collate = setup()
    with pytest.raises(TunelabError, match="empty"):
        run(model, [], collate, cfg(), tmp_path)
