"""Baselines beside every classification result: what a model must beat to be worth its cost.

Two baselines, fitted on the same train rows and scored on the same test rows as the model,
through the same `ClassificationMetrics`, so every number is comparable to the model's:

- `majority`: always answer the most frequent training label (ties: the first in label order).
  Its accuracy is that label's share of the test rows; it is the chance level a model that has
  learned only the class shares reaches.
- `tfidf_lr`: TF-IDF of word 1-2 grams (sublinear tf) into a logistic regression with
  class_weight="balanced", so a rare class is not ignored. Seconds on thousands of rows.

Tunelab's classification rows hold one `text`; a pair task would join its two texts with a
space before calling `fit_baselines` (a bag of words has no notion of which text a word came
from), which is all a TF-IDF baseline can do with pairs.

scikit-learn is a dependency of tunelab, not an optional extra: the baselines exist to warn a
user whose model learned nothing (all rows one class, or worse than a 6-second bag of words),
and an extra that most installs lack would warn nobody. It costs little beside torch. Should it
still fail to import, the TF-IDF baseline is skipped with one line and the majority one stays.

`baseline_report` gives what metrics.json gains, the contract other tools read:

    "baselines": {"majority": {<ClassificationMetrics.compute() keys>, "predicts": LABEL},
                  "tfidf_lr": {<ClassificationMetrics.compute() keys>, "fit_seconds": S}},
    "warnings": ["the model predicts only 'pos' for every test example ...", ...],
    "baseline_notes": ["TF-IDF baseline skipped: ..."]     (only when there is something to say)

`tfidf_lr` is absent when it could not be fitted (the note says why).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import torch

from tunelab.evaluation.metrics import ClassificationMetrics, lower_is_better

MAJORITY = "majority"
TFIDF = "tfidf_lr"
TITLES = {MAJORITY: "majority class", TFIDF: "TF-IDF + logistic regression"}
"""Baseline key -> how reports name it."""
DEFAULT_METRIC = "macro_f1"
"""What baselines are compared on when the run selected on something they lack (the loss)."""


def score_predictions(
    predicted: list[str], truth: list[str], label_names: list[str]
) -> dict[str, Any]:
    """`ClassificationMetrics.compute()` of label-name predictions against the true names."""
    index = {name: i for i, name in enumerate(label_names)}
    metrics = ClassificationMetrics(label_names)
    if truth:
        metrics.update(
            torch.tensor([index[p] for p in predicted]), torch.tensor([index[t] for t in truth])
        )
    return metrics.compute()


def majority_class(train_labels: list[str], label_names: list[str]) -> str:
    """The most frequent training label; a tie goes to the first in `label_names` order."""
    counts = Counter(train_labels)
    return max(label_names, key=lambda name: (counts[name], -label_names.index(name)))


def majority_baseline(
    train_labels: list[str], test_labels: list[str], label_names: list[str]
) -> dict[str, Any]:
    """Metrics of always answering the majority training label on the test labels."""
    label = majority_class(train_labels, label_names)
    return {
        **score_predictions([label] * len(test_labels), test_labels, label_names),
        "predicts": label,
    }


def tfidf_baseline(
    train_texts: list[str],
    train_labels: list[str],
    test_texts: list[str],
    test_labels: list[str],
    label_names: list[str],
) -> dict[str, Any]:
    """Metrics of TF-IDF (word 1-2 grams, sublinear tf) + balanced logistic regression.

    Raises:
        ImportError: scikit-learn is not installed.
        ValueError: nothing to fit (an empty vocabulary, a single training class).
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=200_000)
    features = vectorizer.fit_transform(train_texts)
    model = LogisticRegression(class_weight="balanced", max_iter=1000)
    model.fit(features, train_labels)
    predicted = [str(p) for p in model.predict(vectorizer.transform(test_texts))]
    seconds = time.perf_counter() - t0
    return {
        **score_predictions(predicted, test_labels, label_names),
        "fit_seconds": round(seconds, 2),
    }


