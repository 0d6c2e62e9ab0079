"""features: cached backbone features must be exactly what the model's own head reads."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import FAMILIES, distinct_features, toy_examples
from tunelab.models.families import HEAD_NAMES
from tunelab.models.load import load_classifier
from tunelab.strategies import get_strategy
from tunelab.strategies.features import collate_features, extract, head_only, train_view
from tunelab.strategies.options import FeaturesOptions
from tunelab.tasks.classification import encode_examples, evaluate, make_collate
from tunelab.training.loop import train
from tunelab.training.options import TrainOptions

LABELS = ["money", "sport", "tech"]


def _setup(family, tiny_models, n=20):
    torch.manual_seed(0)
    loaded = load_classifier(str(tiny_models[family]), LABELS, attention_dropout=0.0)
    if family == "encoder":
        distinct_features(loaded.model)
    model = get_strategy("features").build(loaded.model, FeaturesOptions(), loaded.family, 10)
    tok = loaded.tokenizer
    return model, encode_examples(toy_examples(n), tok, LABELS, 32), make_collate(tok)


@torch.no_grad()
def _model_logits(model, data, collate) -> torch.Tensor:
    model.eval()
    batch = collate([data[i] for i in range(len(data))])
    batch.pop("labels")
    return model(**batch).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_head_on_cached_features_gives_the_models_logits(family, tiny_models):
    model, data, collate = _setup(family, tiny_models)
    feats = extract(model, data, collate, batch_size=6, progress=False, autocast=False)
    assert len(feats) == len(data)
    assert [feats[i]["labels"] for i in range(len(data))] == [data[i]["labels"] for i in range(20)]
    # in dataset order (extraction runs shortest first, in batches of 6 padded differently)
    head = head_only(model).eval()
    with torch.no_grad():
        got = head(**collate_features([feats[i] for i in range(len(feats))])).logits
    torch.testing.assert_close(got, _model_logits(model, data, collate), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_training_trains_the_models_own_head(family, tiny_models, tmp_path):
    model, data, collate = _setup(family, tiny_models, n=24)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    view = train_view(model, FeaturesOptions(), {"train": data, "validation": data}, collate, 8)
    loss0 = evaluate(view.model, view.datasets["validation"], view.collate, LABELS, progress=False)
    cfg = TrainOptions(precision="fp32", batch_size=8, lr=1e-2, max_steps=30, keep_best=False)
    train(view.model, view.datasets["train"], view.collate, cfg, tmp_path, show_progress=False)
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert changed and all(model.get_parameter(n).requires_grad for n in changed), changed
    # the full model (backbone run afresh) agrees with the head trained on cached features
    full = evaluate(model, data, collate, LABELS, progress=False)
    cached = evaluate(view.model, view.datasets["validation"], view.collate, LABELS, progress=False)
    assert full["loss"] == pytest.approx(cached["loss"], abs=1e-4)
    assert cached["loss"] < loss0["loss"]


def test_cache_off_gives_no_view(tiny_models):
    model, data, collate = _setup("encoder", tiny_models)
    assert train_view(model, FeaturesOptions(cache=False), {"train": data}, collate, 8) is None


def test_a_head_that_reads_something_else_is_a_one_line_error(tiny_models):
    from tunelab.errors import TunelabError

    model, data, collate = _setup("encoder-decoder", tiny_models)
    # a head whose input is not what the model's forward gives it: the check must notice
    model.classification_head.register_forward_pre_hook(lambda m, args: (args[0] * 2,))
    with pytest.raises(TunelabError, match="features.cache false"):
        extract(model, data, collate, batch_size=8, progress=False)


@pytest.mark.parametrize("family", ["encoder", "encoder-decoder"])  # tiny Llama: no dropout
def test_frozen_backbone_runs_without_dropout_while_the_head_trains(family, tiny_models):
    model, data, collate = _setup(family, tiny_models)
    batch = collate([data[i] for i in range(4)])
    model.train()
    model(**batch)
    dropouts = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Dropout)}
    head_side = {n for n in dropouts if n.split(".")[0] in (*HEAD_NAMES, "dropout")}
    assert head_side and len(dropouts) > len(head_side)
    active = {n for n, m in dropouts.items() if m.training}
    assert active == head_side, f"backbone dropout active: {sorted(active - head_side)}"
