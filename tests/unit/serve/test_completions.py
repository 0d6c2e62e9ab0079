"""/v1/completions and /v1/chat/completions against tunelab.decoding run directly."""

from __future__ import annotations

import json

import pytest

from tunelab.decoding import DecodingOptions, generate


def _sse(text: str) -> list:
    """The data payloads of a server-sent event stream ([DONE] kept as a string)."""
    events = [e for e in text.split("\n\n") if e.strip()]
    assert all(e.startswith("data: ") for e in events)
    return [e[6:] if e[6:] == "[DONE]" else json.loads(e[6:]) for e in events]


def test_greedy_completion_matches_generate(served_decoder, client_for):
    c = client_for(served_decoder)
    prompt = "the match goal team"
    r = c.post("/v1/completions", json={"prompt": prompt, "max_tokens": 12, "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    [want] = generate(
        served_decoder.model, served_decoder.tokenizer, [prompt], DecodingOptions(max_new_tokens=12)
    )
    assert body["object"] == "text_completion" and body["model"] == "tiny-decoder"
    [choice] = body["choices"]
    assert choice["text"] == want.text
    assert choice["finish_reason"] == ("length" if want.finish_reason == "length" else "stop")
    u = body["usage"]
    assert u["prompt_tokens"] == want.prompt_tokens
    assert u["completion_tokens"] == len(want.token_ids)
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]


def test_prompt_list_and_n_with_seed(served_decoder, client_for):
    c = client_for(served_decoder)
    req = {"prompt": ["bank market", "phone chip data"], "max_tokens": 6, "n": 2, "seed": 7}
    a = c.post("/v1/completions", json=req).json()
    b = c.post("/v1/completions", json=req).json()
    assert [x["index"] for x in a["choices"]] == [0, 1, 2, 3]
    assert [x["text"] for x in a["choices"]] == [x["text"] for x in b["choices"]]  # same seed


def test_beam_search_extension_matches_generate(served_decoder, client_for):
    c = client_for(served_decoder)
    req = {"prompt": "goal team", "max_tokens": 5, "num_beams": 3, "n": 2, "temperature": 0}
    body = c.post("/v1/completions", json=req).json()
    opts = DecodingOptions(max_new_tokens=5, num_beams=3, num_return_sequences=2)
    want = generate(served_decoder.model, served_decoder.tokenizer, ["goal team"], opts)
    assert [x["text"] for x in body["choices"]] == [w.text for w in want]


def test_stop_string_cuts_the_text(served_decoder, client_for):
    c = client_for(served_decoder)
    free = c.post(
        "/v1/completions", json={"prompt": "the goal", "max_tokens": 10, "temperature": 0}
    ).json()["choices"][0]["text"]
    words = free.split()
    assert len(words) >= 3, free
    stop = words[2]
    r = c.post(
        "/v1/completions",
        json={"prompt": "the goal", "max_tokens": 10, "temperature": 0, "stop": [stop]},
    ).json()["choices"][0]
    assert r["finish_reason"] == "stop"
    assert r["text"] == free[: free.find(stop)]


def test_streaming_equals_the_whole_answer(served_decoder, client_for):
    c = client_for(served_decoder)
    req = {"prompt": "market price", "max_tokens": 10, "temperature": 0}
    whole = c.post("/v1/completions", json=req).json()
    with c.stream(
        "POST",
        "/v1/completions",
        json={**req, "stream": True, "stream_options": {"include_usage": True}},
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = _sse(r.read().decode())
    assert events[-1] == "[DONE]"
    chunks, usage = events[:-2], events[-2]
    assert len(chunks) > 1  # deltas, not one blob
    assert "".join(e["choices"][0]["text"] for e in chunks) == whole["choices"][0]["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert usage["choices"] == [] and usage["usage"] == whole["usage"]


def test_chat_completion_uses_the_chat_template(served_decoder, client_for):
    c = client_for(served_decoder)
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "goal team"}]
    r = c.post("/v1/chat/completions", json={"messages": msgs, "max_tokens": 8, "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    tok = served_decoder.tokenizer
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    [want] = generate(served_decoder.model, tok, [ids], DecodingOptions(max_new_tokens=8))
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": want.text}
    assert body["usage"]["prompt_tokens"] == len(ids)

    with c.stream(
        "POST",
        "/v1/chat/completions",
        json={"messages": msgs, "max_tokens": 8, "temperature": 0, "stream": True},
    ) as s:
        events = _sse(s.read().decode())
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(e["object"] == "chat.completion.chunk" for e in events[:-1])
    streamed = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert streamed == want.text


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"prompt": "goal " * 125, "max_tokens": 10}, 400, "max_tokens"),
        ({"prompt": "goal", "max_tokens": 5000}, 400, "max_tokens"),
        ({"prompt": "goal", "max_tokens": 0}, 422, "max_tokens"),
        ({"prompt": "goal", "temperature": 3}, 422, "temperature"),
        ({"prompt": "goal", "echo": True}, 400, "echo"),
        ({"prompt": "   "}, 400, "prompt"),
        ({"prompt": "goal", "model": "gpt-4"}, 404, "model"),
        ({"max_tokens": 3}, 422, "prompt"),
        # strict types (hardening issue): a string is no number, a boolean is no token id
        ({"prompt": "goal", "max_tokens": "5"}, 422, "max_tokens"),
        ({"prompt": [1, True]}, 422, "prompt"),
        ({"prompt": "goal", "stream": "yes"}, 422, "stream"),
    ],
)
def test_bad_completion_requests(served_decoder, client_for, body, status, param):
    r = client_for(served_decoder).post("/v1/completions", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["message"] and "Traceback" not in r.text
    assert set(err) == {"message", "type", "param", "code"}


def test_context_length_error_says_what_to_do(served_decoder, client_for):
    r = client_for(served_decoder).post(
        "/v1/completions", json={"prompt": "goal " * 125, "max_tokens": 10}
    )
    err = r.json()["error"]
    assert err["code"] == "context_length_exceeded" and "128" in err["message"]


def test_greedy_with_n_is_a_clear_400(served_decoder, client_for):
    r = client_for(served_decoder).post(
        "/v1/completions", json={"prompt": "goal", "n": 2, "temperature": 0}
    )
    assert r.status_code == 400 and "num_return_sequences" in r.json()["error"]["message"]


def test_chat_without_template_is_a_400(tiny_models, client_for):
    from tunelab.serve import load_served

    served = load_served(str(tiny_models["decoder"]), "plain", dtype="fp32")
    r = client_for(served).post(
        "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "no_chat_template"


def test_json_numbers_keep_working_under_strict_types(served_decoder, client_for):
    c = client_for(served_decoder)
    body = {"prompt": [2, 5, 7], "max_tokens": 2, "temperature": 0, "top_p": 1}
    r = c.post("/v1/completions", json=body)  # ints where floats are declared: fine
    assert r.status_code == 200, r.text
