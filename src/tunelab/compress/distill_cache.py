"""Teacher logits computed once, for small data trained for several epochs:
`cache_teacher_logits` runs the teacher over a data set, `attach_teacher_logits` hands the
cached rows to `Distiller` in each batch (`teacher_logits`) instead of a live teacher.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from tunelab.compress.distill import _wide, kd_rows
from tunelab.errors import TunelabError
from tunelab.models.families import detect_family


@torch.no_grad()
def cache_teacher_logits(
    teacher: nn.Module, dataset: Dataset, collate: Callable, batch_size: int = 16
) -> list[torch.Tensor]:
    """The teacher's logits for each example of `dataset`, at the rows the soft loss reads
    (`kd_rows`): (1, classes) for a classifier, (target tokens, vocab) for an LM, on the CPU.

    For small data trained for several epochs, so the teacher runs once, not every epoch
    (an LM's rows cost tokens x vocab x 4 bytes each). Only valid when an example's inputs
    are the same every epoch (no random masking). Use with `attach_teacher_logits`.
    """
    was_training = teacher.training
    teacher.eval()
    device = next(teacher.parameters()).device
    config = getattr(teacher, "config", None)
    shifted = config is not None and detect_family(config) == "decoder"
    out: list[torch.Tensor] = []
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        batch = {k: v.to(device) for k, v in batch.items()}
        rows, counts = kd_rows(teacher(**batch).logits, batch, shifted)
        out += [_wide(r).cpu() for r in rows.split(counts.tolist())]
    teacher.train(was_training)
    return out


class _WithLogits(Dataset):
    def __init__(self, data: Dataset, logits: list[torch.Tensor]) -> None:
        self.data, self.logits = data, logits

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        return self.data[i], self.logits[i]


def attach_teacher_logits(
    dataset: Dataset, collate: Callable, logits: list[torch.Tensor]
) -> tuple[Dataset, Callable]:
    """(dataset, collate) whose batches carry `teacher_logits`, which `Distiller` reads instead
    of running the teacher (rows of the batch's examples, concatenated in batch order)."""
    if len(logits) != len(dataset):
        raise TunelabError(
            f"{len(logits)} cached teacher logits for {len(dataset)} examples: cache them "
            "from the same data"
        )

    def collate_with_logits(items: list) -> dict[str, torch.Tensor]:
        batch = collate([item for item, _ in items])
        return {**batch, "teacher_logits": torch.cat([rows for _, rows in items])}

    return _WithLogits(dataset, logits), collate_with_logits
