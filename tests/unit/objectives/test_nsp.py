"""NSP pairs: balanced, true pairs are consecutive sentences of one document, random pairs
come from another document; the batch has BERT's layout."""

from __future__ import annotations

import re

import pytest
import torch

from tests.unit.objectives.toy_corpus import toy_documents
from tunelab.objectives import nsp
from tunelab.objectives.corpus import TokenStore, build_token_store
from tunelab.objectives.options import PretrainOptions
from tunelab.objectives.tokenizer import train_wordpiece

SENT = re.compile(r"doc (\d+) sentence (\d+)")


@pytest.fixture(scope="module")
def store_tok(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nsp")
    docs = toy_documents(60)
    tok = train_wordpiece(iter(docs), 300)
    build_token_store(iter(docs), tok, folder, 10, True, None, progress=False)
    return TokenStore.open(folder, "train"), tok


def _where(store, tok, i):
    """(doc, sentence) that sentence i of the store says it is."""
    d, s = SENT.match(tok.decode(store.sentence(i).tolist())).groups()
    return int(d), int(s)


def test_balance_and_true_pairs_consecutive(store_tok):
    store, tok = store_tok
    anchors = nsp.AnchorDataset(store).anchors.tolist()
    g = torch.Generator().manual_seed(0)
    pairs = [p for _ in range(10) for p in nsp.make_pairs(anchors, store, 61, g)]
    share = sum(p.is_next for p in pairs) / len(pairs)
    assert abs(share - 0.5) < 0.04, share
    for p in pairs:
        a_doc, a_last = _where(store, tok, p.a[1] - 1)
        b_doc, b_first = _where(store, tok, p.b[0])
        assert _where(store, tok, p.a[0])[0] == a_doc  # A stays in one document
        assert _where(store, tok, p.b[1] - 1)[0] == b_doc  # so does B
        if p.is_next:
            assert (b_doc, b_first) == (a_doc, a_last + 1)
        else:
            assert b_doc != a_doc


def test_collate_layout(store_tok):
    store, tok = store_tok
    p = PretrainOptions(objective="nsp", seq_len=32)
    data = nsp.AnchorDataset(store)
    batch = nsp.make_collate(tok, p, store, torch.Generator().manual_seed(1))(
        [data[i] for i in range(16)]
    )
    ids, tt, mask = batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]
    assert ids.shape[1] <= 32 and set(batch["labels"].tolist()) <= {0, 1}
    for r in range(len(ids)):
        n = int(mask[r].sum())
        row = ids[r, :n].tolist()
        assert row[0] == tok.cls_token_id and row[-1] == tok.sep_token_id
        assert row.count(tok.sep_token_id) == 2
        first_sep = row.index(tok.sep_token_id)
        assert tt[r, : first_sep + 1].eq(0).all() and tt[r, first_sep + 1 : n].eq(1).all()
        assert (ids[r, n:] == tok.pad_token_id).all()


def test_mlm_nsp_batch_masks_and_keeps_nsp_label(store_tok):
    store, tok = store_tok
    p = PretrainOptions(objective="mlm+nsp", seq_len=32)
    data = nsp.AnchorDataset(store)
    batch = nsp.make_collate(tok, p, store, torch.Generator().manual_seed(2))(
        [data[i] for i in range(32)]
    )
    chosen = batch["labels"] != -100
    assert chosen.any() and "next_sentence_label" in batch
    special = torch.isin(batch["labels"], torch.tensor(tok.all_special_ids))
    assert not special.any()  # [CLS], [SEP] and padding are never MLM targets
