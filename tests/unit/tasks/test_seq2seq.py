"""Tests for tunelab.tasks.seq2seq: encoding, padding, the bert2bert warm start, metrics."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_config
from tunelab.models.sources import load_tokenizer
from tunelab.tasks.causal_lm import IGNORE
from tunelab.tasks.seq2seq import (
    encode_pairs,
    evaluate_seq2seq,
    make_collate,
    warm_start_bert2bert,
)

PAIRS = [
    {"prompt": "the match and the goal today", "response": "team coach win"},
    {"prompt": "a report on the market " + " ".join(str(i) for i in range(30)), "response": "bank"},
    {"prompt": "new phone", "response": "software chip data computer app code robot screen"},
]


@pytest.fixture(scope="module")
def tok(tiny_models):
    return load_tokenizer(str(tiny_models["encoder-decoder"]))


def test_inputs_and_targets_truncate_to_their_own_lengths(tok):
    data = encode_pairs(PAIRS, tok, max_length=12, max_target_length=5)
    for item in data:
        assert len(item["input_ids"]) <= 12 and len(item["labels"]) <= 5
        assert len(item["attention_mask"]) == len(item["input_ids"])
    # a short target is all there, ended by the tokenizer's EOS
    assert tok.decode(data[0]["labels"], skip_special_tokens=True) == "team coach win"
    assert data[0]["labels"][-1] == tok.eos_token_id
    assert len(data[2]["labels"]) == 5  # a long one is cut


def test_a_leading_decoder_start_token_is_dropped_from_the_labels(tok):
    with_cls = encode_pairs(PAIRS, tok, 32, 16)
    assert all(item["labels"][0] == tok.cls_token_id for item in with_cls)
    without = encode_pairs(PAIRS, tok, 32, 16, decoder_start_token_id=tok.cls_token_id)
    for a, b in zip(with_cls, without, strict=True):
        assert b["labels"] == a["labels"][1:]


def test_collate_pads_labels_with_ignore_and_t5_learns_from_them(tok):
    from transformers import T5ForConditionalGeneration

    data = encode_pairs(PAIRS, tok, 32, 16)
    batch = make_collate(tok)([data[i] for i in range(len(data))])
    lengths = [len(x["labels"]) for x in data]
    assert batch["labels"].shape == (3, max(lengths))
    for row, n in enumerate(lengths):
        assert (batch["labels"][row, n:] == IGNORE).all()
        assert (batch["labels"][row, :n] != IGNORE).all()
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(tiny_config("encoder-decoder", len(tok)))
    metrics = evaluate_seq2seq(model, data, make_collate(tok), batch_size=2, progress=False)
    assert metrics["tokens"] == sum(lengths)  # every target token counts (no causal shift)
    assert 0 < metrics["loss"] < 10


def test_bert2bert_warm_start_is_deterministic_and_uses_cls_sep(tiny_models):
    from transformers import EncoderDecoderModel

    source = str(tiny_models["encoder"])
    btok = load_tokenizer(source)
    state = torch.random.get_rng_state()
    a = warm_start_bert2bert(source, btok)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    b = warm_start_bert2bert(source, btok)
    assert isinstance(a, EncoderDecoderModel)
    assert a.config.decoder_start_token_id == btok.cls_token_id
    assert a.config.eos_token_id == btok.sep_token_id
    assert a.config.pad_token_id == btok.pad_token_id
    assert a.generation_config.decoder_start_token_id == btok.cls_token_id
    assert not any("pooler" in n for n, _ in a.named_parameters())  # nothing unused
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    data = encode_pairs(PAIRS, btok, 32, 16, decoder_start_token_id=btok.cls_token_id)
    batch = make_collate(btok)([data[i] for i in range(len(data))])
    loss = a(**batch).loss
    assert torch.isfinite(loss)


def test_bert2bert_warm_start_loads_safetensors_only_when_asked(tiny_models, tmp_path):
    """Within safetensors_only_within (the server's loads) neither half unpickles weights."""
    import shutil

    from safetensors.torch import load_file

    from tunelab.models.load import safetensors_only_within

    source = str(tiny_models["encoder"])
    btok = load_tokenizer(source)
    with safetensors_only_within():
        assert warm_start_bert2bert(source, btok) is not None  # safetensors weights: fine
    pickled = tmp_path / "pickled"
    shutil.copytree(source, pickled)
    torch.save(load_file(str(pickled / "model.safetensors")), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    assert warm_start_bert2bert(str(pickled), btok) is not None  # a finetune may read a .bin
    with safetensors_only_within(), pytest.raises(OSError, match="safetensors"):
        warm_start_bert2bert(str(pickled), btok)
