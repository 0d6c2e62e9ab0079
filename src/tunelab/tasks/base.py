"""The Task protocol: what the one fine-tuning recipe asks of a task.

`recipes/finetune.py` runs every task the same way — read splits, load a model, encode,
apply the strategy, train in the one loop, test, save — and asks the task only for what
differs: its data (labelled texts or prompt/response pairs), its model (a classifier with a
fresh head, or a language model), its encoding, its evaluation and its marker fields.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from tunelab.data.options import DataOptions
from tunelab.errors import TunelabError
from tunelab.models.options import ModelOptions
from tunelab.tasks import TASKS

if TYPE_CHECKING:
    from tunelab.models.load import Loaded

Splits = dict[str, list[dict[str, Any]]]
"""train / validation / test rows (a split may be empty)."""


@dataclass
class Encoded:
    """A task's encoded splits and how to batch and evaluate them."""

    data: dict[str, Any]
    """Split name -> dataset (only the non-empty splits)."""
    collate: Callable[[list], dict[str, Any]]
    evaluate: Callable[..., dict[str, Any]]
    """(model, dataset, desc, progress, collate=None) -> metrics of `model` on `dataset`."""
    loss_fn: Callable[[Any, dict[str, Any]], Any] | None = None
    """The training loss from (model output, batch), or None for the output's own loss."""


def own_split_files(
    data: DataOptions,
    seed: int,
    read: Callable[[str, str], list[dict[str, Any]]],
    split: Callable[[list, float, float, int], Splits],
) -> Splits:
    """The splits when the user gave their own files: `data.train_file`, and the validation and
    test files where given, else cut from the training rows by `split(rows, test, val, seed)`.
    `read(source, what)` reads and cleans one file."""
    train = read(data.train_file, "train")
    val = read(data.validation_file, "validation") if data.validation_file else None
    test = read(data.test_file, "test") if data.test_file else None
    cut = split(
        train, 0.0 if test else data.test_size, 0.0 if val is not None else data.val_size, seed
    )
    return {
        "train": cut["train"],
        "validation": val if val is not None else cut["validation"],
        "test": test if test else cut["test"],
    }


class Task(Protocol):
    name: str
    generative: bool
    """Generative tasks validate on loss (lowest is best), measure the base model before
    training and refuse strategies that train a classification head only."""

    def read_splits(self, data: DataOptions, seed: int, quiet: bool) -> Splits: ...

    def describe(self, splits: Splits) -> str:
        """One line on the split sizes (and labels) for the user."""
        ...

    def load(self, model: ModelOptions, splits: Splits) -> Loaded: ...

    def encode(
        self, splits: Splits, loaded: Loaded, data: DataOptions, eval_batch_size: int
    ) -> Encoded: ...

    def marker_fields(self, loaded: Loaded, data: DataOptions, splits: Splits) -> dict[str, Any]:
        """What the run marker records for this task (labels, lengths, chat template)."""
        ...


def get_task(name: str) -> Task:
    """The task `name` (imports its module: torch, transformers)."""
    if name not in TASKS:
        raise TunelabError(f"unknown task {name!r}: set --task to one of {', '.join(TASKS)}")
    return importlib.import_module(TASKS[name]).task(name)
