"""`tunelab score`, generative `tunelab eval` and `tunelab compare-decoding` end to end."""

from __future__ import annotations

import json

import pytest

from tunelab.cli import main

PAIRS = [
    {"prompt": "the bank said", "response": "profit and growth today"},
    {"prompt": "the match", "response": "goal team win"},
    {"prompt": "phone", "response": "software chip data"},
]


@pytest.fixture(scope="module")
def lm_folder(tiny_models, tmp_path_factory):
    """The tiny decoder saved with its LM head, so every load gives the same model."""
    import shutil

    import torch

    from tunelab.models.load import load_lm

    torch.manual_seed(0)
    loaded = load_lm(str(tiny_models["decoder"]))
    folder = tmp_path_factory.mktemp("lm") / "decoder-lm"
    loaded.model.save_pretrained(folder)
    for f in tiny_models["decoder"].glob("*token*"):
        shutil.copy(f, folder / f.name)
    return folder


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    return path


def test_score_writes_what_the_api_computes(lm_folder, tmp_path, capsys):
    from tunelab.evaluation.scoring import score
    from tunelab.models.load import load_lm

    out = tmp_path / "scores.jsonl"
    texts = ["the match goal team", "phone app code of the new robot"]
    args = ["score", str(lm_folder), *texts, "--output", str(out), "--token-logprobs"]
    assert main([*args, "--dtype", "fp32"]) == 0  # the exact mode: what load_lm gives
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    loaded = load_lm(str(lm_folder))
    expect = score(loaded.model, loaded.tokenizer, texts)
    assert [r["text"] for r in rows] == texts
    for row, e in zip(rows, expect, strict=True):
        assert row["tokens"] == e.tokens == len(row["token_logprobs"])
        assert row["logprob"] == pytest.approx(e.logprob, abs=1e-5)
    assert "perplexity" in capsys.readouterr().err


def test_score_conditional_data_and_table(lm_folder, pairs_file, capsys):
    assert main(["score", str(lm_folder), "--data", str(pairs_file)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 1 + len(PAIRS)
    # each response is scored on its own tokens only: 4, 3 and 3 words
    assert [int(line.split()[1]) for line in table[1:]] == [4, 3, 3]


def test_score_whole_file_with_a_window(lm_folder, tmp_path, capsys):
    doc = tmp_path / "doc.txt"
    doc.write_text("\n".join(" ".join(str(i) for i in range(k, k + 20)) for k in (0, 50, 100)))
    args = ["score", str(lm_folder), "--file", str(doc), "--whole-file"]
    assert main([*args, "--window", "16", "--stride", "8"]) == 0
    assert "over 59 tokens of 1 texts" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, match",
    [
        ([], "nothing to score"),
        (["a b", "--window", "8", "--stride", "8"], "window - 1"),
        (["--data", "missing.jsonl"], "does not exist"),
    ],
)
def test_score_mistakes_are_one_line(lm_folder, capsys, argv, match):
    assert main(["score", str(lm_folder), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1


def test_generative_eval_of_a_language_model(lm_folder, pairs_file, tmp_path, capsys):
    out = tmp_path / "m.json"
    argv = ["eval", str(lm_folder), "--data", str(pairs_file), "--max-new-tokens", "4"]
    assert main([*argv, "--json", str(out)]) == 0
    m = json.loads(out.read_text())
    assert m["n"] == 3 and m["reference_tokens"] == 10
    assert 0 < m["generated_tokens"] <= 12
    assert m["decoding"]["max_new_tokens"] == 4 and m["decoding"]["do_sample"] is False
    assert "BLEU" in capsys.readouterr().out
    # a causal_lm run folder (the marker is what tells) takes the same path
    (lm_folder / "tunelab_run.json").write_text(json.dumps({"task": "causal_lm"}))
    try:
        assert main([*argv, "--limit", "2", "--json", str(out)]) == 0
        assert json.loads(out.read_text())["n"] == 2
    finally:
        (lm_folder / "tunelab_run.json").unlink()


def test_eval_of_a_classifier_run_stays_the_classifier_eval(tmp_path, capsys):
    from tunelab.api import is_generative

    run = tmp_path / "run"
    run.mkdir()
    (run / "tunelab_run.json").write_text(json.dumps({"task": "classification"}))
    assert not is_generative(str(run))
    assert is_generative("smollm2-135m") and not is_generative("minilm")


def test_compare_decoding_cli(lm_folder, pairs_file, tmp_path, capsys):
    out = tmp_path / "cd"
    argv = ["compare-decoding", str(lm_folder), "--data", str(pairs_file), "--out", str(out)]
    assert main([*argv, "--strategies", "greedy,top-p0.9", "--max-new-tokens", "4"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [r["strategy"] for r in report["results"]] == ["greedy", "top-p0.9"]
    assert report["meta"]["n"] == 3
    assert main([*argv, "--strategies", "beam2:x"]) == 2
    assert "unknown strategy" in capsys.readouterr().err


def test_generative_eval_and_score_of_an_encoder_decoder(tiny_models, pairs_file, tmp_path):
    folder = str(tiny_models["encoder-decoder"])
    out = tmp_path / "m.json"
    argv = ["eval", folder, "--data", str(pairs_file), "--max-new-tokens", "3"]
    assert main([*argv, "--json", str(out)]) == 0
    m = json.loads(out.read_text())
    assert m["n"] == 3 and m["reference_tokens"] == 10 and m["generated_tokens"] <= 9
    assert main(["score", folder, "a b"]) == 2  # a target needs its source


@pytest.mark.parametrize(
    "verb, text",
    [
        ("score", "--window"),
        ("compare-decoding", "min-pP"),
        ("eval", "--max-new-tokens"),  # the decoding options of generative eval
    ],
)
def test_help(capsys, verb, text):
    with pytest.raises(SystemExit) as info:
        main([verb, "--help"])
    assert info.value.code == 0 and text in capsys.readouterr().out


def test_eval_and_score_of_an_adapter_run(lm_folder, pairs_file, tmp_path, capsys):
    """A LoRA causal_lm run keeps only its adapter: it is rebuilt on its base to evaluate."""
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(p) + "\n" for p in PAIRS * 4))
    args = ["finetune", "--task", "causal_lm", "--data", str(train), "--model", str(lm_folder)]
    args += ["--strategy", "lora", "--epochs", "1", "--train.batch_size", "8"]
    args += ["--train.threads", "1", "--output", str(tmp_path / "runs"), "--name", "lora"]
    assert main(args) == 0
    run = tmp_path / "runs" / "lora"
    assert not (run / "config.json").exists()
    out = tmp_path / "m.json"
    argv = ["eval", str(run), "--data", str(pairs_file), "--max-new-tokens", "3"]
    assert main([*argv, "--json", str(out)]) == 0
    m = json.loads(out.read_text())
    assert m["n"] == 3 and m["reference_tokens"] == 10 and m["reference_perplexity"] > 1
    capsys.readouterr()
    assert main(["score", str(run), "--data", str(pairs_file)]) == 0
    assert f"perplexity {m['reference_perplexity']:.3f}" in capsys.readouterr().err
