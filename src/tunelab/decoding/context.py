"""The limited context window: keep a fixed prefix and slide over the most recent tokens.

When a sequence would need more positions than the window, the first `n_keep` tokens stay
(e.g. the instruction) and the oldest half of the rest is dropped at once, as llama.cpp's
context shift does; the engine then re-prefills the shortened sequence. Dropping half at once
amortises that re-prefill: the next one is (window - n_keep) / 2 tokens away. A prompt longer
than the window gets the same treatment instead of an error.
"""

from __future__ import annotations


def model_window(config) -> int | None:
    """The positions a model was trained for (None: relative positions, no hard limit)."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def slide(tokens: list[int], window: int | None, n_keep: int) -> list[int]:
    """`tokens` shortened to at most `window` tokens: the first n_keep plus the most recent
    half of the remaining room. Unchanged when it already fits (or there is no window)."""
    if window is None or len(tokens) <= window:
        return tokens
    n_keep = min(n_keep, window - 2)
    recent = max(1, (window - n_keep + 1) // 2)
    return tokens[:n_keep] + tokens[len(tokens) - recent :]
