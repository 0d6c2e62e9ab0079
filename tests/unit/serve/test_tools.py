"""Tools on /v1/chat/completions: tool_choice required or a named function constrains the
answer to a call valid under that tool's parameters (OpenAI's tool_calls shape, whole and
streamed, greedy and sampling, many prompts); auto renders the tools into the prompt and
parses a call the model wrote; tool messages go through the chat template; bad tool requests
are a 400 naming the field."""

from __future__ import annotations

import json

import pytest

from tests.unit.serve.bpe_served import bpe_served
from tunelab.serve.structured import parse_call

pytest.importorskip("llguidance")
jsonschema = pytest.importorskip("jsonschema")

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 10},
        "unit": {"enum": ["c", "f"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
ADD = {
    "type": "object",
    "properties": {
        "a": {"type": "integer", "minimum": 0, "maximum": 999},
        "b": {"type": "integer", "minimum": 0, "maximum": 999},
    },
    "required": ["a", "b"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather now.", "parameters": WEATHER},
    },
    {"type": "function", "function": {"name": "add", "parameters": ADD, "strict": True}},
]
SCHEMAS = {"get_weather": WEATHER, "add": ADD}
PROMPTS = ["weather in paris?", "add 2 and 3", "hello", "the quick brown fox", "2024", "yes?"]
# renders the tools and earlier calls, as a real tool-calling template does
TOOL_TEMPLATE = (
    "{% if tools %}tools: {% for t in tools %}{{ t.function.name }} {% endfor %}{% endif %}"
    "{% for m in messages %}{{ m.role }} {% if m.tool_calls %}call "
    "{{ m.tool_calls[0].function.name }} {{ m.tool_calls[0].function.arguments.a }} {% endif %}"
    "{% if m.tool_call_id %}for {{ m.tool_call_id }} {% endif %}{{ m.content }} {% endfor %}"
    "{% if add_generation_prompt %}assistant {% endif %}"
)


@pytest.fixture(scope="module")
def served():
    s = bpe_served()
    s.tokenizer.chat_template = TOOL_TEMPLATE
    return s


@pytest.fixture
def client(served, client_for):
    return client_for(served)


def _call_ok(call: dict, names: list[str]) -> None:
    assert call["type"] == "function" and call["id"].startswith("call_")
    fn = call["function"]
    assert fn["name"] in names
    jsonschema.validate(json.loads(fn["arguments"]), SCHEMAS[fn["name"]])


@pytest.mark.parametrize("choice", ["required", "named"])
@pytest.mark.parametrize("temperature", [0, 1.0])
def test_forced_calls_are_valid(client, choice, temperature):
    tool_choice = {"type": "function", "function": {"name": "add"}} if choice == "named" else choice
    names = ["add"] if choice == "named" else list(SCHEMAS)
    for p in PROMPTS:
        body = {"messages": [{"role": "user", "content": p}], "tools": TOOLS, "max_tokens": 64}
        body |= {"tool_choice": tool_choice, "temperature": temperature}
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        [c] = r.json()["choices"]
        assert c["finish_reason"] == "tool_calls", c
        assert c["message"]["content"] is None and c["message"]["role"] == "assistant"
        [call] = c["message"]["tool_calls"]
        _call_ok(call, names)


def test_streamed_call_comes_as_one_chunk(client):
    msgs = [{"role": "user", "content": "weather?"}]
    body = {"messages": msgs, "tools": TOOLS, "tool_choice": "required", "max_tokens": 64}
    r = client.post("/v1/chat/completions", json={**body, "stream": True})
    events = [json.loads(e[6:]) for e in r.text.split("\n\n") if e.startswith("data: {")]
    assert r.text.rstrip().endswith("data: [DONE]")
    last = events[-1]["choices"][0]
    assert last["finish_reason"] == "tool_calls"
    [call] = last["delta"]["tool_calls"]
    assert call["index"] == 0
    _call_ok({k: v for k, v in call.items() if k != "index"}, list(SCHEMAS))
    assert not any(e["choices"][0]["delta"].get("content") for e in events)


def test_auto_renders_the_tools_and_answers_text_when_no_call(served, client):
    msgs = [{"role": "user", "content": "hello"}]
    base = {"messages": msgs, "max_tokens": 6, "temperature": 0}
    with_tools = client.post("/v1/chat/completions", json={**base, "tools": TOOLS}).json()
    without = client.post("/v1/chat/completions", json=base).json()
    tok = served.tokenizer
    rendered = tok.apply_chat_template(
        msgs, tools=TOOLS, tokenize=False, add_generation_prompt=True
    )
    assert "get_weather add" in rendered
    assert with_tools["usage"]["prompt_tokens"] == len(
        tok(rendered, add_special_tokens=False)["input_ids"]
    )
    assert with_tools["usage"]["prompt_tokens"] > without["usage"]["prompt_tokens"]
    [c] = with_tools["choices"]  # the random model writes no call: plain content
    assert c["finish_reason"] in ("stop", "length") and isinstance(c["message"]["content"], str)
    assert "tool_calls" not in c["message"]


def test_auto_parses_a_call_the_model_wrote(served, client_for):
    """A generator that answers with a Hermes-style call: auto turns it into tool_calls."""
    from fastapi.testclient import TestClient

    from tunelab.serve import ModelHolder, ServeSettings, create_app
    from tunelab.serve.auth import KeyChecker
    from tunelab.serve.generation import GenEvent

    said = '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'

    class Scripted:
        def __init__(self, *a, **kw) -> None:
            pass

        def submit(self, request):
            async def events():
                yield GenEvent(0, said[:10])
                yield GenEvent(0, said[10:], "stop", 12)

            return events()

        def stop(self) -> None:
            pass

    app = create_app(ServeSettings(), ModelHolder.of(served), KeyChecker({}), Scripted)
    with TestClient(app) as c:
        body = {"messages": [{"role": "user", "content": "2+3"}], "tools": TOOLS}
        for stream in (False, True):
            r = c.post("/v1/chat/completions", json={**body, "stream": stream})
            if stream:
                evs = [json.loads(e[6:]) for e in r.text.split("\n\n") if e.startswith("data: {")]
                msg, reason = evs[-1]["choices"][0]["delta"], evs[-1]["choices"][0]["finish_reason"]
            else:
                msg, reason = (
                    r.json()["choices"][0]["message"],
                    r.json()["choices"][0]["finish_reason"],
                )
            assert reason == "tool_calls"
            [call] = msg["tool_calls"]
            assert call["function"] == {"name": "add", "arguments": '{"a": 2, "b": 3}'}
        # tool_choice none: the same text stays content
        r = c.post("/v1/chat/completions", json={**body, "tool_choice": "none"})
        assert r.json()["choices"][0]["message"]["content"] == said


def test_parse_call():
    names = ["add"]
    assert (
        parse_call('{"name": "add", "arguments": {"a": 1}}', names)[0]["function"]["name"] == "add"
    )
    assert parse_call('{"name": "add", "parameters": {"a": 1}}', names) is not None
    assert parse_call('{"name": "sub", "arguments": {}}', names) is None
    assert parse_call("the answer is 4", names) is None
    assert parse_call('{"name": "add", "arguments": "1"}', names) is None


def test_parse_several_calls_as_templates_write_them():
    """Hermes / Qwen write one <tool_call> block per call, Llama 3.x and SmolLM2 a JSON list:
    both are several tool_calls, each with its own id; anything else beside them is content."""
    names = ["add", "get_weather"]
    add = '{"name": "add", "arguments": {"a": 1, "b": 2}}'
    weather = '{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "c"}}'

    def called(calls):
        return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls]

    both = [("add", {"a": 1, "b": 2}), ("get_weather", {"city": "Oslo", "unit": "c"})]
    tagged = f"<tool_call>\n{add}\n</tool_call>\n<tool_call>\n{weather}\n</tool_call>"
    assert called(parse_call(tagged, names)) == both
    assert called(parse_call(f"<tool_call>{add}</tool_call><tool_call>{weather}", names)) == both
    assert called(parse_call(f"[{add}, {weather}]", names)) == both
    assert called(parse_call(f"<tool_call>[{add}, {weather}]</tool_call>", names)) == both
    calls = parse_call(f"[{add}, {add}]", names)
    assert len({c["id"] for c in calls}) == 2
    assert called(parse_call(tagged, names, parallel=False)) == both[:1]
    assert parse_call(f"Let me check. <tool_call>{add}</tool_call>", names) is None
    assert parse_call(f'[{add}, {{"name": "sub", "arguments": {{}}}}]', names) is None
    assert parse_call("[]", names) is None
    assert parse_call("<tool_call>not json</tool_call>", names) is None


def test_parallel_tool_calls_false_reaches_the_plan():
    from tunelab.serve.schemas import ChatRequest
    from tunelab.serve.structured import plan_for

    msgs = [{"role": "user", "content": "hi"}]
    body = {"model": "tiny", "messages": msgs, "tools": TOOLS}
    assert plan_for(ChatRequest(**body), chat=True).parallel
    assert not plan_for(ChatRequest(**body, parallel_tool_calls=False), chat=True).parallel


def test_tool_messages_go_through_the_template(served, client):
    msgs = [
        {"role": "user", "content": "add 2 and 3"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "5"},
    ]
    r = client.post(
        "/v1/chat/completions", json={"messages": msgs, "tools": TOOLS, "max_tokens": 3}
    )
    assert r.status_code == 200, r.text
    tok = served.tokenizer
    want = [
        {"role": "user", "content": "add 2 and 3"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "add", "arguments": {"a": 2, "b": 3}},
                }
            ],
        },
        {"role": "tool", "content": "5", "tool_call_id": "call_1"},
    ]
    text = tok.apply_chat_template(want, tools=TOOLS, tokenize=False, add_generation_prompt=True)
    assert "call add 2" in text and "for call_1 5" in text
    assert r.json()["usage"]["prompt_tokens"] == len(
        tok(text, add_special_tokens=False)["input_ids"]
    )