def fit_baselines(
    train: list[dict[str, Any]],
    test: list[dict[str, Any]],
    label_names: list[str],
    tfidf: bool = True,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """(baselines, notes): the majority and (with `tfidf`) TF-IDF baselines of `train` rows
    ({"text", "label"}) scored on `test` rows; a note says why TF-IDF was skipped."""
    train_labels = [str(r["label"]) for r in train]
    test_labels = [str(r["label"]) for r in test]
    foreign = sorted((set(train_labels) | set(test_labels)) - set(label_names))
    if foreign:
        return {}, [f"baselines skipped: labels {foreign[:5]} are not the model's {label_names}"]
    out = {MAJORITY: majority_baseline(train_labels, test_labels, label_names)}
    if not tfidf:
        return out, []
    try:
        texts = [str(r["text"]) for r in train], [str(r["text"]) for r in test]
        out[TFIDF] = tfidf_baseline(texts[0], train_labels, texts[1], test_labels, label_names)
    except ImportError:
        return out, ["TF-IDF baseline skipped: scikit-learn is missing (pip install scikit-learn)"]
    except Exception as exc:  # a baseline must never cost the user the run it stands beside
        return out, [f"TF-IDF baseline skipped: {type(exc).__name__}: {_first_line(exc)}"]
    return out, []


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def compared_metric(metric: str | None) -> str:
    """The metric baselines are compared on: the run's selection metric (`eval_` prefix
    dropped) when it is a higher-is-better classification metric, else macro-F1."""
    bare = (metric or DEFAULT_METRIC).removeprefix("eval_")
    known = {"accuracy", "weighted_f1"} | {
        f"{kind}_{what}" for kind in ("macro", "micro") for what in ("precision", "recall", "f1")
    }
    return bare if bare in known and not lower_is_better(bare) else DEFAULT_METRIC


def hint() -> str:
    """What to try when a classifier lost to its baselines (docs/small-data.md)."""
    return (
        "train longer (--train.min_steps, --train.epochs), balance the classes"
        " (--data.balance weights or sample), try another --train.lr"
    )


def baseline_warnings(
    model: dict[str, Any],
    baselines: dict[str, dict[str, Any]],
    metric: str | None = None,
    split: str = "test",
) -> list[str]:
    """One line per problem of `model` (`ClassificationMetrics.compute()` on `split`): it
    predicts a single class for every row, or it does not beat the strongest baseline
    (TF-IDF, else majority) on `compared_metric(metric)`."""
    out = []
    names, cm, n = model["labels"], model["confusion_matrix"], model["n"]
    predicted = [j for j in range(len(names)) if any(row[j] for row in cm)]
    truths = sum(1 for row in cm if any(row))
    if len(predicted) == 1 and n > 1 and truths > 1:
        label = names[predicted[0]]
        share = sum(cm[predicted[0]]) / n
        learned = (
            "the class shares, not the task"
            if baselines.get(MAJORITY, {}).get("predicts") == label
            else "nothing of the task"
        )
        out.append(
            f"the model predicts only {label!r} for every {split} example ({n} of them, "
            f"{share:.0%} truly {label!r}): it learned {learned}; {hint()}"
        )
    key = TFIDF if TFIDF in baselines else MAJORITY
    if key not in baselines:
        return out
    name = compared_metric(metric)
    mine, theirs = float(model[name]), float(baselines[key][name])
    if mine <= theirs and mine < 1.0:  # a perfect score ties a perfect baseline, not a loss
        what = (
            f"TF-IDF + logistic regression (fitted in {baselines[key]['fit_seconds']:.1f} s)"
            if key == TFIDF
            else f"always answering {baselines[key]['predicts']!r}"
        )
        out.append(
            f"the model does not beat {what} on {split} {name}: {mine:.4f} vs {theirs:.4f}; "
            f"{hint()}; or keep the simpler model"
        )
    return out


def baseline_report(
    train: list[dict[str, Any]],
    test: list[dict[str, Any]],
    model: dict[str, Any],
    metric: str | None = None,
    split: str = "test",
    tfidf: bool = True,
    notes: list[str] | None = None,
) -> dict[str, Any]:
    """What a result gains beside the model's metrics on `test` (see the module docstring):
    `baselines`, `warnings` and, when there is something to say, `baseline_notes` (`notes`
    first: the caller's own, e.g. where the training rows came from)."""
    baselines, skipped = fit_baselines(train, test, model["labels"], tfidf)
    out: dict[str, Any] = {
        "baselines": baselines,
        "warnings": baseline_warnings(model, baselines, metric, split),
    }
    if notes or skipped:
        out["baseline_notes"] = [*(notes or []), *skipped]
    return out


def format_baselines(
    model: dict[str, Any], block: dict[str, Any], metric: str | None = None, split: str = "test"
) -> str:
    """The model's scores beside its baselines, then notes and warnings, as plain text.

    `model`: its metrics on `split`; `block`: a dict holding `baselines`, `warnings` and maybe
    `baseline_notes` (metrics.json, or the result of `tunelab eval`)."""
    baselines = block.get("baselines") or {}
    names = ["accuracy", DEFAULT_METRIC]
    if compared_metric(metric) not in names:
        names.append(compared_metric(metric))
    rows = [("model", model, "")]
    if TFIDF in baselines:
        b = baselines[TFIDF]
        rows.append((TITLES[TFIDF], b, f"  fitted in {b.get('fit_seconds', 0):.1f} s"))
    if MAJORITY in baselines:
        b = baselines[MAJORITY]
        rows.append((f"{TITLES[MAJORITY]} ({b.get('predicts', '?')!r})", b, ""))
    head = f"baselines on the same {split} rows"
    width = max(len(head), *(len(r[0]) + 2 for r in rows))
    lines = []
    if len(rows) > 1:
        lines.append(f"{head:<{width}}" + "".join(f"{n:>12}" for n in names))
        for title, m, tail in rows:
            cells = "".join(f"{float(m.get(n, float('nan'))):>12.4f}" for n in names)
            lines.append(f"  {title:<{width - 2}}{cells}{tail}")
    lines += [f"note: {x}" for x in block.get("baseline_notes", [])]
    lines += [f"warning: {x}" for x in block.get("warnings", [])]
    return "\n".join(lines)
