"""`tunelab compress` on tiny runs: one run folder per method that the inference verbs open,
a report beside the original, failures recorded, resumable."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import toy_classifier_run
from tunelab import api
from tunelab.cli import main
from tunelab.errors import TunelabError
from tunelab.runs.marker import read_marker


@pytest.fixture(scope="module")
def classifier_run(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("compress")
    return toy_classifier_run(tiny_models["encoder"], root, 90, 30, 3e-3)


METHODS = "bf16,int8-dynamic,prune-50,prune-heads-50,prune-layers-1,distill-half,onnx"


def test_compress_writes_runs_report_and_resumes(classifier_run, tmp_path, capsys):
    out = tmp_path / "report"
    base = ["compress", str(classifier_run), "--output", str(out), "--threads", "1"]
    base += ["--compress.recovery_steps", "3", "--compress.distill_epochs", "0.5"]
    base += ["--compress.latency_examples", "4"]
    assert main([*base, "--methods", METHODS]) == 0
    printed = capsys.readouterr().out
    assert "7 of 7 methods finished" in printed
    rows = {r["method"]: r for r in json.loads((out / "report.json").read_text())["results"]}
    assert set(rows) == {"original", "original-fp32", *METHODS.split(",")}
    assert all(r["status"] == "ok" for r in rows.values()), rows
    orig = rows["original"]
    # smaller where the method makes it smaller; the same answers where it should not change
    assert rows["bf16"]["size_mib"] < 0.6 * orig["size_mib"]
    assert rows["int8-dynamic"]["size_mib"] < 0.6 * orig["size_mib"]
    assert rows["prune-heads-50"]["params"] < orig["params"]
    assert rows["prune-layers-1"]["params"] < orig["params"]
    assert rows["distill-half"]["params"] < orig["params"]
    assert rows["onnx"]["accuracy"] == pytest.approx(rows["original-fp32"]["accuracy"], abs=0.02)
    assert rows["prune-50"]["details"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    for name in ("quality-vs-latency.png", "quality-vs-size.png", "report.md"):
        assert (out / name).is_file()
    # every output is a run folder the inference verbs open
    for method in rows:
        if method.startswith("original"):
            continue
        run = out / "runs" / method
        assert read_marker(run).compression["method"] == method
        preds = api.predict(run, ["match goal team", "bank market shares"], quiet=True)
        assert len(preds) == 2 and all(p["label"] in ("sport", "money", "tech") for p in preds)
    # a quantized run runs in its own precision, says so, and refuses another
    from tunelab.runs.open import open_classifier

    model, _, _ = open_classifier(out / "runs" / "int8-dynamic", dtype="auto")
    assert model.tunelab_precision == {"dtype": "int8-dynamic", "device": "cpu"}
    with pytest.raises(TunelabError, match="runs in its own precision"):
        open_classifier(out / "runs" / "int8-dynamic", dtype="bf16")
    # re-running measures nothing again; a bad method is one line, before anything runs
    assert main([*base, "--methods", "bf16"]) == 0
    assert "measured before" in capsys.readouterr().out
    assert main([*base, "--methods", METHODS + ",int3"]) == 2
    assert "unknown compression method 'int3'" in capsys.readouterr().err


def test_a_failing_method_is_recorded_and_the_others_go_on(classifier_run, tmp_path):
    cfg = api.build_compress_config(
        overrides={
            "compress.methods": "gguf-f16,int8-dynamic",
            "compress.output_dir": str(tmp_path / "r"),
            "compress.latency_examples": 2,
            "compress.threads": 1,
        }
    )
    _, rows = api.compress(classifier_run, cfg, quiet=True)
    by = {r["method"]: r for r in rows}
    assert by["gguf-f16"]["status"] == "failed" and "decoder" in by["gguf-f16"]["reason"]
    assert by["int8-dynamic"]["status"] == "ok"


def test_source_must_be_a_finished_fine_tuning_run(tmp_path, tiny_models):
    with pytest.raises(TunelabError, match="not a tunelab run folder"):
        api.compress(tmp_path)
    with pytest.raises(TunelabError, match="not a tunelab run folder"):
        api.compress(tiny_models["encoder"])


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    """A tiny Llama fine-tuned (lora, merged) on toy prompt/response pairs."""
    import torch
    from transformers import LlamaForCausalLM

    from tests.conftest import build_tokenizer, tiny_config
    from tests.integration.test_generative_finetune import toy_pairs

    root = tmp_path_factory.mktemp("compress-lm")
    folder = root / "llama"
    tok = build_tokenizer(folder)
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_config("decoder", len(tok))).save_pretrained(folder)
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in toy_pairs(72)))
    cfg = api.build_config(
        overrides={
            "task": "causal_lm",
            "strategy": "lora",
            "model.name": str(folder),
            "data.source": str(pairs),
            "train.max_steps": 10,
            "train.batch_size": 8,
            "train.lr": 1e-2,
            "train.threads": 1,
            "run.merge": True,
            "run.output_dir": str(root / "runs"),
            "run.name": "lm",
        }
    )
    return api.finetune(cfg, quiet=True).run_dir


def test_a_language_model_run_compresses_and_still_generates(lm_run, tmp_path):
    cfg = api.build_compress_config(
        overrides={
            "compress.methods": "int8-dynamic,bf16,prune-layers-1,gguf-f16",
            "compress.output_dir": str(tmp_path / "r"),
            "compress.recovery_steps": 2,
            "compress.latency_examples": 2,
            "compress.threads": 1,
        }
    )
    report, rows = api.compress(lm_run, cfg, quiet=True)
    by = {r["method"]: r for r in rows}
    assert {"perplexity", "bleu", "chrf", "tokens_per_s_b1"} <= set(by["original"])
    for method in ("int8-dynamic", "bf16", "prune-layers-1"):
        assert by[method]["status"] == "ok", by[method]
        out = api.generate(str(report / "runs" / method), ["match goal 1"], batch_size=1)
        assert len(out) == 1 and out[0].finish_reason in ("length", "stop")
    assert by["prune-layers-1"]["params"] < by["original"]["params"]
    # the toy tokenizer is a WordLevel one: GGUF (byte-level BPE only) is refused, recorded
    assert by["gguf-f16"]["status"] == "failed" and "tokenizer" in by["gguf-f16"]["reason"]
    assert "| perplexity | BLEU | chrF |" in (report / "report.md").read_text()
