"""Greedy and beam output token-identical to transformers' generate() (left-padded batches)."""

from __future__ import annotations

import pytest

from tests.unit.decoding.helpers import hf_generate, prompts, tiny_lm
from tunelab.decoding import DecodingOptions, generate

FAMILIES = ("decoder", "encoder-decoder")


def _side(family: str) -> str:
    return "right" if family == "encoder-decoder" else "left"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("seed", [0, 3])
def test_greedy_matches_transformers(family, seed, tmp_path):
    model, tok = tiny_lm(family, tmp_path, seed)
    ps = prompts(tok, 4, seed)
    ref = hf_generate(model, ps, _side(family), max_new_tokens=12)
    outs = generate(model, tok, ps, DecodingOptions(max_new_tokens=12), batch_size=4)
    assert [o.token_ids for o in outs] == ref
    # rows really finish at different lengths, so dropping finished rows was exercised
    assert len({len(r) for r in ref}) > 1
    assert [o.finish_reason for o in outs] == ["length" if len(r) == 12 else "eos" for r in ref]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "beam",
    [
        dict(num_beams=3, num_return_sequences=2),
        dict(num_beams=4, length_penalty=0.5, early_stopping=True),
        dict(num_beams=3, length_penalty=2.0, early_stopping="never", num_return_sequences=3),
        dict(num_beams=2, length_penalty=-1.0),
    ],
)
def test_beam_matches_transformers(family, beam, tmp_path):
    model, tok = tiny_lm(family, tmp_path, seed=2)
    ps = prompts(tok, 3, seed=2)
    ref = hf_generate(model, ps, _side(family), max_new_tokens=10, **beam)
    outs = generate(model, tok, ps, DecodingOptions(max_new_tokens=10, **beam), batch_size=16)
    assert [o.token_ids for o in outs] == ref
    n = beam.get("num_return_sequences", 1)
    assert [o.prompt_index for o in outs] == [i for i in range(len(ps)) for _ in range(n)]


@pytest.mark.parametrize("family", FAMILIES)
def test_penalties_match_transformers_greedy(family, tmp_path):
    model, tok = tiny_lm(family, tmp_path, seed=3, eos_boost=1.0)
    ps = prompts(tok, 1, seed=3)  # one prompt: no pad tokens for transformers to penalise
    kw = dict(repetition_penalty=1.3, no_repeat_ngram_size=2)
    ref = hf_generate(model, ps, _side(family), max_new_tokens=15, **kw)
    outs = generate(model, tok, ps, DecodingOptions(max_new_tokens=15, **kw))
    assert [o.token_ids for o in outs] == ref


@pytest.mark.parametrize("family", FAMILIES)
def test_penalties_match_transformers_beam(family, tmp_path):
    # the penalties see each beam's prompt and its own tokens only (with seed 1, letting the
    # best beam's tokens into every beam's history changed the output)
    model, tok = tiny_lm(family, tmp_path, seed=1, eos_boost=1.0)
    ps = prompts(tok, 1, seed=1)
    kw = dict(num_beams=3, repetition_penalty=1.3, no_repeat_ngram_size=2)
    ref = hf_generate(model, ps, _side(family), max_new_tokens=12, **kw)
    outs = generate(model, tok, ps, DecodingOptions(max_new_tokens=12, **kw))
    assert [o.token_ids for o in outs] == ref


@pytest.mark.slow
def test_smollm2_greedy_and_beam_match_transformers():
    from tunelab.models.load import load_lm

    loaded = load_lm("smollm2-135m")
    model, tok = loaded.model, loaded.tokenizer
    texts = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a land far,"]
    ps = [tok(t)["input_ids"] for t in texts]
    eos = model.generation_config.eos_token_id
    eos = eos if isinstance(eos, int) else eos[0]
    outs = generate(model, tok, texts, DecodingOptions(max_new_tokens=24))
    assert [o.token_ids for o in outs] == hf_generate(model, ps, "left", eos, max_new_tokens=24)
    beam = dict(num_beams=3, num_return_sequences=2, length_penalty=1.0)
    outs = generate(model, tok, texts, DecodingOptions(max_new_tokens=16, **beam))
    expected = hf_generate(model, ps, "left", eos, max_new_tokens=16, **beam)
    assert [o.token_ids for o in outs] == expected
