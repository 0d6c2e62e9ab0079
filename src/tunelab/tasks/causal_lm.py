"""Instruction / dialog tuning of decoders: pairs -> token ids with the loss on the assistant's
tokens only.

Each pair becomes `input_ids` = its text's tokens and `labels` = the token ids on the response
and (for a conversation, with `all_turns`) on every earlier assistant turn, -100 on everything
else: system and user turns, role headers, the prompt (and, in batches, padding). So the
causal-LM loss (transformers shifts labels by one inside the model) counts only what the
assistant says. Each turn ends with the end-of-turn token, which trains too: a tuned model
learns where to stop. The text layout (chat template, plain, Alpaca) is `tasks/chat.py`'s;
each of its pieces is tokenized on its own, the prompt as generation reads it.

Truncation keeps the response (it is what trains) and cuts what comes before it from the
left: a too-long conversation loses its beginning (with a chat template, the system prompt
first).

Packing (optional) puts whole examples one after another into blocks of up to `max_length`
tokens (first fit, in order), so every response token is trained exactly once and none is cut.
Packed examples attend to the ones before them in their block (no block-diagonal mask, as in
most packers: transformers' SDPA attention takes no per-example boundaries on CPU); their loss
stays on their own responses.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from tunelab.errors import TunelabError
from tunelab.tasks.chat import format_pair, has_chat_template, prompt_text, segments

# the text layout lives in tasks/chat.py; these names stay importable from here
__all__ = [
    "IGNORE",
    "PairDataset",
    "encode_pair",
    "encode_pairs",
    "evaluate_lm",
    "format_pair",
    "has_chat_template",
    "make_collate",
    "pack",
    "prompt_text",
]

IGNORE = -100
"""Label value that transformers' cross-entropy skips."""


def encode_pair(
    pair: dict[str, Any],
    tokenizer,
    max_length: int,
    chat_template: bool = True,
    separator: str = "\n",
    all_turns: bool = True,
) -> dict[str, list[int]]:
    """input_ids, attention_mask and labels of one pair: labels on the response and, with
    `all_turns`, on every earlier assistant turn of its conversation; -100 on the rest.

    Each piece of `chat.segments` is tokenized on its own (the prompt as generation reads it).
    Truncation keeps the response and cuts what comes before it from the left.

    Raises:
        TunelabError: max_length below 2 (a response token needs a token before it).
    """
    if max_length < 2:
        raise TunelabError("data.max_length must be at least 2 for a causal LM")
    pieces = segments(pair, tokenizer, chat_template, separator, all_turns)
    templated = chat_template and has_chat_template(tokenizer)
    ids: list[int] = []
    labels: list[int] = []
    for text, trains in pieces[:-1]:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if trains else [IGNORE] * len(piece)
    r_ids = tokenizer(pieces[-1][0], add_special_tokens=False)["input_ids"]
    if not templated:
        bos = tokenizer.bos_token_id
        if bos is not None and getattr(tokenizer, "add_bos_token", True):
            ids, labels = [bos, *ids], [IGNORE, *labels]
        if tokenizer.eos_token_id is not None:
            r_ids = [*r_ids, tokenizer.eos_token_id]
    if not ids:  # the first response token needs a token to be predicted from
        start = tokenizer.bos_token_id
        ids, labels = [tokenizer.eos_token_id if start is None else start], [IGNORE]
    r_ids = r_ids[: max_length - 1]
    keep = max_length - len(r_ids)  # cut what comes before the response from the left
    ids, labels = ids[-keep:] + r_ids, labels[-keep:] + r_ids
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


class PairDataset(Dataset):
    """Encoded examples (dicts of int lists), map-style."""

    def __init__(self, items: list[dict[str, list[int]]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.items[i]


def encode_pairs(
    pairs: list[dict[str, Any]],
    tokenizer,
    max_length: int,
    chat_template: bool = True,
    separator: str = "\n",
    packing: bool = False,
    all_turns: bool = True,
) -> PairDataset:
    """Encode every pair (and pack them into blocks when `packing`)."""
    items = [
        encode_pair(p, tokenizer, max_length, chat_template, separator, all_turns) for p in pairs
    ]
    return PairDataset(pack(items, max_length) if packing else items)


def pack(items: list[dict[str, list[int]]], block_size: int) -> list[dict[str, list[int]]]:
    """Whole examples concatenated into blocks of at most `block_size` tokens (first fit in
    order): no example is split, so every label appears exactly once."""
    blocks: list[dict[str, list[int]]] = []
    for item in items:
        n = len(item["input_ids"])
        if n > block_size:
            raise TunelabError(f"an example of {n} tokens does not fit a block of {block_size}")
        target = next((b for b in blocks if len(b["input_ids"]) + n <= block_size), None)
        if target is None:
            target = {"input_ids": [], "attention_mask": [], "labels": []}
            blocks.append(target)
        for key in target:
            target[key] += item[key]
    return blocks


def make_collate(pad_id: int):
    """Right-pad a list of examples to the longest: pad id / mask 0 / label -100."""

    def collate(items: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(x["input_ids"]) for x in items)

        def padded(key: str, fill: int) -> torch.Tensor:
            return torch.tensor([x[key] + [fill] * (width - len(x[key])) for x in items])

        return {
            "input_ids": padded("input_ids", pad_id),
            "attention_mask": padded("attention_mask", 0),
            "labels": padded("labels", IGNORE),
        }

    return collate


def counted_tokens(labels: torch.Tensor, shifted: bool) -> int:
    """Tokens a transformers LM loss averages over: labels != -100 (after the causal shift)."""
    return int((labels[:, 1:] if shifted else labels).ne(IGNORE).sum())


@torch.inference_mode()
def evaluate_lm(
    model: nn.Module,
    data: Dataset,
    collate,
    batch_size: int = 16,
    shifted: bool = True,
    progress: bool = True,
    desc: str = "evaluating",
) -> dict[str, float]:
    """Loss per response (target) token and its perplexity over `data`.

    The model's mean loss of each batch is weighted by the tokens it averaged, so the result
    is the exact mean over all response tokens whatever the batching. `shifted`: causal LMs
    predict token t from tokens < t (the first label of a row is never counted); seq2seq
    models predict every label.
    """
    from tunelab.tasks.classification import autocast_for

    if len(data) == 0:
        raise TunelabError("nothing to evaluate: the evaluation split is empty")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(data)), key=lambda i: len(data[i]["input_ids"]))
    total, tokens = 0.0, 0
    with autocast_for(model):
        for s in tqdm(
            range(0, len(order), batch_size), desc=desc, disable=not progress, leave=False
        ):
            batch = collate([data[i] for i in order[s : s + batch_size]])
            batch = {k: v.to(device) for k, v in batch.items()}
            n = counted_tokens(batch["labels"], shifted)
            if n == 0:
                continue
            total += model(**batch).loss.float().item() * n
            tokens += n
    model.train(was_training)
    if tokens == 0:
        raise TunelabError("no response tokens to evaluate: check max_length and the data")
    loss = total / tokens
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": tokens, "n": len(data)}
