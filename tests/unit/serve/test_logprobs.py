"""logprobs through the server: completions' legacy shape (tokens, token_logprobs,
top_logprobs, text_offset) and chat's (logprobs.content with top_logprobs), whole and
streamed, equal to the log-softmax of the model's logits computed here independently; bad
combinations are a clear 400/422."""

from __future__ import annotations

import json

import pytest
import torch

from tests.unit.serve.bpe_served import bpe_served
from tunelab.decoding import DecodingOptions, generate

PROMPTS = ["the quick", "give me json", "brown fox jumps", "hello"]


@pytest.fixture(scope="module")
def served():
    return bpe_served(closer_bias=0.0, seed=3)


@pytest.fixture
def client(served, client_for):
    return client_for(served)


def _reference(served, prompt_ids: list[int], tokens: list[int]) -> torch.Tensor:
    ids = torch.tensor([prompt_ids + tokens])
    with torch.no_grad():
        logits = served.model(input_ids=ids).logits[0].float()
    n = len(prompt_ids)
    return torch.log_softmax(logits[n - 1 : n - 1 + len(tokens)], -1)


def _greedy(served, prompt: str, max_tokens: int):
    [out] = generate(
        served.model, served.tokenizer, [prompt], DecodingOptions(max_new_tokens=max_tokens)
    )
    return out


def _events(text: str) -> list[dict]:
    return [json.loads(e[6:]) for e in text.split("\n\n") if e.startswith("data: {")]


@pytest.mark.parametrize("k", [0, 2, 5])
def test_completion_logprobs_are_the_models(served, client, k):
    tok = served.tokenizer
    for prompt in PROMPTS:
        want = _greedy(served, prompt, 8)
        body = {"prompt": prompt, "max_tokens": 8, "temperature": 0, "logprobs": k}
        r = client.post("/v1/completions", json=body)
        assert r.status_code == 200, r.text
        [c] = r.json()["choices"]
        lp = c["logprobs"]
        assert c["text"] == want.text
        assert len(lp["tokens"]) == len(want.token_ids) == len(lp["token_logprobs"])
        ref = _reference(served, tok(prompt)["input_ids"], want.token_ids)
        for j, t in enumerate(want.token_ids):
            assert lp["token_logprobs"][j] == pytest.approx(float(ref[j, t]), abs=1e-4)
            top = lp["top_logprobs"][j]
            assert lp["tokens"][j] in top and len(top) <= k + 1
            # the k best and the chosen one (tokens with the same text share one key)
            allowed = (torch.topk(ref[j], k).values.tolist() if k else []) + [float(ref[j, t])]
            assert all(min(abs(v - a) for a in allowed) < 1e-4 for v in top.values())
            assert max(top.values()) == pytest.approx(max(allowed), abs=1e-4)
        # text_offset: each token's first character in the text
        offsets = lp["text_offset"]
        assert offsets[0] == 0 and offsets == sorted(offsets)
        ends = offsets[1:] + [len(c["text"])]
        for a, b, t in zip(offsets, ends, lp["tokens"], strict=True):
            if "\ufffd" not in t and t not in tok.all_special_tokens:
                assert c["text"][a:b] == t


