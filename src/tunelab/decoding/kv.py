"""Row-level surgery on transformers' KV caches for the batched engine.

Rows are left-padded: every row's newest token sits in the last column, so one decode step
feeds a (batch, 1) column and appends one cache column for everybody. Rows that finish are
dropped (`select_rows`), then columns that are padding in every remaining row are cut
(`trim_left`), so a batch does not keep paying for a long member that has left. New rows are
prefilled on their own and joined with `concat_rows` (the shorter side left-padded).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache, EncoderDecoderCache


def _layers(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _build(data: list[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
    return DynamicCache(data)


def _map(cache, fn_self, fn_cross=None):
    """Apply fn to every (keys, values) pair; encoder-decoder caches map both halves."""
    if isinstance(cache, EncoderDecoderCache):
        return EncoderDecoderCache(
            _build([fn_self(k, v) for k, v in _layers(cache.self_attention_cache)]),
            _build([(fn_cross or fn_self)(k, v) for k, v in _layers(cache.cross_attention_cache)]),
        )
    return _build([fn_self(k, v) for k, v in _layers(cache)])


def select_rows(cache, rows: torch.Tensor):
    """The cache restricted to batch rows `rows` (int64 indices, in the new order)."""
    return _map(cache, lambda k, v: (k.index_select(0, rows), v.index_select(0, rows)))


def trim_left(cache, columns: int):
    """Drop the first `columns` self-attention columns (padding in every row)."""
    if columns <= 0:
        return cache
    return _map(cache, lambda k, v: (k[:, :, columns:], v[:, :, columns:]), lambda k, v: (k, v))


def _pad_left(t: torch.Tensor, length: int) -> torch.Tensor:
    return F.pad(t, (0, 0, length - t.shape[2], 0)) if t.shape[2] < length else t


def _pad_right(t: torch.Tensor, length: int) -> torch.Tensor:
    return F.pad(t, (0, 0, 0, length - t.shape[2])) if t.shape[2] < length else t


def _cat(a, b, pad) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for (ka, va), (kb, vb) in zip(_layers(a), _layers(b), strict=True):
        n = max(ka.shape[2], kb.shape[2])
        out.append((torch.cat([pad(ka, n), pad(kb, n)]), torch.cat([pad(va, n), pad(vb, n)])))
    return out


def concat_rows(a, b):
    """Rows of `a` then rows of `b`; self-attention is left-padded to the longer of the two,
    cross-attention (encoder positions) right-padded, matching the masks the engine keeps."""
    if isinstance(a, EncoderDecoderCache):
        return EncoderDecoderCache(
            _build(_cat(a.self_attention_cache, b.self_attention_cache, _pad_left)),
            _build(_cat(a.cross_attention_cache, b.cross_attention_cache, _pad_right)),
        )
    return _build(_cat(a, b, _pad_left))


def pad_mask_left(mask: torch.Tensor, length: int) -> torch.Tensor:
    return F.pad(mask, (length - mask.shape[1], 0)) if mask.shape[1] < length else mask


def pad_mask_right(mask: torch.Tensor, length: int) -> torch.Tensor:
    return F.pad(mask, (0, length - mask.shape[1])) if mask.shape[1] < length else mask
