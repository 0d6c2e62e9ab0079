"""The masked-positions-only output layer gives the model's own loss and gradients."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForPreTraining,
    DistilBertConfig,
    DistilBertForMaskedLM,
    ElectraConfig,
    ElectraForMaskedLM,
    RobertaConfig,
    RobertaForMaskedLM,
)

from tunelab.objectives.heads import MaskedLM, split_mlm
from tunelab.objectives.nsp import MlmNsp

SHAPE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
VOCAB = 60


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (3, 16), generator=g)
    mask = torch.ones_like(ids)
    mask[2, 12:] = 0
    labels = torch.where(torch.rand(ids.shape, generator=g) < 0.3, ids, -100)
    labels[2, 12:] = -100
    return ids, mask, labels


MODELS = {
    "bert": lambda: BertForMaskedLM(BertConfig(vocab_size=VOCAB, intermediate_size=64, **SHAPE)),
    "electra-generator": lambda: ElectraForMaskedLM(
        ElectraConfig(vocab_size=VOCAB, embedding_size=16, intermediate_size=64, **SHAPE)
    ),
    "roberta": lambda: RobertaForMaskedLM(
        RobertaConfig(vocab_size=VOCAB, intermediate_size=64, pad_token_id=1, **SHAPE)
    ),
    "distilbert (not split: full forward)": lambda: DistilBertForMaskedLM(
        DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=64)
    ),
}


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", list(MODELS))
def test_masked_only_loss_and_gradients_match_the_models_own(kind):
    torch.manual_seed(0)
    model = MODELS[kind]().eval()  # eval: no dropout, so both passes see the same network
    ids, mask, labels = _batch()
    own = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    own.backward()
    expected = _grads(model)
    model.zero_grad()
    wrapped = MaskedLM(model)
    out = wrapped(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    got = {n.removeprefix("model."): g for n, g in _grads(wrapped).items()}
    assert torch.allclose(out.loss, own, atol=1e-6)
    assert out.logits.shape == (int((labels != -100).sum()), VOCAB)
    assert torch.equal(out.labels, labels[labels != -100])
    assert expected.keys() == got.keys()
    for name, grad in expected.items():
        assert torch.allclose(grad, got[name], atol=1e-6), name
    assert (split_mlm(model) is None) == kind.startswith("distilbert")


def test_mlm_nsp_loss_matches_bert_for_pretraining():
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig(vocab_size=VOCAB, intermediate_size=64, **SHAPE)).eval()
    ids, mask, labels = _batch(1)
    types = torch.zeros_like(ids)
    types[:, 8:] = 1
    nsp = torch.tensor([0, 1, 1])
    inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    own = model(**inputs, labels=labels, next_sentence_label=nsp).loss
    out = MlmNsp(model)(**inputs, labels=labels, next_sentence_label=nsp)
    assert torch.allclose(out.loss, own, atol=1e-6)
    assert out.nsp_logits.shape == (3, 2)


def test_no_masked_position_gives_zero_loss_not_nan():
    torch.manual_seed(0)
    wrapped = MaskedLM(MODELS["bert"]())
    ids, mask, _ = _batch()
    out = wrapped(input_ids=ids, attention_mask=mask, labels=torch.full_like(ids, -100))
    assert out.loss.item() == 0.0
    out.loss.backward()  # still a graph: a loop step on such a batch does not crash
