"""The baselines beside a classification result: majority class and TF-IDF + logistic
regression, scored with the model's own metrics, and the warnings they raise."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import toy_examples
from tunelab.evaluation.baselines import (
    MAJORITY,
    TFIDF,
    baseline_report,
    baseline_warnings,
    compared_metric,
    fit_baselines,
    format_baselines,
    majority_baseline,
    majority_class,
    score_predictions,
)

LABELS = ["neg", "neu", "pos"]


def _rows(counts: dict[str, int], text: str = "some words here") -> list[dict[str, str]]:
    return [{"text": f"{text} {i}", "label": k} for k, n in counts.items() for i in range(n)]


def test_majority_scores_the_share_of_the_largest_class():
    train = ["pos"] * 64 + ["neu"] * 27 + ["neg"] * 9
    test = ["pos"] * 13 + ["neu"] * 5 + ["neg"] * 2
    m = majority_baseline(train, test, LABELS)
    assert m["predicts"] == "pos"
    assert m["accuracy"] == pytest.approx(13 / 20)
    # only 'pos' is ever right: its F1 is 2p/(1+p) with p its share, the others score 0
    assert m["macro_f1"] == pytest.approx(2 * 0.65 / 1.65 / 3)
    assert m["labels"] == LABELS and m["n"] == 20
    assert [sum(col) for col in zip(*m["confusion_matrix"], strict=True)] == [0, 0, 20]


def test_majority_tie_goes_to_the_first_label():
    assert majority_class(["pos", "neg", "pos", "neg"], LABELS) == "neg"


def test_tfidf_separates_an_easy_toy_set():
    rows = toy_examples(120)
    labels = sorted({r["label"] for r in rows})
    baselines, notes = fit_baselines(rows[:90], rows[90:], labels)
    assert notes == []
    tfidf = baselines[TFIDF]
    assert tfidf["accuracy"] == 1.0 and tfidf["macro_f1"] == 1.0
    assert tfidf["fit_seconds"] >= 0 and tfidf["n"] == 30
    assert baselines[MAJORITY]["accuracy"] == pytest.approx(1 / 3)


def test_tfidf_that_cannot_fit_is_a_note_and_majority_stays(monkeypatch):
    one_class = _rows({"pos": 5})
    baselines, notes = fit_baselines(one_class, _rows({"pos": 2, "neg": 2}), LABELS)
    assert TFIDF not in baselines and baselines[MAJORITY]["predicts"] == "pos"
    assert len(notes) == 1 and notes[0].startswith("TF-IDF baseline skipped: ValueError")

    monkeypatch.setitem(sys.modules, "sklearn.feature_extraction.text", None)
    rows = _rows({"pos": 3, "neg": 3})
    baselines, notes = fit_baselines(rows, rows, LABELS)
    assert TFIDF not in baselines and MAJORITY in baselines
    assert notes == ["TF-IDF baseline skipped: scikit-learn is missing (pip install scikit-learn)"]


def _model(pred: list[str], truth: list[str]) -> dict:
    return score_predictions(pred, truth, LABELS)


TRUTH = ["pos"] * 6 + ["neu"] * 3 + ["neg"] * 1


def _baselines(tfidf_pred: list[str]) -> dict:
    return {
        MAJORITY: majority_baseline(TRUTH, TRUTH, LABELS),
        TFIDF: {**_model(tfidf_pred, TRUTH), "fit_seconds": 0.5},
    }


def test_warns_when_the_model_predicts_one_class():
    model = _model(["pos"] * 10, TRUTH)
    tfidf = ["pos"] * 6 + ["neu"] * 2 + ["pos", "neg"]
    warnings = baseline_warnings(model, _baselines(tfidf), "eval_macro_f1")
    assert len(warnings) == 2
    assert warnings[0].startswith("the model predicts only 'pos' for every test example")
    assert "(10 of them, 60% truly 'pos'): it learned the class shares" in warnings[0]
    assert "--train.lr" in warnings[0]
    assert warnings[1].startswith("the model does not beat TF-IDF + logistic regression")
    # one class, but not the majority one: it did not even learn the class shares
    warnings = baseline_warnings(_model(["neg"] * 10, TRUTH), _baselines(tfidf), "macro_f1")
    assert "(10 of them, 10% truly 'neg'): it learned nothing of the task" in warnings[0]


def test_warns_when_the_model_loses_to_tfidf_and_not_when_it_wins():
    good, fair = TRUTH, ["pos"] * 6 + ["neu"] * 2 + ["pos", "pos"]
    loser = baseline_warnings(_model(fair, TRUTH), _baselines(good), "macro_f1")
    assert len(loser) == 1 and "does not beat TF-IDF" in loser[0] and "test macro_f1" in loser[0]
    assert baseline_warnings(_model(good, TRUTH), _baselines(fair), "macro_f1") == []
    # judged on the run's own metric: better macro-F1 but the same accuracy (0.8) is no win
    other = ["pos"] * 5 + ["neu"] + ["neu"] * 2 + ["pos"] + ["neg"]
    assert baseline_warnings(_model(other, TRUTH), _baselines(fair), "macro_f1") == []
    tied = baseline_warnings(_model(other, TRUTH), _baselines(fair), "eval_accuracy")
    assert len(tied) == 1 and "test accuracy: 0.8000 vs 0.8000" in tied[0]
    # a perfect model ties a perfect baseline: nothing to warn about
    assert baseline_warnings(_model(good, TRUTH), _baselines(good), "macro_f1") == []


def test_without_tfidf_the_model_is_held_against_the_majority_class():
    fair = ["pos"] * 6 + ["neu"] * 2 + ["pos", "pos"]
    only_majority = {MAJORITY: majority_baseline(TRUTH, TRUTH, LABELS)}
    assert baseline_warnings(_model(fair, TRUTH), only_majority, "macro_f1") == []
    model = _model(["pos"] * 9 + ["neu"], TRUTH)
    warnings = baseline_warnings(model, only_majority, "accuracy", split="eval")
    assert warnings == [
        "the model does not beat always answering 'pos' on eval accuracy: 0.6000 vs 0.6000; "
        + warnings[0].split("; ", 1)[1]
    ]


def test_compared_metric_falls_back_to_macro_f1_for_losses():
    assert compared_metric("eval_loss") == "macro_f1"
    assert compared_metric("loss") == "macro_f1"
    assert compared_metric(None) == "macro_f1"
    assert compared_metric("eval_accuracy") == "accuracy"
    assert compared_metric("weighted_f1") == "weighted_f1"


def test_report_contract_and_its_text():
    rows = toy_examples(60)
    train, test = rows[:45], rows[45:]
    labels = sorted({r["label"] for r in rows})
    model = score_predictions([labels[0]] * len(test), [r["label"] for r in test], labels)
    block = baseline_report(train, test, model, "eval_weighted_f1", notes=["a note"])
    assert set(block) == {"baselines", "warnings", "baseline_notes"}
    assert set(block["baselines"]) == {MAJORITY, TFIDF}
    for b in block["baselines"].values():
        assert {"accuracy", "macro_f1", "weighted_f1", "per_class", "n"} <= set(b)
    assert block["baseline_notes"] == ["a note"]
    assert any("predicts only" in w for w in block["warnings"])
    text = format_baselines(model, block, "eval_weighted_f1")
    head, *lines = text.splitlines()
    assert head.split()[-3:] == ["accuracy", "macro_f1", "weighted_f1"]
    assert lines[0].split()[0] == "model"
    assert lines[1].lstrip().startswith("TF-IDF + logistic regression")
    assert (
        lines[2]
        .lstrip()
        .startswith(f"majority class ({block['baselines'][MAJORITY]['predicts']!r})")
    )
    assert "note: a note" in text and "warning: the model predicts only" in text
