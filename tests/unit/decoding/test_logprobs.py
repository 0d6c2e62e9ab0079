"""Per-token logprobs from the engine: the log-softmax of the model's own logits at each
position (computed here independently with a full forward pass), the top-k alternatives,
only for the rows that ask, and without changing any row's tokens; token bytes are exact."""

from __future__ import annotations

import pytest
import torch

from tests.unit.decoding.helpers import prompts, tiny_lm
from tunelab.decoding import DecodingOptions
from tunelab.decoding.engine import Engine, Request
from tunelab.decoding.logprobs import token_bytes, token_text
from tunelab.decoding.options import check_options
from tunelab.errors import TunelabError


def _run(model, tok, reqs: list[tuple[list[int], DecodingOptions]], seed: int = 0):
    engine = Engine(model, tok, max_batch=len(reqs), seed=seed)
    for i, (p, o) in enumerate(reqs):
        engine.add(Request(list(p), o, id=i))
    out: dict[int, list] = {i: [] for i in range(len(reqs))}
    while engine.has_work():
        for ev in engine.step():
            out[ev.request_id].append(ev)
    return out


def _reference(model, prompt: list[int], tokens: list[int]) -> torch.Tensor:
    """(len(tokens), vocab) log-softmax of the model's logits before each generated token."""
    ids = torch.tensor([prompt + tokens])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    return torch.log_softmax(logits[len(prompt) - 1 : len(prompt) - 1 + len(tokens)], -1)


@pytest.mark.parametrize("greedy_fast_path", [True, False])
def test_logprobs_equal_the_models_log_softmax(tmp_path, greedy_fast_path):
    model, tok = tiny_lm("decoder", tmp_path, eos_boost=1.0)
    ps = prompts(tok, n=6)
    # rows that ask (k 0, 3, 20) beside rows that do not; greedy, sampling, a penalty
    opts = [
        DecodingOptions(max_new_tokens=10, logprobs=3),
        DecodingOptions(max_new_tokens=10),
        DecodingOptions(max_new_tokens=10, logprobs=0, do_sample=True, temperature=0.7),
        DecodingOptions(max_new_tokens=10, do_sample=True),
        DecodingOptions(max_new_tokens=10, logprobs=20, repetition_penalty=1.3),
        DecodingOptions(max_new_tokens=10, logprobs=5),
    ]
    if not greedy_fast_path:  # a sampling row asking nothing takes every row off the fast head
        opts = [o for o in opts if o.logprobs is not None or not o.do_sample]
    reqs = list(zip(ps, opts, strict=False))
    out = _run(model, tok, reqs)
    for i, (p, o) in enumerate(reqs):
        evs = [e for e in out[i]]
        if o.logprobs is None:
            assert all(e.logprobs is None for e in evs)
            continue
        tokens = [e.token for e in evs]
        ref = _reference(model, p, tokens)
        for j, e in enumerate(evs):
            lp = e.logprobs
            assert lp.token == e.token
            assert lp.logprob == pytest.approx(float(ref[j, e.token]), abs=1e-4)
            assert len(lp.top) == o.logprobs
            want = torch.topk(ref[j], o.logprobs) if o.logprobs else None
            if want is not None:
                assert [v for _, v in lp.top] == pytest.approx(want.values.tolist(), abs=1e-4)
                assert [v for _, v in lp.top] == sorted((v for _, v in lp.top), reverse=True)
                for t, v in lp.top:
                    assert v == pytest.approx(float(ref[j, t]), abs=1e-4)
            if o.logprobs and not o.do_sample and o.repetition_penalty == 1.0:
                assert lp.top[0][0] == e.token  # greedy: the chosen token is the most likely


def test_asking_for_logprobs_changes_no_token(tmp_path):
    model, tok = tiny_lm("decoder", tmp_path)
    ps = prompts(tok, n=4)
    plain = [DecodingOptions(max_new_tokens=12), DecodingOptions(max_new_tokens=12, do_sample=True)]
    asking = [DecodingOptions(**{**vars(o), "logprobs": 4}) for o in plain]
    a = _run(model, tok, [(p, plain[i % 2]) for i, p in enumerate(ps)], seed=3)
    b = _run(model, tok, [(p, asking[i % 2]) for i, p in enumerate(ps)], seed=3)
    assert {k: [e.token for e in v] for k, v in a.items()} == {
        k: [e.token for e in v] for k, v in b.items()
    }


def test_constrained_rows_report_the_raw_distribution(tmp_path):
    pytest.importorskip("llguidance")
    from tests.unit.decoding.test_constraints import tiny_bpe_lm
    from tunelab.decoding.constraints import Constraint

    model, tok = tiny_bpe_lm(seed=2)
    p = tok("the quick")["input_ids"]
    opts = DecodingOptions(max_new_tokens=12, constraint=Constraint.regex("[0-9]{4}"), logprobs=2)
    [evs] = _run(model, tok, [(p, opts)]).values()
    tokens = [e.token for e in evs if e.finish_reason != "eos"]
    assert tok.decode(tokens).isdigit()
    ref = _reference(model, p, tokens)
    for j, t in enumerate(tokens):
        # the logprob is the model's, before the constraint's mask: not renormalised over digits
        assert evs[j].logprobs.logprob == pytest.approx(float(ref[j, t]), abs=1e-4)
    assert sum(float(ref[j, t].exp()) for j, t in enumerate(tokens)) < len(tokens)


def test_token_bytes_are_exact_for_byte_level_pieces():
    pytest.importorskip("llguidance")
    from tests.unit.decoding.test_constraints import tiny_bpe_lm

    _, tok = tiny_bpe_lm()
    for text in ["héllo wörld €", "plain ascii", "日本"]:
        ids = tok(text)["input_ids"]
        assert bytes(b for t in ids for b in token_bytes(tok, t)) == text.encode("utf-8")
    ids = tok("plain ascii")["input_ids"]
    assert "".join(token_text(tok, t) for t in ids) == "plain ascii"
    [e_acute_part, *_] = tok("é")["input_ids"]  # one byte of a two-byte character
    assert token_text(tok, e_acute_part) == "\ufffd" and len(token_bytes(tok, e_acute_part)) == 1


def test_bad_logprobs_options_are_one_line():
    with pytest.raises(TunelabError, match="0 to 20"):
        check_options(DecodingOptions(logprobs=21))
    with pytest.raises(TunelabError, match="beam search"):
        check_options(DecodingOptions(logprobs=1, num_beams=2))