def test_chat_logprobs_whole_and_streamed(served, client):
    tok = served.tokenizer
    msgs = [{"role": "user", "content": "the quick brown"}]
    body = {"messages": msgs, "max_tokens": 8, "temperature": 0, "logprobs": True}
    whole = client.post("/v1/chat/completions", json={**body, "top_logprobs": 4}).json()
    [c] = whole["choices"]
    content = c["logprobs"]["content"]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    want = _greedy(served, text, 8)  # the chat prompt, tokenized as the server does
    prompt_ids = tok(text, add_special_tokens=False)["input_ids"]
    ref = _reference(served, prompt_ids, want.token_ids)
    assert [e["token"] for e in content] == [tok.decode([t]) for t in want.token_ids]
    for j, (e, t) in enumerate(zip(content, want.token_ids, strict=True)):
        assert e["logprob"] == pytest.approx(float(ref[j, t]), abs=1e-4)
        if "\ufffd" in e["token"]:  # part of a character: its own bytes, no UTF-8 text
            with pytest.raises(UnicodeDecodeError):
                bytes(e["bytes"]).decode()
        else:
            assert bytes(e["bytes"]) == e["token"].encode()
        assert len(e["top_logprobs"]) == 4
        assert e["top_logprobs"][0]["token"] == e["token"]  # greedy: the top one was chosen
        assert [x["logprob"] for x in e["top_logprobs"]] == pytest.approx(
            torch.topk(ref[j], 4).values.tolist(), abs=1e-4
        )
    plain = client.post("/v1/chat/completions", json=body).json()["choices"][0]
    assert [e["top_logprobs"] for e in plain["logprobs"]["content"]] == [[]] * len(content)
    r = client.post("/v1/chat/completions", json={**body, "top_logprobs": 4, "stream": True})
    parts = [
        e
        for ev in _events(r.text)
        for e in ((ev["choices"][0]["logprobs"] or {}).get("content") or [])
    ]
    assert parts == content


def test_streamed_completion_logprobs_match(client):
    body = {"prompt": "brown fox", "max_tokens": 8, "temperature": 0, "logprobs": 3}
    whole = client.post("/v1/completions", json=body).json()["choices"][0]["logprobs"]
    r = client.post("/v1/completions", json={**body, "stream": True})
    chunks = [e["choices"][0]["logprobs"] for e in _events(r.text) if e["choices"]]
    joined = {k: [x for c in chunks if c for x in c[k]] for k in whole}
    assert joined == whole


def test_serial_generator_gives_the_same_logprobs(served, client, client_for):
    serial = client_for(served, serial_generation=True)
    body = {"prompt": PROMPTS, "max_tokens": 6, "temperature": 0, "logprobs": 2}
    a = client.post("/v1/completions", json=body).json()["choices"]
    b = serial.post("/v1/completions", json=body).json()["choices"]
    assert [c["logprobs"]["tokens"] for c in a] == [c["logprobs"]["tokens"] for c in b]
    for x, y in zip(a, b, strict=True):
        assert x["logprobs"]["token_logprobs"] == pytest.approx(
            y["logprobs"]["token_logprobs"], abs=1e-4
        )


def test_sampled_tokens_and_only_asking_requests(client):
    """Sampling: the reported logprob is the model's raw one, the top list sorted; a request
    that does not ask gets logprobs null."""
    body = {"prompt": PROMPTS, "max_tokens": 8, "temperature": 1.5, "n": 2, "logprobs": 5}
    for c in client.post("/v1/completions", json=body).json()["choices"]:
        lp = c["logprobs"]
        for j, tok_text in enumerate(lp["tokens"]):
            top = lp["top_logprobs"][j]
            assert lp["token_logprobs"][j] <= max(top.values()) + 1e-6
            assert top[tok_text] >= lp["token_logprobs"][j] - 1e-6  # the best of its text
            assert list(top.values())[:-1] == sorted(list(top.values())[:-1], reverse=True)
    free = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 3}).json()
    assert free["choices"][0]["logprobs"] is None


@pytest.mark.parametrize(
    ("path", "fields", "status", "param"),
    [
        ("/v1/chat/completions", {"top_logprobs": 2}, 400, "top_logprobs"),
        ("/v1/chat/completions", {"logprobs": True, "top_logprobs": 21}, 422, "top_logprobs"),
        ("/v1/completions", {"logprobs": 6}, 422, "logprobs"),
        ("/v1/completions", {"logprobs": 1, "num_beams": 2, "temperature": 0}, 400, "logprobs"),
    ],
)
def test_bad_logprobs_requests(client, path, fields, status, param):
    body = {"max_tokens": 3, **fields}
    body |= (
        {"prompt": "x"}
        if path == "/v1/completions"
        else {"messages": [{"role": "user", "content": "x"}]}
    )
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param
