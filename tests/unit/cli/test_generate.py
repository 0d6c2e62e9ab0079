"""`tunelab generate` on a tiny decoder: texts, JSONL output, streaming and one-line errors."""

from __future__ import annotations

import json

import pytest

from tests.unit.decoding.helpers import tiny_lm
from tunelab.cli import main


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory):
    """A tiny causal LM with its LM head saved (the shared fixture's decoder has none, so each
    load would draw a new random head)."""
    root = tmp_path_factory.mktemp("tiny-causal-lm")
    model, tok = tiny_lm("decoder", root, seed=0, eos_boost=1.0)
    model.save_pretrained(root / "decoder")
    return str(root / "decoder")


def test_generate_prints_one_continuation_per_prompt(lm_folder, capsys):
    model = lm_folder
    rc = main(["generate", model, "the match", "a bank said", "--max-new-tokens", "4"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line[:4] for line in lines] == ["[0] ", "[1] "]


def test_generate_writes_jsonl_from_a_file(lm_folder, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the match\nphone data code\n")
    out = tmp_path / "out.jsonl"
    args = ["generate", lm_folder, "--file", str(prompts), "--output", str(out)]
    rc = main(args + ["--do-sample", "true", "--num-return-sequences", "2", "--seed", "1"])
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt_index"] for r in rows] == [0, 0, 1, 1]
    assert rows[2]["prompt"] == "phone data code"
    assert all(r["finish_reason"] in ("eos", "length") for r in rows)
    assert all(r["generated_tokens"] <= 64 for r in rows)


def test_generate_stream_matches_batch_output(lm_folder, capsys):
    model = lm_folder
    assert main(["generate", model, "the goal", "--max-new-tokens", "6"]) == 0
    batch = capsys.readouterr().out
    assert main(["generate", model, "the goal", "--max-new-tokens", "6", "--stream"]) == 0
    assert capsys.readouterr().out == batch


@pytest.mark.parametrize(
    "extra, message",
    [
        (["the match", "--top-p", "1.5"], "--top-p"),
        (["the match", "--num-beams", "2", "--num-return-sequences", "3"], "--num-return-seq"),
        (["the match", "--max-new-tokens", "many"], "max-new-tokens"),
        (["   "], "empty"),
        ([], "no prompts"),
    ],
)
def test_generate_errors_are_one_line(lm_folder, capsys, extra, message):
    rc = main(["generate", lm_folder, *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and message in err


def test_generate_refuses_an_encoder(tiny_models, capsys):
    rc = main(["generate", str(tiny_models["encoder"]), "the match"])
    assert rc == 2
    assert "encoder" in capsys.readouterr().err
