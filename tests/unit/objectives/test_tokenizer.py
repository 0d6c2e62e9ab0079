"""Tokenizers trained on a corpus carry the special tokens their objectives need."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from tests.unit.objectives.toy_corpus import toy_documents
from tunelab.errors import TunelabError
from tunelab.objectives.tokenizer import check_tokenizer, train_bpe, train_wordpiece


def test_wordpiece_specials_and_round_trip(tmp_path):
    tok = train_wordpiece(iter(toy_documents(30)), 300)
    for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"):
        assert t in tok.get_vocab()
    assert tok.mask_token == "[MASK]" and tok.pad_token_id == 0
    enc = tok("market report", "city film")
    assert enc["input_ids"][0] == tok.cls_token_id
    assert enc["input_ids"].count(tok.sep_token_id) == 2 and 1 in enc["token_type_ids"]
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again("doc 3 says")["input_ids"] == tok("doc 3 says")["input_ids"]
    assert len(tok) <= 300
    check_tokenizer(tok, "mlm+nsp")


def test_bpe_is_byte_level():
    tok = train_bpe(iter(toy_documents(30)), 400)
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token == "<pad>"
    text = "Zürich ☃ unseen words"
    assert tok.decode(tok(text)["input_ids"]) == text  # every byte string encodes
    check_tokenizer(tok, "clm")
    with pytest.raises(TunelabError, match="mask"):
        check_tokenizer(tok, "mlm")
