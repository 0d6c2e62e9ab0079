"""Fixed-length blocks over a split's token stream: the training examples of CLM, MLM and RTD.

Documents are packed end to end (each ends in EOS / [SEP]) and cut into blocks of `seq_len`
tokens; encoder blocks are `[CLS] + seq_len - 2 tokens + [SEP]`. The dataset is a map-style
view over the memmap, so the training loop's epoch shuffling and mid-epoch resume work as for
any data set and nothing but the current batch is in memory.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from tunelab.objectives.corpus import TokenStore


class BlockDataset(Dataset):
    """Item k: {'input_ids': int64 array of `length`} (block k of the stream, or of an evenly
    spaced subset of `limit` blocks)."""

    def __init__(
        self,
        store: TokenStore,
        length: int,
        cls_id: int | None = None,
        sep_id: int | None = None,
        limit: int | None = None,
    ) -> None:
        self.ids, self.cls_id, self.sep_id = store.ids, cls_id, sep_id
        self.inner = length - 2 if cls_id is not None else length
        n = len(store.ids) // self.inner
        self.index = (
            np.arange(n)
            if limit is None or n <= limit
            else np.linspace(0, n - 1, limit).astype(np.int64)
        )

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        k = int(self.index[i])
        chunk = np.asarray(self.ids[k * self.inner : (k + 1) * self.inner], dtype=np.int64)
        if self.cls_id is not None:
            chunk = np.concatenate([[self.cls_id], chunk, [self.sep_id]])
        return {"input_ids": chunk}


def stack_ids(examples: list[dict[str, np.ndarray]]) -> torch.Tensor:
    """(batch, seq) int64 tensor of equal-length blocks."""
    return torch.from_numpy(np.stack([e["input_ids"] for e in examples]))
