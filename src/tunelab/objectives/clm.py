"""Causal language modelling: next-token loss on packed fixed-length blocks (decoders).

The model is any `AutoModelForCausalLM` (a new Llama-style one from a preset, or a checkpoint);
its forward shifts the labels itself, so a batch is just the block as input and as labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunelab.objectives.blocks import BlockDataset, stack_ids
from tunelab.objectives.corpus import TokenStore
from tunelab.objectives.options import PretrainOptions

FAMILY = "decoder"
SENTENCES = False


def separator(tok) -> int | None:
    return tok.eos_token_id


def build_model(p: PretrainOptions, tok, source: str | None):
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    from tunelab.objectives.presets import llama_config

    if source is None:
        return LlamaForCausalLM(llama_config(p.preset, tok, p.seq_len))
    return AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)


def dataset(store: TokenStore, tok, p: PretrainOptions, limit: int | None = None):
    return BlockDataset(store, p.seq_len, limit=limit)


def make_collate(tok, p: PretrainOptions, store: TokenStore, generator=None):
    def collate(examples):
        ids = stack_ids(examples)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}

    return collate


def eval_sums(model, batch, generator=None) -> dict[str, tuple[float, int]]:
    """Summed next-token loss and accuracy over every predicted position."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    pred = logits[:, :-1].float()  # (batch, seq-1, vocab)
    target = batch["labels"][:, 1:]
    n = target.numel()
    loss = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1), reduction="sum")
    correct = (pred.argmax(-1) == target).sum()
    return {"loss": (loss.item(), n), "accuracy": (correct.item(), n)}


def save(model, folder) -> None:
    model.save_pretrained(folder)
