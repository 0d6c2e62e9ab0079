"""Streaming classification metrics built on one confusion matrix.

Only a (k x k) int64 confusion matrix is kept between `update` calls, so evaluating a large
split costs no memory beyond it. Every metric is derived from the matrix in `compute`, with
sklearn's `zero_division=0` convention: a ratio whose denominator is 0 is 0.0.
"""

from __future__ import annotations

from typing import Any

import torch

from tunelab.errors import TunelabError

# Numeric entries of a metrics dict that are counts, not something to optimise.
_NOT_METRICS = frozenset({"n"})


class ClassificationMetrics:
    """Accumulates single-label multiclass predictions into a confusion matrix.

    Args:
        label_names: One name per class id, in id order.
    """

    def __init__(self, label_names: list[str]) -> None:
        if not label_names:
            raise ValueError("ClassificationMetrics needs at least one label name")
        self.label_names = [str(name) for name in label_names]
        self.num_labels = len(self.label_names)
        self.confusion = torch.zeros(self.num_labels, self.num_labels, dtype=torch.int64)

    def update(self, preds: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch of predicted and true class ids (1-D integer tensors, any device).

        Raises:
            ValueError: Shapes differ, tensors are not 1-D integers, or an id is outside
                [0, num_labels) — a bug in the caller, not a user mistake.
        """
        if preds.ndim != 1 or labels.ndim != 1 or preds.shape != labels.shape:
            raise ValueError(
                f"preds and labels must be 1-D of equal length, got {tuple(preds.shape)} "
                f"and {tuple(labels.shape)}"
            )
        if preds.is_floating_point() or labels.is_floating_point():
            raise ValueError("preds and labels must be integer class ids, not floats")
        k = self.num_labels
        # bincount runs on whatever device the batch lives on; only k*k counts move to CPU
        preds, labels = preds.detach().long(), labels.detach().long()
        for what, ids in (("preds", preds), ("labels", labels)):
            if ids.numel() and (ids.min() < 0 or ids.max() >= k):
                raise ValueError(f"{what} holds class ids outside [0, {k}): {ids.unique()}")
        counts = torch.bincount(labels * k + preds.to(labels.device), minlength=k * k)
        self.confusion += counts.reshape(k, k).cpu()

    def reset(self) -> None:
        """Forget everything seen so far."""
        self.confusion.zero_()

    def compute(self) -> dict[str, Any]:
        """All metrics as a JSON-serialisable dict of python floats, ints and lists."""
        cm = self.confusion.double()
        tp = cm.diagonal()
        predicted = cm.sum(dim=0)  # column sums: how often each class was predicted
        support = cm.sum(dim=1)  # row sums: how often each class was the truth
        n = int(self.confusion.sum())

        precision = _safe_div(tp, predicted)
        recall = _safe_div(tp, support)
        # 2tp / (2tp + fp + fn) equals 2PR / (P + R) and is exactly how sklearn computes it
        f1 = _safe_div(2 * tp, predicted + support)

        tp_all, pred_all, true_all = float(tp.sum()), float(predicted.sum()), float(support.sum())
        micro_p = tp_all / pred_all if pred_all else 0.0
        micro_r = tp_all / true_all if true_all else 0.0
        micro_f1 = 2 * tp_all / (pred_all + true_all) if pred_all + true_all else 0.0

        per_class = {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(self.label_names)
        }
        return {
            "accuracy": tp_all / n if n else 0.0,
            "macro_precision": float(precision.mean()),
            "macro_recall": float(recall.mean()),
            "macro_f1": float(f1.mean()),
            "micro_precision": micro_p,
            "micro_recall": micro_r,
            "micro_f1": micro_f1,
            "weighted_f1": float((f1 * support).sum()) / n if n else 0.0,
            "per_class": per_class,
            "confusion_matrix": self.confusion.tolist(),
            "labels": list(self.label_names),
            "n": n,
        }


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """Elementwise num / den with 0.0 where den is 0 (sklearn's zero_division=0)."""
    return torch.where(den > 0, num / den.clamp(min=1), torch.zeros_like(num))


def lower_is_better(metric: str) -> bool:
    """Losses and perplexities improve downwards; every other metric upwards."""
    return "loss" in metric or "perplexity" in metric


def metric_value(metrics: dict[str, Any], name: str) -> float:
    """The value of metric `name` in `metrics`, for best-checkpoint choice and early stopping.

    `loss` and `eval_loss` (any `eval_` prefix) name the same entry.

    Raises:
        TunelabError: `name` is not a numeric metric of `metrics`; the message lists them.
    """
    available = [
        k
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k not in _NOT_METRICS
    ]
    bare = name.removeprefix("eval_")
    for key in (name, bare, f"eval_{bare}"):
        if key in available:
            return float(metrics[key])
    raise TunelabError(
        f"unknown metric {name!r}: set train.metric to one of {', '.join(available)}"
    )


def format_metrics_table(metrics: dict[str, Any]) -> str:
    """Render `ClassificationMetrics.compute()` output as a plain-text report.

    A summary block, then per-class precision / recall / F1 / support, then the confusion
    matrix (true labels down, predicted across, column heads abbreviated to fit).
    """
    m = metrics
    names = [str(n) for n in m["labels"]]
    longest = max(len(n) for n in names)
    macro = f"P {m['macro_precision']:.4f}  R {m['macro_recall']:.4f}  F1 {m['macro_f1']:.4f}"
    lines = [
        f"accuracy     {m['accuracy']:.4f}    n {m['n']}",
        f"macro        {macro}",
        f"micro        F1 {m['micro_f1']:.4f}    weighted F1 {m['weighted_f1']:.4f}",
    ]
    for key in ("loss", "eval_loss"):
        if isinstance(m.get(key), int | float):
            lines.append(f"{key:<12} {m[key]:.4f}")

    width = max(5, min(24, longest))
    lines += ["", f"{'label':<{width}}  precision  recall      f1  support"]
    for name in names:
        row = m["per_class"][name]
        lines.append(
            f"{_fit(name, width):<{width}}  {row['precision']:>9.4f}  {row['recall']:>6.4f}"
            f"  {row['f1']:>6.4f}  {row['support']:>7d}"
        )

    cm = m["confusion_matrix"]
    biggest = max((v for row in cm for v in row), default=0)
    head_w = max(len(str(biggest)), min(8, longest), 3)
    heads = [_fit(n, head_w) for n in names]
    rows = names
    if len(set(heads)) < len(heads):
        # cut names collide: number the classes, and put the numbers on the rows too
        heads = [f"#{i}" for i in range(len(names))]
        rows = [f"#{i} {n}" for i, n in enumerate(names)]
    cell = max(len(str(biggest)), *(len(h) for h in heads))
    corner = "true \\ pred"
    row_w = max(len(corner), min(24, max(len(r) for r in rows)))
    lines += ["", f"{corner:<{row_w}}  " + " ".join(f"{h:>{cell}}" for h in heads)]
    for label, counts in zip(rows, cm, strict=True):
        cells = " ".join(f"{v:>{cell}}" for v in counts)
        lines.append(f"{_fit(label, row_w):<{row_w}}  {cells}")
    return "\n".join(lines)


def _fit(text: str, width: int) -> str:
    """`text` cut to `width` characters, marking a cut with a trailing '.'."""
    return text if len(text) <= width else text[: width - 1] + "."
