"""Knowledge distillation: the Distiller's losses, and training through plain AdamW and
through the one training loop with the teacher left untouched (make_student's students:
test_distill_student.py).

Teachers are tiny 4-layer models built from conftest's configs (so `half` keeps 2 blocks);
exact checks run in eval mode (no dropout) through `Distiller.objective`.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from tests.conftest import toy_examples
from tests.unit.compress.conftest import (
    VOCAB,
    assert_one_line,
    batch_for,
    distill_model,
)
from tunelab.compress.distill import (
    Distiller,
    check_vocab,
    jsd_loss,
    kl_loss,
    make_student,
)
from tunelab.compress.distill_cache import attach_teacher_logits, cache_teacher_logits
from tunelab.compress.options import DistillOptions
from tunelab.errors import TunelabError

LABELS = ["money", "sport", "tech"]


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --- the Distiller ---------------------------------------------------------------------------


def test_teacher_is_frozen_and_hidden_from_parameters_and_state_dict():
    from tunelab.training.optim import build_optimizer

    teacher = distill_model("llama-lm")
    student = make_student(teacher)
    d = Distiller(student, teacher, DistillOptions())
    teacher_ids = {id(p) for p in teacher.parameters()}
    assert not any(id(p) in teacher_ids for p in d.parameters())
    assert all(k.startswith("student.") for k in d.state_dict())
    assert not any(p.requires_grad for p in teacher.parameters())
    d.train()
    assert not teacher.training and student.training
    optimizer = build_optimizer(d, 1e-3)
    in_opt = sum(len(g["params"]) for g in optimizer.param_groups)
    assert in_opt == len(list(student.parameters()))
    d.to(torch.float64)  # .to() moves the unregistered teacher along
    assert next(teacher.parameters()).dtype == torch.float64
    assert d.student is student and d.teacher is teacher
    assert d.config is student.config


def test_a_student_sharing_the_teachers_weights_is_refused():
    teacher = distill_model("bert-cls")
    with pytest.raises(TunelabError) as exc:
        Distiller(teacher, teacher, DistillOptions())
    assert_one_line(exc)


@pytest.mark.parametrize("loss", ["kl", "jsd"])
@pytest.mark.parametrize("kind", ["bert-cls", "llama-lm", "t5"])
def test_soft_loss_is_zero_for_a_copy_of_the_teacher(kind, loss):
    teacher = distill_model(kind)
    d = Distiller(copy.deepcopy(teacher), teacher, DistillOptions(alpha=1.0, loss=loss)).eval()
    out = d.objective(**batch_for(kind))
    assert out.loss.abs().item() < 1e-6
    assert out.task_loss.item() > 0  # the task term is there, weighted 0


def hand_kl(s: torch.Tensor, t: torch.Tensor, temp: float) -> torch.Tensor:
    """T^2 * mean over rows of sum_v p_t (log p_t - log p_s), written out."""
    p_t = torch.softmax(t / temp, -1)
    log_s = torch.log_softmax(s / temp, -1)
    return temp**2 * (p_t * (p_t.log() - log_s)).sum(-1).mean()


@pytest.mark.parametrize("temp", [1.0, 2.0, 4.0])
def test_kl_is_t_squared_times_forward_kl_over_the_target_tokens(temp):
    teacher = distill_model("llama-lm")
    student = make_student(teacher)
    batch = batch_for("llama-lm")
    d = Distiller(student, teacher, DistillOptions(temperature=temp, alpha=1.0)).eval()
    d.to(torch.float64)  # the student's distributions are close to the teacher's: no fp32 noise
    out = d.objective(**batch)
    with torch.no_grad():
        s, t = student(**batch).logits[:, :-1], teacher(**batch).logits[:, :-1]
    keep = batch["labels"][:, 1:] != -100  # causal: logits t predict label t + 1
    expected = hand_kl(s[keep], t[keep], temp)
    assert out.soft_loss.item() == pytest.approx(expected.item(), rel=1e-9)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-9)  # alpha 1
    # a prompt or pad position counted would change it
    assert expected.item() != pytest.approx(hand_kl(s[:, :], t[:, :], temp).item(), rel=1e-3)


def test_classifier_kl_covers_every_example():
    teacher = distill_model("bert-cls")
    student = make_student(teacher)
    batch = batch_for("bert-cls")
    d = Distiller(student, teacher, DistillOptions(temperature=3.0)).eval().to(torch.float64)
    with torch.no_grad():
        expected = hand_kl(student(**batch).logits, teacher(**batch).logits, 3.0)
    assert d.objective(**batch).soft_loss.item() == pytest.approx(expected.item(), rel=1e-9)


def test_alpha_weighs_soft_against_task_loss():
    teacher = distill_model("t5")
    student = make_student(teacher)
    batch = batch_for("t5")
    with torch.no_grad():
        task = student.eval()(**batch).loss.item()
    terms = Distiller(student, teacher, DistillOptions(alpha=0.0)).eval().objective(**batch)
    assert terms.loss.item() == pytest.approx(task, rel=1e-6)
    mixed = Distiller(student, teacher, DistillOptions(alpha=0.3)).eval().objective(**batch)
    expected = 0.3 * mixed.soft_loss.item() + 0.7 * task
    assert mixed.loss.item() == pytest.approx(expected, rel=1e-6)
    assert mixed.soft_loss.item() > 0


def test_jsd_is_symmetric_bounded_and_zero_for_equal_distributions():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 11, generator=g), torch.randn(5, 11, generator=g)
    assert jsd_loss(a, a, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert jsd_loss(a, b, 1.0).item() == pytest.approx(jsd_loss(b, a, 1.0).item(), rel=1e-5)
    assert kl_loss(a, b, 1.0).item() != pytest.approx(kl_loss(b, a, 1.0).item(), rel=1e-3)
    p, q = torch.softmax(a, -1), torch.softmax(b, -1)
    m = (p + q) / 2
    hand = (0.5 * (q * (q / m).log()).sum(-1) + 0.5 * (p * (p / m).log()).sum(-1)).mean()
    assert jsd_loss(a, b, 1.0).item() == pytest.approx(hand.item(), rel=1e-5)
    # disjoint distributions reach the bound log 2 (times T^2)
    far = torch.full((1, 4), -1e4)
    x, y = far.clone(), far.clone()
    x[0, 0] = y[0, 1] = 0.0
    assert jsd_loss(x, y, 2.0).item() == pytest.approx(4 * math.log(2), rel=1e-4)
    assert 0 < jsd_loss(a, b, 2.0).item() < 4 * math.log(2)


def test_hidden_mse_is_added_with_its_weight():
    teacher = distill_model("bert-cls")
    batch = batch_for("bert-cls")
    d = Distiller(make_student(teacher), teacher, DistillOptions(hidden_weight=0.5)).eval()
    out = d.objective(**batch)
    assert out.hidden_loss.item() > 0
    expected = 0.5 * out.soft_loss + 0.5 * out.task_loss + 0.5 * out.hidden_loss
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    same = Distiller(copy.deepcopy(teacher), teacher, DistillOptions(hidden_weight=0.5))
    assert same.eval().objective(**batch).hidden_loss.item() == pytest.approx(0.0, abs=1e-10)


def test_a_narrower_student_gets_a_trained_projection():
    teacher = distill_model("t5")
    narrow = distill_model("t5", depth=2, d_model=16, d_kv=8, d_ff=32)
    d = Distiller(narrow, teacher, DistillOptions(hidden_weight=1.0))
    assert isinstance(d.projection, nn.Linear)
    assert (d.projection.in_features, d.projection.out_features) == (16, 32)
    assert any(p is d.projection.weight for p in d.parameters())
    d.objective(**batch_for("t5")).loss.backward()
    assert d.projection.weight.grad.abs().sum() > 0


def test_eval_mode_returns_the_students_own_loss():
    teacher = distill_model("llama-lm")
    student = make_student(teacher)
    batch = batch_for("llama-lm")
    d = Distiller(student, teacher, DistillOptions()).eval()
    with torch.no_grad():
        out, own = d(**batch), student(**batch)
    assert torch.equal(out.loss, own.loss) and torch.equal(out.logits, own.logits)


def test_mismatched_vocabulary_is_a_one_line_error(tiny_models):
    from transformers import AutoTokenizer

    teacher, student = (
        distill_model("llama-lm"),
        distill_model("llama-lm", depth=2, vocab=VOCAB + 7),
    )
    for call in (lambda: check_vocab(teacher, student), lambda: Distiller(student, teacher)):
        with pytest.raises(TunelabError, match="shared vocabulary") as exc:
            call()
        assert_one_line(exc)
    tok = AutoTokenizer.from_pretrained(tiny_models["decoder"])
    other = copy.deepcopy(tok)
    other.add_tokens(["zebra"])
    same = distill_model("llama-lm", depth=2)
    check_vocab(teacher, same, tok, copy.deepcopy(tok))
    with pytest.raises(TunelabError, match="shared vocabulary") as exc:
        check_vocab(teacher, same, tok, other)
    assert_one_line(exc)


def test_different_label_counts_are_a_one_line_error():
    teacher = distill_model("bert-cls")
    student = distill_model("bert-cls", depth=2, num_labels=4)
    d = Distiller(student, teacher)
    with pytest.raises(TunelabError) as exc:
        d.objective(**batch_for("bert-cls"))
    assert_one_line(exc)


@pytest.mark.parametrize(
    "options", [dict(temperature=0), dict(alpha=1.5), dict(hidden_weight=-1), dict(loss="mse")]
)
def test_bad_options_name_their_flag(options):
    teacher = distill_model("bert-cls", depth=2)
    with pytest.raises(TunelabError, match="--distill.") as exc:
        Distiller(copy.deepcopy(teacher), teacher, DistillOptions(**options))
    assert_one_line(exc)


# --- training ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,loss", [("bert-cls", "kl"), ("llama-lm", "kl"), ("t5", "jsd")])
def test_loss_falls_and_only_the_student_trains(kind, loss):
    teacher = distill_model(kind)
    student = make_student(teacher)
    before_t, before_s = snapshot(teacher), snapshot(student)
    batch = batch_for(kind)
    d = Distiller(student, teacher, DistillOptions(loss=loss, hidden_weight=0.1))
    first = d.eval().objective(**batch).loss.item()
    optimizer = torch.optim.AdamW([p for p in d.parameters() if p.requires_grad], lr=3e-3)
    d.train()
    torch.manual_seed(0)
    for _ in range(20):
        d(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    last = d.eval().objective(**batch).loss.item()
    assert last < 0.7 * first
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before_t.items())
    changed = [k for k, v in student.state_dict().items() if not torch.equal(v, before_s[k])]
    assert len(changed) > len(before_s) // 2


def test_the_training_loop_trains_the_student_and_checkpoints_only_it(tiny_models, tmp_path):
    from transformers import AutoTokenizer

    from tunelab.tasks.classification import encode_examples, evaluate, make_collate
    from tunelab.training.loop import train
    from tunelab.training.options import TrainOptions

    tok = AutoTokenizer.from_pretrained(tiny_models["encoder"])
    data = encode_examples(toy_examples(24), tok, LABELS, max_length=32)
    val = encode_examples(toy_examples(9, seed=1), tok, LABELS, max_length=32)
    collate = make_collate(tok)
    batch = collate([data[i] for i in range(len(data))])
    # a teacher that knows the task (15 full-batch steps), a student whose head starts afresh,
    # so the student has the teacher's outputs to learn
    teacher = distill_model("bert-cls", vocab=len(tok), hidden_dropout_prob=0.0).train()
    optimizer = torch.optim.AdamW(teacher.parameters(), lr=1e-2)
    for _ in range(15):
        teacher(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    student = make_student(teacher.eval())
    torch.manual_seed(1)
    student.classifier.reset_parameters()
    before_t = snapshot(teacher)
    d = Distiller(student, teacher, DistillOptions(temperature=2.0, alpha=0.5))
    first = d.eval().objective(**batch)

    def validate(model):
        return evaluate(model, val, collate, LABELS, progress=False, autocast=False)

    options = TrainOptions(
        precision="fp32",
        batch_size=8,
        lr=1e-2,
        max_steps=12,
        eval_every=6,
        keep_best=False,
        seed=0,
        warmup_ratio=0.0,
        schedule="constant",
    )
    result = train(d, data, collate, options, tmp_path, evaluate=validate, show_progress=False)
    assert result.steps == 12
    assert [r["step"] for r in result.history] == [6, 12]
    assert all("accuracy" in r["eval"] for r in result.history)
    last = d.eval().objective(**batch)
    assert last.loss.item() < 0.5 * first.loss.item()
    assert last.soft_loss.item() < 0.5 * first.soft_loss.item()  # it learnt the teacher's outputs
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before_t.items())
    saved = load_file(str(tmp_path / "checkpoint" / "trainable.safetensors"))
    assert set(saved) == {f"student.{n}" for n, _ in student.named_parameters()}


@pytest.mark.parametrize("kind", ["llama-lm", "bert-cls"])
def test_cached_teacher_logits_give_the_live_teachers_loss(kind):
    from tunelab.tasks.causal_lm import make_collate

    teacher = distill_model(kind)
    student = make_student(teacher)
    full = batch_for(kind)
    lengths = [9, 6, 7, 8]  # unpadded examples of different lengths

    def item(i):
        ids = full["input_ids"][i % 3, : lengths[i]].tolist()
        labels = [-100] * 2 + ids[2:] if kind == "llama-lm" else [i % 3]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}

    items = [item(i) for i in range(4)]
    if kind == "llama-lm":
        collate = make_collate(0)
    else:
        pad = make_collate(0)

        def collate(xs):
            out = pad([{**x, "labels": [0] * len(x["input_ids"])} for x in xs])
            return {**out, "labels": torch.tensor([x["labels"][0] for x in xs])}

    logits = cache_teacher_logits(teacher, items, collate, batch_size=3)
    assert len(logits) == 4
    data, cached_collate = attach_teacher_logits(items, collate, logits)
    order = [3, 0, 2]  # another grouping and padding than the caching saw
    d = Distiller(student, teacher, DistillOptions()).eval()
    live = d.objective(**collate([items[i] for i in order]))
    cached = d.objective(**cached_collate([data[i] for i in order]))
    assert cached.loss.item() == pytest.approx(live.loss.item(), rel=1e-5)
    hidden = Distiller(make_student(teacher), teacher, DistillOptions(hidden_weight=1.0))
    with pytest.raises(TunelabError):
        hidden.objective(**cached_collate([data[i] for i in order]))


def test_kl_loss_gradient_keeps_its_size_across_temperatures():
    """The T^2 factor: at high T the soft-target gradient tends to (s - t) / (n_classes) for
    zero-mean logits, the same whatever T (Hinton et al. 2015, section 2.1)."""
    g = torch.Generator().manual_seed(0)
    s = (0.1 * torch.randn(4, 7, generator=g)).requires_grad_()
    t = 0.1 * torch.randn(4, 7, generator=g)
    grads = []
    for temp in (10.0, 40.0):
        (grad,) = torch.autograd.grad(kl_loss(s, t, temp), s)
        grads.append(grad)
    assert torch.allclose(grads[0], grads[1], rtol=0.05, atol=1e-5)
    # without T^2 the gradient would shrink by 16x between T=10 and T=40
    raw_loss = F.kl_div(F.log_softmax(s / 40, -1), F.softmax(t / 40, -1), reduction="batchmean")
    (raw,) = torch.autograd.grad(raw_loss, s)
    assert raw.abs().sum() < grads[1].abs().sum() / 100