STRICT_BAD = {"type": "object", "properties": {"x": {"not": {}}}}


@pytest.mark.parametrize(
    ("fields", "param", "word"),
    [
        (
            {"tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
            "nope",
        ),
        ({"tools": None, "tool_choice": "required"}, "tool_choice", "needs tools"),
        ({"tools": TOOLS + [TOOLS[1]]}, "tools", "same name"),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "f", "parameters": STRICT_BAD, "strict": True},
                    }
                ]
            },
            "tools",
            "not",
        ),
        (
            {"tool_choice": "required", "response_format": {"type": "json_object"}},
            "response_format",
            "tool_choice",
        ),
    ],
)
def test_bad_tool_requests(client, fields, param, word):
    body = {"messages": [{"role": "user", "content": "x"}], "tools": TOOLS, "max_tokens": 3}
    body = {k: v for k, v in {**body, **fields}.items() if v is not None}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and word in err["message"], err


def test_a_non_strict_tool_ignores_what_it_cannot_enforce(client):
    tools = [{"type": "function", "function": {"name": "f", "parameters": STRICT_BAD}}]
    body = {"messages": [{"role": "user", "content": "x"}], "tools": tools, "max_tokens": 40}
    r = client.post("/v1/chat/completions", json={**body, "tool_choice": "required"})
    assert r.status_code == 200, r.text
    [call] = r.json()["choices"][0]["message"]["tool_calls"]
    assert isinstance(json.loads(call["function"]["arguments"]), dict)
