"""Corpus reading streams, splits deterministically, and the token store round-trips."""

from __future__ import annotations

import inspect
import zipfile

import numpy as np
import pytest

from tests.unit.objectives.toy_corpus import toy_documents, write_jsonl
from tunelab.errors import TunelabError
from tunelab.objectives.corpus import (
    TokenStore,
    build_token_store,
    is_validation,
    iter_documents,
    split_sentences,
)
from tunelab.objectives.tokenizer import train_wordpiece


def test_reader_is_a_lazy_generator(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", toy_documents(30))
    docs = iter_documents(str(path))
    assert inspect.isgenerator(docs)
    assert next(docs).startswith("Doc 0 sentence 0")
    assert len(list(docs)) == 29
    # a broken line late in the file is only met when the stream gets there: nothing is read
    # ahead of what has been asked for
    with path.open("a") as fh:
        fh.write("{not json\n")
    docs = iter_documents(str(path))
    assert [next(docs) for _ in range(30)][-1].startswith("Doc 29")
    with pytest.raises(TunelabError, match="line 31 is not JSON"):
        next(docs)


def test_formats_and_columns(tmp_path):
    docs = toy_documents(6)
    (tmp_path / "a.txt").write_text("\n\n".join(docs[:3]) + "\n")
    (tmp_path / "b.csv").write_text(
        "title,body\n" + "".join(f'"T{i}","{d}"\n' for i, d in enumerate(docs[3:]))
    )
    got = list(iter_documents(str(tmp_path / "a.txt")))
    assert got == docs[:3]
    got = list(iter_documents(str(tmp_path / "b.csv"), "title,body"))
    assert got == [f"T{i}\n{d}" for i, d in enumerate(docs[3:])]
    with zipfile.ZipFile(tmp_path / "z.zip", "w") as zf:
        zf.write(tmp_path / "b.csv", "b.csv")
    assert list(iter_documents(str(tmp_path / "z.zip"), "body")) == docs[3:]
    with pytest.raises(TunelabError, match="--text-column"):
        list(iter_documents(str(tmp_path / "b.csv"), "text"))
    with pytest.raises(TunelabError, match="not found"):
        list(iter_documents(str(tmp_path / "missing.jsonl")))
    assert len(list(iter_documents(str(tmp_path / "a.txt"), max_documents=2))) == 2


def test_validation_split_deterministic_and_disjoint():
    val = [i for i in range(100) if is_validation(i, 20)]
    assert val == [19, 39, 59, 79, 99]
    assert val == [i for i in range(100) if is_validation(i, 20)]


def test_sentence_splitter():
    text = 'Mr. Smith met Dr. Jones in the U.S. capital. "It rained," he said! Then 3 left? Yes.'
    assert split_sentences(text) == [
        "Mr. Smith met Dr. Jones in the U.S. capital.",
        '"It rained," he said!',
        "Then 3 left?",
        "Yes.",
    ]


def test_token_store_round_trip(tmp_path):
    docs = toy_documents(40)
    tok = train_wordpiece(iter(docs), 300)
    counts = build_token_store(
        iter(docs), tok, tmp_path, every=10, sentences=True, separator=None, progress=False
    )
    assert counts["validation_documents"] == 4 and counts["train_documents"] == 36
    train, val = TokenStore.open(tmp_path, "train"), TokenStore.open(tmp_path, "validation")
    assert isinstance(train.ids, np.memmap) and train.ids.dtype == np.uint16
    # the first validation document is corpus document 9, and its sentences decode in order
    first = val.sentence(0)
    assert tok.decode(first.tolist()).startswith("doc 9 sentence 0")
    per_doc = np.bincount(train.sent_doc)
    assert per_doc.sum() == train.n_sentences == len(train.sent_starts) - 1
    # every train document's text is recovered from its token range
    ids = train.ids[train.doc_starts[1] : train.doc_starts[2]].tolist()
    assert tok.decode(ids).startswith("doc 1 sentence 0")
