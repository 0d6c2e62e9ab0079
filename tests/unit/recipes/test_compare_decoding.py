"""compare-decoding: strategy specs, prompt preparation, and a whole report on a tiny model."""

from __future__ import annotations

import json

import pytest

from tunelab.config.compare_decoding import CompareDecodingConfig
from tunelab.errors import TunelabError
from tunelab.recipes.compare_decoding import compare_decoding, parse_strategy, prepare_pairs

PAIRS = [
    {"prompt": "the bank said profit and growth", "response": "market shares"},
    {"prompt": "the match today was a win", "response": "goal team"},
    {"prompt": "phone software chip", "response": "data code"},
    {"prompt": "robot app screen internet", "response": "computer"},
]


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    return path


@pytest.mark.parametrize(
    "spec, expect",
    [
        ("greedy", {"do_sample": False, "num_beams": 1}),
        ("beam4", {"num_beams": 4, "do_sample": False}),
        ("sample-t0.7", {"do_sample": True, "temperature": 0.7, "seed": 3}),
        ("top-k40", {"do_sample": True, "top_k": 40, "seed": 3}),
        ("top-p0.9", {"do_sample": True, "top_p": 0.9}),
        ("min-p0.05", {"do_sample": True, "min_p": 0.05}),
        ("do_sample=true:temperature=0.5:top_k=20", {"temperature": 0.5, "top_k": 20}),
        ("num_beams=3:length_penalty=0.6:max_new_tokens=9", {"num_beams": 3, "max_new_tokens": 9}),
    ],
)
def test_strategy_specs(spec, expect):
    opts = parse_strategy(spec, max_new_tokens=12, seed=3)
    for key, value in expect.items():
        assert getattr(opts, key) == value
    if "max_new_tokens" not in expect:
        assert opts.max_new_tokens == 12
    if not opts.do_sample:
        assert opts.seed is None


@pytest.mark.parametrize(
    "spec, match",
    [
        ("nucleus", "unknown strategy"),
        ("colour=red", "unknown decoding option"),
        ("top-p1.5", "top_p"),
        ("num_beams=2:do_sample=true", "beam search"),
    ],
)
def test_bad_specs_are_one_line_errors(spec, match):
    with pytest.raises(TunelabError, match=match):
        parse_strategy(spec, 8, 0)


def test_template_and_word_cut(pairs_file):
    cfg = CompareDecodingConfig(
        model="unused",
        data=str(pairs_file),
        template="Headline: {prompt}",
        max_prompt_words=3,
        limit=2,
    )
    got = prepare_pairs(cfg)
    assert [p["prompt"] for p in got] == ["Headline: the bank said", "Headline: the match today"]
    assert [p["response"] for p in got] == ["market shares", "goal team"]
    with pytest.raises(TunelabError, match="placeholder"):
        prepare_pairs(CompareDecodingConfig(model="m", data=str(pairs_file), template="no slot"))


def test_report_on_a_tiny_model(tiny_models, pairs_file, tmp_path, capsys):
    import torch

    from tunelab.decoding import DecodingOptions, generate
    from tunelab.models.load import load_lm

    out = tmp_path / "report"
    cfg = CompareDecodingConfig(
        model=str(tiny_models["decoder"]),
        data=str(pairs_file),
        out=str(out),
        strategies=["greedy", "beam2", "top-k5"],
        max_new_tokens=5,
        batch_size=2,
        dtype="fp32",  # the exact mode: token for token what generate() on the fp32 model gives
    )
    torch.manual_seed(0)  # the tiny folder holds a base model: the LM head is drawn on load
    report, rows = compare_decoding(cfg, show_progress=False)
    assert [r["strategy"] for r in rows] == ["greedy", "beam2", "top-k5"]
    for r in rows:
        assert r["n"] == len(PAIRS)
        assert 0 < r["mean_tokens"] <= 5 and r["tokens_per_second"] > 0
        assert 0 <= r["distinct_2"] <= 1 and r["output_perplexity"] > 1
    assert {p.name for p in report.iterdir()} >= {"report.md", "report.json", "outputs"}
    assert (report / "quality-vs-speed.png").stat().st_size > 1000
    assert "| beam2 |" in (report / "report.md").read_text()
    # the saved outputs are what the decoder produces for the same prompts
    greedy = [
        json.loads(x) for x in (report / "outputs" / "greedy.jsonl").read_text().split("\n") if x
    ]
    torch.manual_seed(0)
    loaded = load_lm(str(tiny_models["decoder"]))
    prompts = [p["prompt"] + "\n" for p in PAIRS]  # plain model, no chat template
    again = generate(loaded.model, loaded.tokenizer, prompts, DecodingOptions(max_new_tokens=5))
    assert [g["output"] for g in greedy] == [o.text.strip() for o in again]
    # a second run reuses every finished strategy of the same setup
    capsys.readouterr()
    _, again_rows = compare_decoding(cfg, show_progress=False)
    assert capsys.readouterr().out.count("reusing") == 3
    assert again_rows == rows


def test_uncertainty_matches_sacrebleu_bootstrap():
    import sacrebleu

    from tunelab.recipes.compare_decoding import uncertainty

    hyps = ["the cat sat on a mat", "stocks fell on monday", "hello", "a red car", "it rained"]
    refs = ["the cat is on the mat", "shares dropped monday", "hello there", "red cars", "rain"]
    got = uncertainty(hyps, refs)
    ref = sacrebleu.metrics.CHRF().corpus_score(hyps, [refs], n_bootstrap=1000)
    assert got["chrf_ci95"] == pytest.approx(ref._ci, abs=0.05) and got["chrf_ci95"] > 1
    assert got["rougeL_ci95"] > 0
    same = uncertainty(refs, refs)
    assert same == pytest.approx({"chrf_ci95": 0.0, "rougeL_ci95": 0.0})
