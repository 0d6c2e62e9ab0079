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
