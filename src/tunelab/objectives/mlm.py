"""Masked language modelling (BERT): 15% of tokens chosen, 80/10/10 corruption (masking.py),
optional whole-word masking, loss on the chosen positions only.

A checkpoint without an MLM head (the embedded MiniLM is a sentence-embedding model) gets a
fresh `BertOnlyMLMHead` from `AutoModelForMaskedLM.from_pretrained`, whose decoder weight is
tied to the word embeddings (transformers ties it, as BERT's own head is). The model trains
wrapped in `heads.MaskedLM`: its output layer runs at the chosen positions only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunelab.objectives.blocks import BlockDataset, stack_ids
from tunelab.objectives.corpus import TokenStore
from tunelab.objectives.heads import MaskedLM
from tunelab.objectives.masking import (
    continuation_table,
    mask_tokens,
    special_positions,
    word_ids,
)
from tunelab.objectives.options import PretrainOptions

FAMILY = "encoder"
SENTENCES = False


def separator(tok) -> int | None:
    return tok.sep_token_id


def build_model(p: PretrainOptions, tok, source: str | None):
    from transformers import AutoModelForMaskedLM, BertForMaskedLM

    from tunelab.objectives.presets import bert_config

    if source is None:
        return MaskedLM(BertForMaskedLM(bert_config(p.preset, tok, p.seq_len, p.dropout)))
    return MaskedLM(AutoModelForMaskedLM.from_pretrained(source, dtype=torch.float32))


def dataset(store: TokenStore, tok, p: PretrainOptions, limit: int | None = None):
    return BlockDataset(store, p.seq_len, tok.cls_token_id, tok.sep_token_id, limit)


class Masker:
    """Batch -> (masked input_ids, labels) with the tokenizer's specials and options."""

    def __init__(self, tok, p: PretrainOptions, generator: torch.Generator | None = None):
        self.specials = list(tok.all_special_ids)
        self.mask_id, self.vocab = tok.mask_token_id, len(tok)
        self.prob, self.generator = p.mlm_probability, generator
        self.cont = continuation_table(tok) if p.whole_word_mask else None

    def __call__(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        special = special_positions(ids, self.specials)
        words = word_ids(ids, special, self.cont) if self.cont is not None else None
        return mask_tokens(ids, special, self.mask_id, self.vocab, self.prob, self.generator, words)


def make_collate(tok, p: PretrainOptions, store: TokenStore, generator=None):
    masker = Masker(tok, p, generator)

    def collate(examples):
        inputs, labels = masker(stack_ids(examples))
        return {"input_ids": inputs, "attention_mask": torch.ones_like(inputs), "labels": labels}

    return collate


def mlm_sums(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, tuple[float, int]]:
    """Summed loss and accuracy of the logits (n, vocab) at the chosen positions, labels (n,)."""
    n = len(labels)
    if n == 0:
        return {"loss": (0.0, 0), "accuracy": (0.0, 0)}
    logits = logits.float()
    loss = F.cross_entropy(logits, labels, reduction="sum")
    correct = (logits.argmax(-1) == labels).sum()
    return {"loss": (loss.item(), n), "accuracy": (correct.item(), n)}


def eval_sums(model: MaskedLM, batch, generator=None) -> dict[str, tuple[float, int]]:
    out = model(**batch)
    return mlm_sums(out.logits, out.labels)


def save(model: MaskedLM, folder) -> None:
    model.model.save_pretrained(folder)
