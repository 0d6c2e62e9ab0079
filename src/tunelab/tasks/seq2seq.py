"""Seq2seq fine-tuning of encoder-decoder models: input text -> target text.

Inputs and targets are tokenized with the model's tokenizer (`text_target=`), each with its own
max length; transformers' DataCollatorForSeq2Seq pads them (labels with -100) and the model
builds its decoder inputs by shifting the labels right behind `decoder_start_token_id`.

An encoder (BERT-style, e.g. the embedded MiniLM) asked to do seq2seq is warm-started as a
bert2bert `EncoderDecoderModel` (Rothe et al. 2020): encoder and decoder both start from its
weights, the decoder's cross-attention is new. [CLS] starts decoding, [SEP] ends it, [PAD]
pads; a tokenizer whose targets begin with the start token ([CLS] ...) has it dropped from the
labels, since the decoder is fed it anyway. The new cross-attention weights are drawn from a
fixed seed, so the same base rebuilds the same model (what loading a run folder that holds
only an adapter or the trained tensors relies on).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tunelab.errors import TunelabError
from tunelab.tasks.causal_lm import PairDataset, evaluate_lm

WARM_START_SEED = 0
"""Seed of the new cross-attention weights of a warm-started bert2bert."""


def encode_pairs(
    pairs: list[dict[str, Any]],
    tokenizer,
    max_length: int,
    max_target_length: int,
    decoder_start_token_id: int | None = None,
) -> PairDataset:
    """input_ids / attention_mask of the prompts and labels of the responses, truncated."""
    if max_length < 1 or max_target_length < 1:
        raise TunelabError("data.max_length and data.max_target_length must be at least 1")
    enc = tokenizer([p["prompt"] for p in pairs], max_length=max_length, truncation=True)
    tgt = tokenizer(
        text_target=[p["response"] for p in pairs], max_length=max_target_length, truncation=True
    )
    items = []
    for ids, mask, labels in zip(
        enc["input_ids"], enc["attention_mask"], tgt["input_ids"], strict=True
    ):
        if decoder_start_token_id is not None and labels[:1] == [decoder_start_token_id]:
            labels = labels[1:]
        items.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return PairDataset(items)


def make_collate(tokenizer):
    """Dynamic padding of inputs (pad id) and labels (-100): transformers' seq2seq collator."""
    from transformers import DataCollatorForSeq2Seq

    inner = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, return_tensors="pt")

    def collate(items: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        return dict(inner([dict(x) for x in items]))

    return collate


def evaluate_seq2seq(model: nn.Module, data, collate, batch_size: int = 16, **kw) -> dict:
    """Loss per target token and perplexity (see causal_lm.evaluate_lm; no causal shift)."""
    return evaluate_lm(model, data, collate, batch_size, shifted=False, **kw)


def warm_start_bert2bert(source: str, tokenizer) -> nn.Module:
    """An EncoderDecoderModel with encoder and decoder both initialised from `source`.

    The encoder gets no pooler (nothing reads it); special tokens as in the bert2bert recipe:
    decoding starts at [CLS] (or BOS), ends at [SEP] (or EOS), pads with [PAD]. Within
    `models.load.safetensors_only_within` (the server) both halves load safetensors only.
    """
    import transformers
    from transformers import EncoderDecoderModel

    from tunelab.models.load import weights_kwargs

    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    end = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if start is None or end is None:
        raise TunelabError(
            f"the tokenizer of {source} has no [CLS]/BOS or [SEP]/EOS token to start and end "
            "decoding: a bert2bert needs both, pick an encoder-decoder model instead"
        )
    only = weights_kwargs()
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the "newly initialised" report is expected
    try:
        with torch.random.fork_rng():
            torch.manual_seed(WARM_START_SEED)
            # encoder_* / decoder_* keywords reach each half's from_pretrained
            halves = {f"{h}_{k}": v for h in ("encoder", "decoder") for k, v in only.items()}
            model = EncoderDecoderModel.from_encoder_decoder_pretrained(
                source, source, encoder_add_pooling_layer=False, **halves
            )
    finally:
        transformers.logging.set_verbosity(verbosity)
    for cfg in (model.config, model.generation_config):
        cfg.decoder_start_token_id = start
        cfg.eos_token_id = end
        cfg.pad_token_id = tokenizer.pad_token_id
    model.config.vocab_size = model.config.decoder.vocab_size
    return model
