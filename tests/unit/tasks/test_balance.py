"""--data.balance: class weights, oversampling and what auto picks."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from tunelab.errors import TunelabError
from tunelab.tasks.balance import apply_balance, class_weights, resolve, weighted_loss


def test_auto_weights_only_uneven_classes():
    assert resolve("auto", Counter(a=60, b=30, c=10)) == "weights"
    assert resolve("auto", Counter(a=55, b=45)) == "none"
    assert resolve("auto", Counter(a=10)) == "none"
    assert resolve("sample", Counter(a=55, b=45)) == "sample"


def test_unknown_choice_names_the_flag():
    with pytest.raises(TunelabError, match="--data.balance"):
        resolve("smote", Counter(a=1, b=2))


def test_weights_give_every_class_the_same_total():
    counts = Counter(a=60, b=30, c=10)
    w = class_weights(counts, ["a", "b", "c"])
    totals = [w[i].item() * counts[lab] for i, lab in enumerate("abc")]
    assert totals == pytest.approx([100 / 3] * 3)


def test_weighted_loss_is_torch_weighted_cross_entropy():
    logits = torch.randn(5, 3)
    labels = torch.tensor([0, 0, 1, 2, 0])
    w = torch.tensor([0.5, 1.0, 3.0])
    got = weighted_loss(w)(SimpleNamespace(logits=logits), {"labels": labels})
    assert torch.allclose(got, F.cross_entropy(logits, labels, weight=w))
    assert not torch.allclose(got, F.cross_entropy(logits, labels))


def test_sample_repeats_smaller_classes_to_the_largest():
    data = list(range(10))
    labels = [0] * 6 + [1] * 3 + [2]
    sampled, loss_fn, said = apply_balance("sample", data, labels, ["a", "b", "c"], seed=0)
    assert loss_fn is None and "18" in said
    got = Counter(labels[sampled.indices[i]] for i in range(len(sampled)))
    assert got == Counter({0: 6, 1: 6, 2: 6})
    assert sorted(set(sampled.indices)) == data  # every example kept


def test_none_and_even_data_change_nothing():
    data, labels = list(range(4)), [0, 1, 0, 1]
    assert apply_balance("auto", data, labels, ["a", "b"], 0) == (data, None, "")
    assert apply_balance("none", data, [0, 0, 0, 1], ["a", "b"], 0) == (data, None, "")


def test_balance_encoded_replaces_the_train_split_and_the_loss_only():
    from tunelab.tasks.balance import balance_encoded
    from tunelab.tasks.base import Encoded

    train = [{"labels": lab} for lab in [0, 0, 0, 0, 1]]
    enc = Encoded({"train": train, "test": ["t"]}, collate=list, evaluate=print)
    weighted, said = balance_encoded(enc, "auto", ["a", "b"], seed=0)
    assert weighted.loss_fn is not None and weighted.data["train"] is train and "weighted" in said
    assert weighted.data["test"] == ["t"] and enc.loss_fn is None  # enc itself unchanged
    sampled, _ = balance_encoded(enc, "sample", ["a", "b"], seed=0)
    assert len(sampled.data["train"]) == 8 and sampled.loss_fn is None
