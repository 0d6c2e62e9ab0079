"""Validation of a pre-training objective: summed metrics over the held-out blocks/pairs.

Each objective's `eval_sums` returns (sum, count) per metric for a batch; here they are added
over the whole validation set and divided once, so a metric is a mean over tokens (losses,
accuracies) or examples (NSP), whatever the batch sizes. The corruption (masking, NSP pairs,
RTD sampling) is drawn from generators re-seeded for every evaluation, so successive
validation losses of a run are measured on exactly the same inputs.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import torch
from tqdm.auto import tqdm

from tunelab.objectives.corpus import TokenStore
from tunelab.objectives.options import PretrainOptions


def evaluate_objective(
    model,
    obj: ModuleType,
    data,
    store: TokenStore,
    tok,
    p: PretrainOptions,
    batch_size: int,
    seed: int = 1234,
    progress: bool = False,
) -> dict[str, Any]:
    """Mean validation metrics of `model` on `data` (loss, perplexity, accuracies)."""
    collate = obj.make_collate(tok, p, store, torch.Generator().manual_seed(seed))
    sampler = torch.Generator().manual_seed(seed + 1)
    device = next(model.parameters()).device
    sums: dict[str, list[float]] = {}
    starts = range(0, len(data), batch_size)
    with torch.no_grad():
        for start in tqdm(starts, desc="validating", disable=not progress, leave=False):
            batch = collate([data[i] for i in range(start, min(start + batch_size, len(data)))])
            batch = {k: v.to(device) for k, v in batch.items()}
            for k, (s, n) in obj.eval_sums(model, batch, sampler).items():
                acc = sums.setdefault(k, [0.0, 0])
                acc[0] += s
                acc[1] += n
    metrics: dict[str, Any] = {k: s / n for k, (s, n) in sums.items() if n}
    if "loss" not in metrics:  # mlm+nsp: BERT's summed loss; nsp alone: its own loss
        metrics["loss"] = sum(v for k, v in metrics.items() if k.endswith("_loss"))
    if p.objective in ("clm", "mlm"):
        metrics["perplexity"] = math.exp(min(metrics["loss"], 50.0))
    for key in ("mlm_loss", "gen_loss"):
        if key in metrics:
            metrics[key.replace("loss", "perplexity")] = math.exp(min(metrics[key], 50.0))
    metrics["n"] = len(data)
    return metrics


def headline_metric(objective: str) -> str:
    """The metric drawn next to the validation loss in curves.png."""
    return {"nsp": "nsp_accuracy", "mlm+nsp": "nsp_accuracy", "rtd": "disc_accuracy"}.get(
        objective, "perplexity"
    )
