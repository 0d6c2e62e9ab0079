"""Tests for tunelab.data.split: sizes, stratification, determinism and errors."""

from __future__ import annotations

from collections import Counter

import pytest

from tunelab.data.split import check_labels, stratified_split
from tunelab.errors import TunelabError

CLASS_SIZES = {"big": 500, "mid": 230, "small": 47, "tiny": 9}


def make(sizes: dict[str, int] = CLASS_SIZES) -> list[dict[str, str]]:
    return [
        {"text": f"{label} {i}", "label": label} for label, n in sizes.items() for i in range(n)
    ]


def texts(rows: list[dict[str, str]]) -> set[str]:
    return {row["text"] for row in rows}


def test_splits_are_disjoint_and_cover_the_input():
    data = make()
    parts = stratified_split(data)
    assert set(parts) == {"train", "validation", "test"}
    assert sum(len(rows) for rows in parts.values()) == len(data)
    train, val, test = (texts(parts[name]) for name in ("train", "validation", "test"))
    assert not train & val and not train & test and not val & test
    assert train | val | test == texts(data)


@pytest.mark.parametrize(("test_size", "val_size"), [(0.2, 0.1), (0.3, 0.15), (0.1, 0.0)])
def test_total_sizes_hit_target(test_size, val_size):
    data = make()
    parts = stratified_split(data, test_size=test_size, val_size=val_size)
    assert abs(len(parts["test"]) - len(data) * test_size) <= 1
    assert abs(len(parts["validation"]) - len(data) * val_size) <= 1


def test_every_class_keeps_its_share_in_each_split():
    data = make()
    parts = stratified_split(data, test_size=0.2, val_size=0.1)
    for name, fraction in (("test", 0.2), ("validation", 0.1)):
        counts = Counter(row["label"] for row in parts[name])
        for label, n in CLASS_SIZES.items():
            assert abs(counts[label] - n * fraction) <= 1, (name, label)


def test_input_order_kept_within_each_split():
    data = make()
    position = {row["text"]: i for i, row in enumerate(data)}
    for rows in stratified_split(data).values():
        indices = [position[row["text"]] for row in rows]
        assert indices == sorted(indices)


def test_same_seed_same_split_other_seed_other_split():
    data = make()
    first = stratified_split(data, seed=7)
    assert stratified_split(data, seed=7) == first
    other = stratified_split(data, seed=8)
    assert texts(other["test"]) != texts(first["test"])


def test_zero_validation_gives_empty_list():
    parts = stratified_split(make(), val_size=0)
    assert parts["validation"] == []
    assert parts["test"] and parts["train"]


def test_small_classes_still_appear_in_train():
    data = make({"a": 3, "b": 3, "c": 2, "d": 1, "e": 100})
    parts = stratified_split(data, test_size=0.4, val_size=0.5)
    assert {row["label"] for row in parts["train"]} == {"a", "b", "c", "d", "e"}
    assert sum(len(rows) for rows in parts.values()) == len(data)


def test_input_not_modified():
    data = make()
    before = [dict(row) for row in data]
    stratified_split(data)
    assert data == before


def test_one_class_error_names_the_class():
    with pytest.raises(TunelabError, match=r"only one class 'x'.*--data\.label_column"):
        stratified_split(make({"x": 10}))


@pytest.mark.parametrize(
    ("test_size", "val_size", "words"),
    [
        (1.0, 0.1, "test_size"),
        (-0.1, 0.1, "test_size"),
        (0.2, 1.5, "val_size"),
        (0.6, 0.4, "below 1"),
    ],
)
def test_bad_sizes(test_size, val_size, words):
    with pytest.raises(TunelabError, match=words):
        stratified_split(make(), test_size=test_size, val_size=val_size)


def test_check_labels():
    assert check_labels(make()) == ["big", "mid", "small", "tiny"]
    with pytest.raises(TunelabError, match="no examples"):
        check_labels([])
    with pytest.raises(TunelabError, match="label column stars has only one class 'x'"):
        check_labels(make({"x": 2}), label_column="stars")
    with pytest.raises(TunelabError, match="no labels"):
        check_labels([{"text": "a"}, {"text": "b"}])
