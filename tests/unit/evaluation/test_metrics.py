"""ClassificationMetrics against sklearn, streaming, reset, the table and metric_value."""

from __future__ import annotations

import json

import pytest
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from tunelab.errors import TunelabError
from tunelab.evaluation.metrics import ClassificationMetrics, format_metrics_table, metric_value

NAMES = ["negative", "neutral", "positive", "mixed"]


def _random_batches(seed: int, sizes: list[int], k: int, never: int | None = None):
    """Random (preds, labels) batches; class `never` is never predicted when given."""
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for size in sizes:
        labels = torch.randint(0, k, (size,), generator=gen)
        preds = torch.randint(0, k, (size,), generator=gen)
        if never is not None:
            preds[preds == never] = (never + 1) % k
        batches.append((preds, labels))
    return batches


def _assert_matches_sklearn(result: dict, preds: torch.Tensor, labels: torch.Tensor) -> None:
    k = len(result["labels"])
    y_true, y_pred, ids = labels.tolist(), preds.tolist(), list(range(k))
    assert result["n"] == len(y_true)
    assert result["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-9)
    assert result["confusion_matrix"] == confusion_matrix(y_true, y_pred, labels=ids).tolist()
    for avg in ("macro", "micro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=ids, average=avg, zero_division=0
        )
        assert result[f"{avg}_f1"] == pytest.approx(f, abs=1e-9)
        if avg != "weighted":
            assert result[f"{avg}_precision"] == pytest.approx(p, abs=1e-9)
            assert result[f"{avg}_recall"] == pytest.approx(r, abs=1e-9)
    p, r, f, s = precision_recall_fscore_support(
        y_true, y_pred, labels=ids, average=None, zero_division=0
    )
    for i, name in enumerate(result["labels"]):
        row = result["per_class"][name]
        assert row["precision"] == pytest.approx(p[i], abs=1e-9)
        assert row["recall"] == pytest.approx(r[i], abs=1e-9)
        assert row["f1"] == pytest.approx(f[i], abs=1e-9)
        assert row["support"] == s[i]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_sklearn_over_several_updates(seed: int) -> None:
    batches = _random_batches(seed, [7, 31, 1, 64, 13], len(NAMES))
    metrics = ClassificationMetrics(NAMES)
    for preds, labels in batches:
        metrics.update(preds, labels)
    result = metrics.compute()
    _assert_matches_sklearn(
        result, torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    )
    # micro == accuracy for single-label multiclass, even though computed separately
    assert result["micro_f1"] == pytest.approx(result["accuracy"], abs=1e-12)


def test_class_never_predicted_uses_zero_division_zero() -> None:
    batches = _random_batches(3, [50, 50], len(NAMES), never=2)
    metrics = ClassificationMetrics(NAMES)
    for preds, labels in batches:
        metrics.update(preds, labels)
    result = metrics.compute()
    assert result["per_class"]["positive"]["precision"] == 0.0
    assert result["per_class"]["positive"]["f1"] == 0.0
    _assert_matches_sklearn(
        result, torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    )


def test_class_absent_from_truth_and_predictions() -> None:
    metrics = ClassificationMetrics(NAMES)
    metrics.update(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 0, 0]))
    result = metrics.compute()
    assert result["per_class"]["mixed"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 0,
    }
    _assert_matches_sklearn(result, torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 0, 0]))


def test_streaming_in_chunks_equals_one_update() -> None:
    ((preds, labels),) = _random_batches(4, [200], len(NAMES))
    whole, chunked = ClassificationMetrics(NAMES), ClassificationMetrics(NAMES)
    whole.update(preds, labels)
    for p, y in zip(preds.split(17), labels.split(17), strict=True):
        chunked.update(p, y)
    assert chunked.compute() == whole.compute()


def test_compute_is_json_serialisable_python_types() -> None:
    metrics = ClassificationMetrics(NAMES)
    metrics.update(torch.tensor([0, 1, 2], dtype=torch.int32), torch.tensor([0, 2, 2]))
    result = metrics.compute()
    assert json.loads(json.dumps(result)) == result
    assert type(result["accuracy"]) is float and type(result["n"]) is int
    assert result["labels"] == NAMES


def test_empty_compute_is_all_zero() -> None:
    result = ClassificationMetrics(NAMES).compute()
    assert result["n"] == 0
    assert result["accuracy"] == result["macro_f1"] == result["weighted_f1"] == 0.0


def test_reset_forgets_everything() -> None:
    metrics = ClassificationMetrics(NAMES)
    metrics.update(torch.tensor([0, 1, 2]), torch.tensor([3, 1, 2]))
    metrics.reset()
    assert metrics.compute()["n"] == 0
    metrics.update(torch.tensor([1]), torch.tensor([1]))
    result = metrics.compute()
    assert result["n"] == 1 and result["accuracy"] == 1.0


@pytest.mark.parametrize(
    ("preds", "labels"),
    [
        ([0, 4], [0, 1]),  # prediction out of range
        ([0, 1], [-1, 1]),  # label out of range
        ([0, 1, 2], [0, 1]),  # lengths differ
    ],
)
def test_bad_update_is_a_value_error(preds: list[int], labels: list[int]) -> None:
    with pytest.raises(ValueError):
        ClassificationMetrics(NAMES).update(torch.tensor(preds), torch.tensor(labels))


def test_float_tensors_are_rejected() -> None:
    with pytest.raises(ValueError, match="integer"):
        ClassificationMetrics(NAMES).update(torch.tensor([0.0]), torch.tensor([0]))


def test_table_shows_names_accuracy_and_matrix() -> None:
    metrics = ClassificationMetrics(["negative", "a_rather_long_label_name"])
    metrics.update(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 0, 0]))
    table = format_metrics_table(metrics.compute())
    assert "accuracy" in table and "0.7500" in table
    assert "negative" in table and "a_rather_long_label_name" in table
    assert "true \\ pred" in table
    # the matrix comes last; the row of the true class "negative" holds 2 right, 1 wrong
    row = [line for line in table.splitlines() if line.startswith("negative ")][-1]
    assert row.split()[1:] == ["2", "1"]


def test_table_numbers_classes_when_cut_names_collide() -> None:
    metrics = ClassificationMetrics(["category_alpha", "category_beta"])
    metrics.update(torch.tensor([0, 1]), torch.tensor([0, 1]))
    table = format_metrics_table(metrics.compute())
    assert "#0" in table and "#1 category_beta" in table


def test_metric_value_lookups() -> None:
    metrics = {"accuracy": 0.5, "macro_f1": 0.25, "loss": 1.5, "n": 4, "per_class": {}}
    assert metric_value(metrics, "accuracy") == 0.5
    assert metric_value(metrics, "macro_f1") == 0.25
    assert metric_value(metrics, "loss") == 1.5
    assert metric_value(metrics, "eval_loss") == 1.5
    assert metric_value({"eval_loss": 2.0}, "loss") == 2.0
    assert metric_value(metrics, "eval_accuracy") == 0.5


def test_metric_value_unknown_lists_available_names() -> None:
    metrics = {"accuracy": 0.5, "macro_f1": 0.25, "n": 4, "per_class": {}}
    with pytest.raises(TunelabError, match="'n'"):
        metric_value(metrics, "n")
    with pytest.raises(TunelabError, match="macro_f2") as info:
        metric_value(metrics, "macro_f2")
    message = str(info.value)
    assert "accuracy" in message and "macro_f1" in message
    assert "per_class" not in message and "\n" not in message
