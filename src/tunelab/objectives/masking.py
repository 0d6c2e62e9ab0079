"""Masked-language-model corruption as pure functions of a batch and a `torch.Generator`.

Same semantics as transformers' `DataCollatorForLanguageModeling`: each non-special token is
chosen with probability p; a chosen token becomes [MASK] 80% of the time, a random vocabulary
id 10% and stays itself 10%; labels hold the original id at chosen positions and -100 elsewhere.
Special tokens and padding are never chosen. Written here rather than calling the collator
because the tests (and RTD, NSP, validation) need an explicit generator per call, and whole-word
masking on '##' WordPiece continuations of an already packed block (the collator's whole-word
variant wants per-example word lists).
"""

from __future__ import annotations

import torch


def special_positions(input_ids: torch.Tensor, special_ids: list[int]) -> torch.Tensor:
    """Boolean (batch, seq): True where the id is a special token (padding included)."""
    return torch.isin(input_ids, torch.tensor(special_ids, dtype=input_ids.dtype))


def continuation_table(tokenizer) -> torch.Tensor:
    """Boolean (vocab,): True for WordPiece continuation pieces ('##...')."""
    vocab = tokenizer.get_vocab()
    table = torch.zeros(max(len(tokenizer), max(vocab.values()) + 1), dtype=torch.bool)
    for token, i in vocab.items():
        if token.startswith("##") and len(token) > 2:
            table[i] = True
    return table


def word_ids(input_ids: torch.Tensor, special: torch.Tensor, continuation: torch.Tensor):
    """(batch, seq) word index of each token, -1 at special tokens.

    A word starts at every non-special token that is not a '##' continuation (or that follows
    a special token / opens the row, when a block cut a word in two).
    """
    cont = continuation[input_ids] & ~special
    prev_special = torch.ones_like(special)
    prev_special[:, 1:] = special[:, :-1]
    start = ~special & (~cont | prev_special)
    ids = torch.cumsum(start.long(), dim=1) - 1
    return torch.where(special, torch.full_like(ids, -1), ids)


def choose_positions(
    special: torch.Tensor,
    probability: float,
    generator: torch.Generator | None = None,
    words: torch.Tensor | None = None,
) -> torch.Tensor:
    """Boolean (batch, seq) of the positions chosen for prediction.

    Token-level: each non-special position independently with `probability`. Whole-word
    (`words` from `word_ids`): each word with `probability`, all its pieces together.
    """
    if words is None:
        probs = torch.full(special.shape, probability)
        probs[special] = 0.0
        return torch.bernoulli(probs, generator=generator).bool()
    n_words = int(words.max().item()) + 1 if words.numel() else 0
    draw = torch.rand((special.shape[0], max(n_words, 1)), generator=generator) < probability
    picked = torch.gather(draw, 1, words.clamp(min=0))
    return picked & (words >= 0)


def mask_tokens(
    input_ids: torch.Tensor,
    special: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    probability: float = 0.15,
    generator: torch.Generator | None = None,
    words: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(corrupted input_ids, labels) for MLM, as the module docstring says.

    Args:
        input_ids: (batch, seq) token ids; not modified.
        special: (batch, seq) True where a token must never be chosen (specials, padding).
        mask_id: Id of [MASK].
        vocab_size: Random replacements are drawn from [0, vocab_size).
        probability: Chance that a token (or word) is chosen.
        generator: Source of randomness (None: torch's global RNG, which checkpoints restore).
        words: Optional word index per token for whole-word masking.
    """
    chosen = choose_positions(special, probability, generator, words)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    roll = torch.rand(input_ids.shape, generator=generator)
    to_mask = chosen & (roll < 0.8)
    to_random = chosen & (roll >= 0.8) & (roll < 0.9)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator)
    out = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    out = torch.where(to_random, random_ids.to(input_ids.dtype), out)
    return out, labels
