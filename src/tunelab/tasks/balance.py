"""Uneven classes in classification training: `--data.balance auto|weights|sample|none`.

With a few hundred examples and one class at 60-65%, a fine-tuned classifier can settle on
answering the majority class for everything: the loss falls (it learned the class shares),
the metric does not move. Two remedies, as scikit-learn's `class_weight="balanced"` and
imbalanced-learn's random over-sampling do them:

- weights: the cross-entropy counts class c with weight n / (k * n_c) (n examples, k classes,
  n_c of class c), so every class carries the same total weight;
- sample: the examples of every smaller class are repeated (cycled, in a seeded order) until
  it has as many as the largest; the epochs get longer.

auto picks weights when the largest class has at least `AUTO_RATIO` times the examples of the
smallest, else none. docs/small-data.md has the measurements behind the defaults.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from tunelab.errors import TunelabError
from tunelab.tasks.base import Encoded

CHOICES = ("auto", "weights", "sample", "none")
AUTO_RATIO = 1.5


def check_balance(name: str | None) -> None:
    if name is not None and name not in CHOICES:
        raise TunelabError(f"unknown --data.balance {name!r}: choose one of {', '.join(CHOICES)}")


def resolve(name: str | None, counts: Counter) -> str:
    """What `name` means for these class counts: weights, sample or none (also None)."""
    check_balance(name)
    if name is None:
        return "none"
    if name != "auto":
        return name
    if len(counts) < 2:
        return "none"
    return "weights" if max(counts.values()) >= AUTO_RATIO * min(counts.values()) else "none"


def class_weights(counts: Counter, labels: list[str]) -> torch.Tensor:
    """n / (k * n_c) per label, in label order (a label with no example gets weight 0)."""
    n, k = sum(counts.values()), len(labels)
    return torch.tensor([n / (k * counts[lab]) if counts[lab] else 0.0 for lab in labels])


def weighted_loss(weights: torch.Tensor):
    """A loss_fn for the training loop: class-weighted cross-entropy on the output's logits."""

    def loss(out: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = out.logits.float()
        return F.cross_entropy(logits, batch["labels"], weight=weights.to(logits.device))

    return loss


def oversampled(dataset: Dataset, labels: list[int], seed: int) -> Subset:
    """`dataset` with the examples of each smaller class repeated up to the largest class."""
    by_class: dict[int, list[int]] = {}
    for i, lab in enumerate(labels):
        by_class.setdefault(lab, []).append(i)
    target = max(len(v) for v in by_class.values())
    rng = random.Random(seed)
    indices: list[int] = []
    for members in by_class.values():
        order = members[:]
        rng.shuffle(order)
        indices += [order[j % len(order)] for j in range(target)]
    return Subset(dataset, indices)


def apply_balance(
    name: str | None, train: Dataset, labels: list[int], label_names: list[str], seed: int
) -> tuple[Dataset, Any, str]:
    """(training dataset, loss_fn or None, what was done in words) for `--data.balance`."""
    counts = Counter(label_names[i] for i in labels)
    how = resolve(name, counts)
    shares = ", ".join(f"{lab} {counts[lab]}" for lab in label_names)
    if how == "weights":
        w = class_weights(counts, label_names)
        said = ", ".join(f"{lab} {v:.2f}" for lab, v in zip(label_names, w.tolist(), strict=True))
        return train, weighted_loss(w), f"class-weighted loss ({said}; training split: {shares})"
    if how == "sample":
        sampled = oversampled(train, labels, seed)
        return sampled, None, f"smaller classes repeated to {len(sampled)} examples ({shares})"
    return train, None, ""


def balance_encoded(enc: Encoded, name: str | None, label_names: list[str], seed: int):
    """(`enc` with its training split and loss balanced as `--data.balance` says, what was
    done in words or ""); `enc` is a classification task's encoding (items carry `labels`)."""
    train = enc.data["train"]
    ids = [train[i]["labels"] for i in range(len(train))]
    data, loss_fn, said = apply_balance(name, train, ids, label_names, seed)
    return replace(enc, data={**enc.data, "train": data}, loss_fn=loss_fn), said
