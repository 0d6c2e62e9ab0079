"""Stratified train/validation/test splits and label checks."""

from __future__ import annotations

import math
import random

from tunelab.errors import TunelabError

SPLITS = ("train", "validation", "test")


def check_labels(examples: list[dict[str, str]], *, label_column: str = "label") -> list[str]:
    """Return the sorted distinct labels, making sure there is something to classify.

    Args:
        examples: Dicts with a ``"label"`` key.
        label_column: Name of the source column, only used in error messages.

    Returns:
        The distinct labels, sorted.

    Raises:
        TunelabError: If there are no examples, a row has no label, or only one class exists.
    """
    if not examples:
        raise TunelabError("no examples: the data is empty after loading and cleaning")
    if any(example.get("label") is None for example in examples):
        raise TunelabError(
            f"examples have no labels; name the label column with --data.label_column "
            f"(now '{label_column}')"
        )
    labels = sorted({example["label"] for example in examples})
    if len(labels) < 2:
        raise TunelabError(
            f"label column {label_column} has only one class '{labels[0]}': classification "
            "needs at least two; check --data.label_column"
        )
    return labels


def _apportion(sizes: dict[str, int], fraction: float) -> dict[str, int]:
    """Share ``round(total * fraction)`` rows among classes in proportion to their sizes.

    Largest-remainder method: each class gets the floor of its exact share, and the rows left
    over go to the classes with the largest fractional parts. So the total hits the target
    exactly and no class is more than one row away from its exact share.
    """
    exact = {label: n * fraction for label, n in sizes.items()}
    counts = {label: math.floor(share) for label, share in exact.items()}
    left = round(sum(sizes.values()) * fraction) - sum(counts.values())
    # Ties go to the bigger class, then alphabetical order, so the result is deterministic.
    order = sorted(exact, key=lambda label: (counts[label] - exact[label], -sizes[label], label))
    for label in order[: max(left, 0)]:
        counts[label] += 1
    return counts


def stratified_split(
    examples: list[dict[str, str]], test_size: float = 0.2, val_size: float = 0.1, seed: int = 0
) -> dict[str, list[dict[str, str]]]:
    """Split examples into train, validation and test, keeping label proportions.

    Each class is shuffled with ``random.Random(seed)`` and cut into test, validation and
    train. The number of test (validation) rows is ``round(len(examples) * test_size)`` in
    total and within one row of each class's exact share, except that every class keeps at
    least one training row. Within each split the input order is kept.

    Args:
        examples: Dicts with ``"text"`` and ``"label"``.
        test_size: Fraction of all examples for the test split, in [0, 1).
        val_size: Fraction of all examples for the validation split, in [0, 1); 0 gives an
            empty validation list.
        seed: Seed of the shuffle; the same seed gives the same split.

    Returns:
        ``{"train": [...], "validation": [...], "test": [...]}``.

    Raises:
        TunelabError: If the sizes are out of range or the labels are unusable.
    """
    for name, size in (("test_size", test_size), ("val_size", val_size)):
        if not 0 <= size < 1:
            raise TunelabError(
                f"--data.{name} is {size}; it must be a fraction in [0, 1), e.g. 0.2 for 20%"
            )
    if test_size + val_size >= 1:
        raise TunelabError(
            f"--data.test_size ({test_size}) + --data.val_size ({val_size}) must be below 1 "
            "to leave examples for training; lower one of them"
        )
    labels = check_labels(examples)
    by_label: dict[str, list[int]] = {label: [] for label in labels}
    for index, example in enumerate(examples):
        by_label[example["label"]].append(index)
    sizes = {label: len(indices) for label, indices in by_label.items()}
    n_test = _apportion(sizes, test_size)
    n_val = _apportion(sizes, val_size)

    rng = random.Random(seed)
    chosen: dict[str, list[int]] = {split: [] for split in SPLITS}
    for label in labels:  # sorted, so the random stream is consumed in a fixed order
        indices = by_label[label]
        rng.shuffle(indices)
        test, val = n_test[label], n_val[label]
        # A class needs at least one training row to be learnt at all: take it back from
        # validation first, since the test split is the one the results are reported on.
        while test + val > len(indices) - 1 and (val or test):
            if val:
                val -= 1
            else:
                test -= 1
        chosen["test"] += indices[:test]
        chosen["validation"] += indices[test : test + val]
        chosen["train"] += indices[test + val :]
    return {split: [examples[i] for i in sorted(chosen[split])] for split in SPLITS}
