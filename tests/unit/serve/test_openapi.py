"""/openapi.json documents what the server really answers: for every endpoint, the error
statuses it gives with the OpenAI error envelope's schema, the success bodies, streaming as
server-sent events, and /metrics as Prometheus text."""

from __future__ import annotations

import pytest

MODEL_ENDPOINTS = [
    "/v1/completions",
    "/v1/chat/completions",
    "/v1/classify",
    "/v1/embeddings",
    "/v1/score",
]
# every /v1 request: key (401), rate (429), body size (413), a bug (500)
V1 = {"401", "413", "429", "500"}
# and with a model behind it: bad request (400), another model (404), invalid body (422),
# model loading / failed / shutting down or queue full (503, 429), deadline (504)
MODEL = V1 | {"200", "400", "404", "422", "503", "504"}
EXPECTED = {
    **dict.fromkeys(MODEL_ENDPOINTS, MODEL),
    "/v1/models": V1 | {"200"},
    "/health": {"200", "413", "500"},
    "/ready": {"200", "413", "500", "503"},
    "/metrics": {"200", "413", "500"},
}


@pytest.fixture
def spec(served_decoder, client_for):
    r = client_for(served_decoder).get("/openapi.json")
    assert r.status_code == 200
    return r.json()


def _resolve(spec: dict, schema: dict) -> dict:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec["components"]["schemas"][name]
    return schema


def _operation(spec: dict, path: str) -> dict:
    ops = spec["paths"][path]
    assert len(ops) == 1, ops
    return next(iter(ops.values()))


def test_every_endpoint_is_documented(spec):
    assert set(spec["paths"]) == set(EXPECTED)
    for path, methods in spec["paths"].items():
        method = "post" if path in MODEL_ENDPOINTS else "get"
        assert set(methods) == {method}, path


@pytest.mark.parametrize("path", EXPECTED)
def test_each_endpoint_lists_the_statuses_it_gives(spec, path):
    assert set(_operation(spec, path)["responses"]) == EXPECTED[path]


def test_errors_have_the_openai_envelope_schema(spec):
    for path in EXPECTED:
        for status, response in _operation(spec, path)["responses"].items():
            if status == "200" or (path == "/ready" and status == "503"):
                continue
            assert set(response["content"]) == {"application/json"}, (path, status)
            envelope = _resolve(spec, response["content"]["application/json"]["schema"])
            assert envelope["required"] == ["error"] and envelope["additionalProperties"] is False
            error = _resolve(spec, envelope["properties"]["error"])
            assert set(error["required"]) == {"message", "type", "param", "code"}
            assert error["properties"]["message"]["type"] == "string"
            assert {"type": "null"} in error["properties"]["code"]["anyOf"]
            assert response["description"], (path, status)
    assert "HTTPValidationError" not in str(spec)  # FastAPI's own 422 body is never sent


def test_retry_after_is_documented_where_it_is_sent(spec):
    for path in MODEL_ENDPOINTS:
        responses = _operation(spec, path)["responses"]
        for status in ("429", "503"):
            assert "Retry-After" in responses[status]["headers"], (path, status)


def test_success_bodies_are_documented(spec):
    completions = _operation(spec, "/v1/completions")["responses"]["200"]["content"]
    assert set(completions) == {"application/json", "text/event-stream"}
    body = _resolve(spec, completions["application/json"]["schema"])
    assert {"id", "object", "created", "model", "choices", "usage"} <= set(body["required"])
    chat = _operation(spec, "/v1/chat/completions")["responses"]["200"]["content"]
    assert set(chat) == {"application/json", "text/event-stream"}
    for path in ("/v1/classify", "/v1/embeddings", "/v1/score", "/v1/models", "/health"):
        content = _operation(spec, path)["responses"]["200"]["content"]
        assert set(content) == {"application/json"}, path
        assert _resolve(spec, content["application/json"]["schema"])["properties"], path
    ready = _operation(spec, "/ready")["responses"]
    for status in ("200", "503"):
        schema = _resolve(spec, ready[status]["content"]["application/json"]["schema"])
        assert "status" in schema["required"]


def test_metrics_is_prometheus_text_not_json(spec):
    content = _operation(spec, "/metrics")["responses"]["200"]["content"]
    assert set(content) == {"text/plain"}
    assert content["text/plain"]["schema"] == {"type": "string"}
    assert "Prometheus" in _operation(spec, "/metrics")["responses"]["200"]["description"]


def test_request_bodies_are_json(spec):
    for path in MODEL_ENDPOINTS:
        body = _operation(spec, path)["requestBody"]
        assert set(body["content"]) == {"application/json"} and body["required"] is True


def test_the_documented_envelope_is_the_one_sent(served_decoder, client_for):
    from tunelab.serve.errors import APIError
    from tunelab.serve.openapi import ErrorResponse

    c = client_for(served_decoder)
    answers = [
        c.post("/v1/completions", json={"prompt": "goal", "n": "many"}),  # 422
        c.post("/v1/completions", json={"prompt": "goal", "model": "other"}),  # 404
        c.post("/v1/classify", json={"input": "goal"}),  # 400
        c.post("/v1/completions", content=b"{"),  # 422 invalid_json
        c.get("/v1/nothing"),  # 404 from routing
    ]
    for r in answers:
        assert r.status_code >= 400
        ErrorResponse.model_validate(r.json())  # no other field, none missing
    ErrorResponse.model_validate(APIError(503, "x", code="y").body())
