"""--dtype / --device on every inference verb: the same spelling everywhere, a mistake is one
line before any model loads, and the chosen precision is what runs."""

from __future__ import annotations

import json

import pytest
import torch

from tests.integration.conftest import toy_classifier_run
from tunelab.cli import main

VERBS = {
    "generate": "generate {lm} hello",
    "score": "score {lm} hello",
    "eval": "eval {run} --data {csv}",
    "predict": "predict {run} hello",
    "compare-decoding": "compare-decoding {lm} --data {csv} --out {tmp}/cd",
    "serve": "serve {run} --port 0",
}


@pytest.fixture(scope="module")
def run(tiny_models, tmp_path_factory):
    return toy_classifier_run(tiny_models["encoder"], tmp_path_factory.mktemp("prec"), 40, 1, 1e-4)


def _argv(verb, tiny_models, run, tmp_path, extra):
    csv = tmp_path / "d.csv"
    csv.write_text("text,label,prompt,response\nsport goal,sport,hi,there\n")
    line = VERBS[verb].format(lm=tiny_models["decoder"], run=run, csv=csv, tmp=tmp_path)
    return line.split() + extra


@pytest.mark.parametrize("verb", list(VERBS))
def test_an_unknown_dtype_is_one_line_on_every_verb(verb, tiny_models, run, tmp_path, capsys):
    code = main(_argv(verb, tiny_models, run, tmp_path, ["--dtype", "int3"]))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "--dtype 'int3' is not one of auto, fp32, bf16, fp16, int8, int4" in err[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("verb", ["generate", "predict", "serve"])
def test_a_gpu_that_is_not_there_is_one_line(verb, tiny_models, run, tmp_path, capsys):
    code = main(_argv(verb, tiny_models, run, tmp_path, ["--device", "cuda"]))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "--device cuda: this machine has no CUDA GPU" in err[0]


def test_predict_fp32_and_int8_agree_on_labels(run, capsys):
    texts = ["goal match team coach", "bank shares profit", "phone chip software"]
    labels = {}
    for dtype in ("fp32", "bf16", "int8"):
        assert main(["predict", str(run), *texts, "--dtype", dtype]) == 0
        rows = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
        labels[dtype] = [r["label"] for r in rows]
    assert labels["bf16"] == labels["fp32"] == labels["int8"]


def test_generate_fp32_is_the_exact_mode(tiny_models, capsys):
    args = ["generate", str(tiny_models["decoder"]), "the cat", "--max-new-tokens", "5"]
    torch.manual_seed(0)
    assert main(args + ["--dtype", "fp32"]) == 0
    first = capsys.readouterr().out
    torch.manual_seed(0)
    assert main(args + ["--dtype", "float32", "--device", "cpu"]) == 0
    assert capsys.readouterr().out == first
