"""Options parsing/validation, presets' family rules, and block datasets over a token store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.unit.objectives.toy_corpus import toy_documents
from tunelab.config.pretrain import build_pretrain_config
from tunelab.errors import TunelabError
from tunelab.objectives import clm, get_objective, mlm
from tunelab.objectives.corpus import TokenStore, build_token_store
from tunelab.objectives.options import PretrainOptions
from tunelab.objectives.presets import family_for
from tunelab.objectives.tokenizer import train_bpe, train_wordpiece

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def test_shipped_configs_parse():
    for path in sorted(CONFIGS.glob("pretrain-*.yaml")):
        cfg = build_pretrain_config(path)
        assert cfg.train.metric == "loss" and cfg.pretrain.preset == "small"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"pretrain.objective": "span"}, "unknown objective"),
        ({"pretrain.mlm_probability": "1.5"}, "mlm_probability"),
        ({"pretrain.colour": "red"}, "unknown option pretrain.colour"),
        ({"model.name": "x"}, "unknown config section"),
        ({"pretrain.seq_len": "many"}, "expects int"),
    ],
)
def test_bad_options_are_refused(overrides, message):
    with pytest.raises(TunelabError, match=message):
        build_pretrain_config(overrides=overrides)


def test_family_rules():
    assert family_for("clm", None) == "decoder" and family_for("rtd", None) == "encoder"
    with pytest.raises(TunelabError, match="span corruption"):
        family_for("mlm", "encoder-decoder")
    with pytest.raises(TunelabError, match="trains decoder"):
        family_for("clm", "encoder")
    with pytest.raises(TunelabError, match="unknown objective"):
        get_objective("t5")


def _store(tmp_path, tok, sep):
    docs = toy_documents(30)
    build_token_store(iter(docs), tok, tmp_path, 10, False, sep, progress=False)
    return TokenStore.open(tmp_path, "train")


def test_clm_blocks_cover_the_stream_in_order(tmp_path):
    tok = train_bpe(iter(toy_documents(30)), 400)
    store = _store(tmp_path, tok, tok.eos_token_id)
    p = PretrainOptions(objective="clm", seq_len=16)
    data = clm.dataset(store, tok, p)
    assert len(data) == len(store.ids) // 16
    joined = np.concatenate([data[i]["input_ids"] for i in range(len(data))])
    assert np.array_equal(joined, np.asarray(store.ids[: len(joined)], dtype=np.int64))
    assert (joined == tok.eos_token_id).sum() >= 20  # documents end in EOS
    batch = clm.make_collate(tok, p, store)([data[0], data[1]])
    assert torch.equal(batch["labels"], batch["input_ids"])  # the model shifts them itself
    assert clm.dataset(store, tok, p, limit=5).index.tolist()[0] == 0
    assert len(clm.dataset(store, tok, p, limit=5)) == 5


def test_mlm_blocks_are_wrapped_and_masked(tmp_path):
    tok = train_wordpiece(iter(toy_documents(30)), 300)
    store = _store(tmp_path, tok, tok.sep_token_id)
    p = PretrainOptions(objective="mlm", seq_len=24, mlm_probability=0.3)
    data = mlm.dataset(store, tok, p)
    item = data[3]["input_ids"]
    assert len(item) == 24 and item[0] == tok.cls_token_id and item[-1] == tok.sep_token_id
    batch = mlm.make_collate(tok, p, store, torch.Generator().manual_seed(0))(
        [data[i] for i in range(len(data))]
    )
    chosen = batch["labels"] != -100
    assert not chosen[:, 0].any() and not chosen[:, -1].any()
    rate = chosen.sum().item() / (chosen.numel() - 2 * len(chosen))
    assert 0.2 < rate < 0.4
