"""Zero-shot classification with a decoder (`eval` / `predict --zero-shot`, compare's zero-shot
rows) on a tiny random Llama with a byte-level BPE tokenizer (llguidance reads it; the shared
word-level tokenizer it cannot). Random weights classify at chance: what is checked is that
every answer is a label, the metrics are a classifier's, and bad input is one line."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from tests.conftest import toy_examples, write_csv
from tunelab.cli import main
from tunelab.errors import TunelabError

pytest.importorskip("llguidance")

TOPICS = ["money", "sport", "tech"]


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    from tests.unit.decoding.test_constraints import tiny_bpe_lm

    folder = tmp_path_factory.mktemp("zero-shot") / "tiny-bpe"
    tiny_bpe_lm(folder)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_csv(tmp_path_factory.mktemp("zero-shot-data") / "toy.csv", toy_examples(24))


def _eval(lm, data, tmp_path, *flags) -> dict:
    out = tmp_path / "m.json"
    args = ["eval", str(lm), "--data", str(data), "--json", str(out), "--batch-size", "8"]
    assert main([*args, "--max-length", "16", *flags]) == 0
    return json.loads(out.read_text())


@pytest.mark.parametrize("mode", ["choice", "likelihood"])
def test_eval_zero_shot_answers_only_labels_with_a_classifiers_metrics(
    mode, lm, data, tmp_path, capsys
):
    m = _eval(lm, data, tmp_path, "--zero-shot", mode)
    assert m["invalid"] == 0 and m["n"] == 24
    assert m["labels"] == TOPICS  # no "(no label)" column: every answer was a label
    assert sum(map(sum, m["confusion_matrix"])) == 24
    for key in ("accuracy", "macro_f1", "per_class"):
        assert key in m
    assert m["zero_shot"]["mode"] == mode and m["zero_shot"]["labels"] == TOPICS
    assert m["baselines"]["majority"]["accuracy"] == pytest.approx(1 / 3)
    assert "money, sport, tech" in m["example_prompt"]
    printed = capsys.readouterr().out
    assert "accuracy" in printed and f"zero-shot ({mode})" in printed


def test_classify_predictions_stay_in_the_label_set(lm):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.tasks.zero_shot import ZeroShotOptions, classify

    model, tok = AutoModelForCausalLM.from_pretrained(lm).eval(), AutoTokenizer.from_pretrained(lm)
    texts = [e["text"] for e in toy_examples(12)] + ["", "x" * 300]
    labels = ["red", "green", "blue sky"]  # a two-word label, a prefix-free set
    opts = ZeroShotOptions(prompt="Colour of: {text} ->")
    for mode in ("choice", "likelihood"):
        r = classify(model, tok, texts, labels, mode, opts, max_length=8, batch_size=4)
        assert len(r.labels) == len(texts) and set(r.labels) <= set(labels)
        assert all(p.startswith("Colour of: ") for p in r.prompts)
    assert len(r.probs) == len(texts) and all(abs(sum(p) - 1) < 1e-6 for p in r.probs)


def test_shared_prefix_label_scores_equal_scoring_each_pair(lm):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.evaluation.scoring import score
    from tunelab.tasks.zero_shot import _label_logprobs

    model, tok = AutoModelForCausalLM.from_pretrained(lm).eval(), AutoTokenizer.from_pretrained(lm)
    prompts, answers = ["the quick brown fox", "yes or no?", "hi"], [" sport", " money", " a b c"]
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    ans = [tok(a, add_special_tokens=False)["input_ids"] for a in answers]
    mine = _label_logprobs(model, ids, ans)  # prompts of unequal length: left padding
    ref = score(
        model, tok, [a for _ in prompts for a in answers], [p for p in prompts for _ in ans]
    )
    assert torch.allclose(
        mine, torch.tensor([r.logprob for r in ref]).view(3, 3).double(), atol=1e-4
    )


def test_predict_zero_shot_prints_labels_from_the_set(lm, tmp_path, capsys):
    texts = ["the match was won", "bank shares fell", "a new phone app"]
    base = ["predict", str(lm), *texts, "--labels", "red,green,blue"]
    assert main([*base, "--zero-shot"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == texts
    assert all(r["label"] in ("red", "green", "blue") for r in rows)
    out = tmp_path / "p.csv"
    assert main([*base, "--zero-shot", "likelihood", "--output", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "text,label,score,red,green,blue" and len(lines) == 4


def _fails(capsys, *args) -> str:
    assert main(list(args)) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_bad_zero_shot_input_is_one_line_naming_the_flag(lm, data, capsys, monkeypatch):
    ev = ["eval", str(lm), "--data", str(data), "--zero-shot"]
    assert "--prompt" in _fails(capsys, *ev, "--prompt", "no placeholder here")
    assert "--labels" in _fails(capsys, *ev, "--labels", "money,sport")  # tech is in the data
    assert "--zero-shot" in _fails(capsys, "eval", "minilm", "--data", str(data), "--zero-shot")
    assert "--zero-shot" in _fails(capsys, "eval", str(lm), "--data", str(data), "--labels", "a,b")
    assert "--labels" in _fails(capsys, "predict", str(lm), "hi", "--zero-shot")
    monkeypatch.setitem(sys.modules, "llguidance", None)  # not installed
    err = _fails(capsys, *ev)
    assert "pip install tunelab[constrained]" in err


def test_compare_reports_a_zero_shot_row_with_no_training(lm, data, tmp_path, capsys):
    cfg = {
        "model": {"name": str(lm)},
        "data": {"source": str(data), "max_length": 16, "test_size": 0.25, "val_size": 0.0},
        "train": {"max_steps": 2, "batch_size": 8},
        "zero_shot": {"prompt": "Topic of: {text} ({labels})\nTopic:"},
        "compare": {"latency_examples": 3},
    }
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "report"
    # a fine-tuned row measured before (compare skips finished rows): only zero_shot runs here
    full = {"strategy": "full", "status": "ok", "accuracy": 0.5, "macro_f1": 0.5}
    full |= {"trainable_params": 30976, "trainable_pct": 100.0, "train_seconds": 3.0}
    full |= {"peak_memory_mib": 500.0, "checkpoint_mib": 0.1, "latency_ms_median": 1.0}
    (out / "results").mkdir(parents=True)
    (out / "results" / "full.json").write_text(json.dumps(full))
    args = ["compare", str(path), "--strategies", "zero_shot,full", "--output", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "2 of 2 strategies finished" in printed and "full: done before" in printed
    report = json.loads((out / "report.json").read_text())
    rows = {r["strategy"]: r for r in report["results"]}
    zs = rows["zero_shot"]
    assert zs["status"] == "ok" and zs["invalid"] == 0
    assert zs["train_seconds"] == 0 and zs["trainable_params"] == 0 and zs["steps"] == 0
    assert zs["zero_shot"]["prompt"].startswith("Topic of:") and zs["latency_ms_median"] > 0
    assert zs["zero_shot"]["labels"] == TOPICS and 0 <= zs["accuracy"] <= 1
    assert not any("train longer" in w for w in zs["warnings"])  # nothing was trained
    assert report["baselines"]["tfidf_lr"]["n"] == 6  # the zero-shot row fitted them
    md = (out / "report.md").read_text()
    assert "| zero_shot | " in md and "| full |" in md and "*Zero-shot rows*" in md
    assert (out / "tradeoff-time.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_config_checks_the_zero_shot_section(lm, data, tmp_path):
    from tunelab.config.compare import load_compare_config

    cfg = {"model": {"name": str(lm)}, "data": {"source": str(data)}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg | {"zero_shot": {"prompt": "no text"}}))
    with pytest.raises(TunelabError, match="--zero_shot.prompt"):
        load_compare_config(path, {}, "zero_shot,full", None)
    with pytest.raises(TunelabError, match="no zero-shot row"):
        load_compare_config(path, {}, "full,lora", None)
    path.write_text(yaml.safe_dump(cfg))
    cc, _ = load_compare_config(path, {"zero_shot.labels": "a,b"}, "zero_shot,full", None)
    assert cc.strategies == ["zero_shot", "full"]
    assert cc.overrides["zero_shot"] == {"zero_shot.labels": "a,b"}
    with pytest.raises(TunelabError, match="tunelab eval MODEL --data DATA --zero-shot choice"):
        load_compare_config(path, {}, "zero_shot", None)
