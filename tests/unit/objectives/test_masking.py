"""MLM corruption by property: rates over many draws, 80/10/10, labels, specials, whole words."""

from __future__ import annotations

import torch

from tunelab.objectives.masking import (
    choose_positions,
    continuation_table,
    mask_tokens,
    special_positions,
    word_ids,
)

MASK, VOCAB, SPECIALS = 4, 1000, [0, 1, 2, 3, 4]


def _batch(rows=64, seq=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, VOCAB, (rows, seq), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    ids[: rows // 2, -20:] = 0  # padding in half the rows
    return ids


def test_rates_and_split_over_many_draws():
    ids = _batch()
    special = special_positions(ids, SPECIALS)
    g = torch.Generator().manual_seed(1)
    chosen = masked = randomised = kept = eligible = 0
    for _ in range(30):
        out, labels = mask_tokens(ids, special, MASK, VOCAB, 0.15, g)
        sel = labels != -100
        chosen += int(sel.sum())
        eligible += int((~special).sum())
        masked += int((out[sel] == MASK).sum())
        kept += int((out[sel] == ids[sel]).sum())
        randomised += int(((out[sel] != MASK) & (out[sel] != ids[sel])).sum())
    assert abs(chosen / eligible - 0.15) < 0.005
    assert abs(masked / chosen - 0.8) < 0.01
    # a random id equal to the original counts as kept: 0.1 + 0.1/VOCAB
    assert abs(kept / chosen - 0.1) < 0.01
    assert abs(randomised / chosen - 0.1) < 0.01


def test_labels_and_specials():
    ids = _batch()
    special = special_positions(ids, SPECIALS)
    out, labels = mask_tokens(ids, special, MASK, VOCAB, 0.5, torch.Generator().manual_seed(2))
    sel = labels != -100
    assert torch.equal(labels[sel], ids[sel])  # labels hold the original ids
    assert (labels[~sel] == -100).all()
    assert not sel[special].any()  # specials and padding never chosen
    assert torch.equal(out[special], ids[special])
    assert torch.equal(out[~sel], ids[~sel])  # nothing outside chosen positions changes


def test_same_generator_seed_same_masks():
    ids = _batch()
    special = special_positions(ids, SPECIALS)
    a = mask_tokens(ids, special, MASK, VOCAB, 0.15, torch.Generator().manual_seed(7))
    b = mask_tokens(ids, special, MASK, VOCAB, 0.15, torch.Generator().manual_seed(7))
    c = mask_tokens(ids, special, MASK, VOCAB, 0.15, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


class _Tok:
    """The two things continuation_table reads from a tokenizer."""

    def __init__(self, vocab):
        self.vocab = vocab

    def __len__(self):
        return len(self.vocab)

    def get_vocab(self):
        return self.vocab


def test_whole_words_masked_together():
    # ids 10..: even ids start words, odd ids are '##' continuations
    vocab = {f"[S{i}]": i for i in range(5)}
    vocab.update({(f"##p{i}" if i % 2 else f"w{i}"): i for i in range(10, 200)})
    cont = continuation_table(_Tok(vocab))
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(10, 200, (32, 64), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3
    special = special_positions(ids, SPECIALS)
    words = word_ids(ids, special, cont)
    assert (words[special] == -1).all()
    chosen_total = eligible = 0
    for _ in range(20):
        chosen = choose_positions(special, 0.15, g, words)
        for r in range(ids.shape[0]):
            for w in words[r].unique().tolist():
                if w < 0:
                    continue
                group = chosen[r][words[r] == w]
                assert group.all() or not group.any()  # all pieces of a word, or none
        chosen_total += int(chosen.sum())
        eligible += int((~special).sum())
    assert abs(chosen_total / eligible - 0.15) < 0.03
    # a continuation piece joins the word before it
    row = torch.tensor([[2, 10, 11, 13, 12, 3]])
    assert word_ids(row, special_positions(row, SPECIALS), cont).tolist() == [[-1, 0, 0, 0, 1, -1]]
