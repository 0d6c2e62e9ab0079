"""scoring.score against hand computations from the model's own logits and loss."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from tunelab.errors import TunelabError
from tunelab.evaluation.scoring import corpus_perplexity, score

TEXTS = [
    "the match goal team",
    "bank market shares profit price trade and the economy",
    "phone",
    "robot code screen data of the new app said today",
]


@pytest.fixture(scope="module")
def decoder(tiny_models):
    from tunelab.models.load import load_lm

    torch.manual_seed(0)  # the tiny folder holds a base model: the LM head is initialised here
    loaded = load_lm(str(tiny_models["decoder"]))
    assert loaded.tokenizer.bos_token_id is None  # the tiny tokenizer has no BOS
    return loaded.model, loaded.tokenizer


@pytest.fixture(scope="module")
def seq2seq(tiny_models):
    from tunelab.models.load import load_lm

    torch.manual_seed(0)
    loaded = load_lm(str(tiny_models["encoder-decoder"]))
    return loaded.model, loaded.tokenizer


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def _hand_logprob(model, ids: list[int], first: int) -> float:
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    return sum(float(logp[i - 1, ids[i]]) for i in range(first, len(ids)))


def test_logprob_is_the_chain_rule_sum_without_bos(decoder):
    model, tok = decoder
    ids = _ids(tok, TEXTS[1])
    [r] = score(model, tok, [TEXTS[1]])
    assert r.tokens == len(ids) - 1  # no BOS: the first token is not scored
    assert r.logprob == pytest.approx(_hand_logprob(model, ids, 1), abs=1e-4)
    assert r.perplexity == pytest.approx(math.exp(-r.logprob / r.tokens))


def test_first_token_is_scored_given_bos(decoder):
    model, tok = decoder
    tok = copy.deepcopy(tok)
    tok.bos_token = "[CLS]"
    ids = [tok.bos_token_id, *_ids(tok, TEXTS[0])]
    [r] = score(model, tok, [TEXTS[0]], token_logprobs=True)
    assert r.tokens == len(ids) - 1 == len(r.token_logprobs)
    assert r.logprob == pytest.approx(_hand_logprob(model, ids, 1), abs=1e-4)
    assert sum(r.token_logprobs) == pytest.approx(r.logprob, abs=1e-5)


def test_conditional_plus_prompt_equals_full(decoder):
    model, tok = decoder
    prompt, completion = "the bank said", "profit and growth today"
    [full] = score(model, tok, [f"{prompt} {completion}"])
    [alone] = score(model, tok, [prompt])
    [cond] = score(model, tok, [completion], prompts=[prompt])
    assert cond.tokens == len(_ids(tok, completion))
    assert alone.tokens + cond.tokens == full.tokens
    assert alone.logprob + cond.logprob == pytest.approx(full.logprob, abs=1e-4)
    # the prompt really conditions the completion
    [bare] = score(model, tok, [completion])
    assert bare.tokens == cond.tokens - 1


def test_batched_equals_unbatched(decoder):
    model, tok = decoder
    one = [score(model, tok, [t])[0] for t in TEXTS]
    batched = score(model, tok, TEXTS, batch_size=3)
    for a, b in zip(one, batched, strict=True):
        assert a.tokens == b.tokens
        assert a.logprob == pytest.approx(b.logprob, abs=1e-5)


def test_window_at_least_the_length_equals_plain(decoder):
    model, tok = decoder
    plain = score(model, tok, TEXTS)
    n = max(len(_ids(tok, t)) for t in TEXTS)
    windowed = score(model, tok, TEXTS, window=n, stride=1)
    for a, b in zip(plain, windowed, strict=True):
        assert (a.tokens, a.logprob) == (b.tokens, pytest.approx(b.logprob, abs=1e-5))


def _hf_guide_strided_nll(model, ids: list[int], window: int, stride: int) -> tuple[float, int]:
    """The loop of the transformers perplexity guide, summed instead of averaged."""
    seq = torch.tensor([ids])
    nll, count, prev_end = 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + window, len(ids))
        trg_len = end - prev_end
        input_ids = seq[:, begin:end]
        target = input_ids.clone()
        target[:, :-trg_len] = -100
        with torch.no_grad():
            loss = model(input_ids, labels=target).loss
        valid = int((target[:, 1:] != -100).sum())
        nll += float(loss) * valid
        count += valid
        prev_end = end
        if end == len(ids):
            break
    return nll, count


def test_sliding_window_matches_the_transformers_guide(decoder):
    model, tok = decoder
    text = " ".join([TEXTS[1], TEXTS[3], TEXTS[0], TEXTS[1]])
    ids = _ids(tok, text)
    [r] = score(model, tok, [text], window=8, stride=3)
    nll, count = _hf_guide_strided_nll(model, ids, 8, 3)
    assert r.tokens == count == len(ids) - 1  # every token but the first, once
    assert -r.logprob == pytest.approx(nll, abs=1e-4)
    [plain] = score(model, tok, [text])
    assert plain.logprob != pytest.approx(r.logprob, abs=1e-4)  # less context, other score


def test_longer_than_the_model_slides_automatically(decoder):
    model, tok = decoder
    text = " ".join(str(i) for i in range(200))  # 200 tokens, the model has 128 positions
    [r] = score(model, tok, [text])
    assert r.tokens == 199 and math.isfinite(r.logprob)


def test_seq2seq_scores_target_given_source(seq2seq):
    model, tok = seq2seq
    src, tgt = ["the match today", "shares and tax"], ["goal team win", "market"]
    results = score(model, tok, tgt, prompts=src, batch_size=2)
    for s, t, r in zip(src, tgt, results, strict=True):
        labels = torch.tensor([_ids(tok, t)])
        with torch.no_grad():
            loss = model(input_ids=torch.tensor([tok(s)["input_ids"]]), labels=labels).loss
        assert r.tokens == labels.shape[1]
        assert -r.logprob == pytest.approx(float(loss) * r.tokens, abs=1e-4)


def test_corpus_perplexity_weights_by_tokens(decoder):
    model, tok = decoder
    rs = score(model, tok, TEXTS)
    total = sum(r.logprob for r in rs) / sum(r.tokens for r in rs)
    assert corpus_perplexity(rs) == pytest.approx(math.exp(-total))
    [empty] = score(model, tok, [""], prompts=["the bank"])
    assert empty.tokens == 0 and math.isnan(empty.perplexity)


def test_bad_arguments_are_one_line_errors(decoder, seq2seq):
    model, tok = decoder
    with pytest.raises(TunelabError, match="one per text"):
        score(model, tok, TEXTS, prompts=["a"])
    with pytest.raises(TunelabError, match="window - 1"):
        score(model, tok, TEXTS, window=4, stride=4)
    with pytest.raises(TunelabError, match="prompts"):
        score(seq2seq[0], seq2seq[1], TEXTS)
