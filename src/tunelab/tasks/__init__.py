"""Tasks: what a fine-tuning run learns to do. One module each, behind the `Task` protocol in
`tasks/base.py`; the registry lists them without importing them (no torch)."""

from __future__ import annotations

TASKS: dict[str, str] = {
    "classification": "tunelab.tasks.classification",
    "causal_lm": "tunelab.tasks.generative",
    "seq2seq": "tunelab.tasks.generative",
}
"""Task name -> the module that implements it."""

GENERATIVE_TASKS = ("causal_lm", "seq2seq")
LM_METRICS = ("loss", "perplexity")
"""Validation metrics of a generative task (the best checkpoint has the lowest)."""
CLASSIFICATION_METRICS = (
    "loss",
    "accuracy",
    "macro_precision",
    "macro_recall",
    "macro_f1",
    "micro_precision",
    "micro_recall",
    "micro_f1",
    "weighted_f1",
)
"""Validation metrics of a classification run (`train.metric`, with or without `eval_`)."""
