"""What /openapi.json says each endpoint answers: the success bodies (pydantic models used for
the documentation only; the endpoints build their dicts), and every error status the server
really gives, each with the OpenAI error envelope's schema and, where it is sent, Retry-After.

    @router.post("/v1/classify", responses=model_responses(ClassifyResponse))

Statuses by where they come from (docs/serving.md, "Limits and errors"): 413 and 500 can
answer any path (the body size limit and the catch-all run before routing); 401 and 429 any
/v1 path (API keys, rate limits); the model endpoints add 400, 404 (another model's id), 422
(a body that is not JSON or not valid), 503 (loading, failed, shutting down) and 504.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str = Field(description="One line saying what to change.")
    type: str = Field(description="invalid_request_error, authentication_error, server_error...")
    param: str | None = Field(description="The request field at fault, if one is.")
    code: str | None = Field(description="A stable code, e.g. invalid_json or queue_full.")


class ErrorResponse(BaseModel):
    """Every error body: OpenAI's envelope."""

    model_config = ConfigDict(extra="forbid")
    error: ErrorDetail


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(BaseModel):
    """OpenAI's legacy completions logprobs (request `logprobs`: k)."""

    tokens: list[str]
    token_logprobs: list[float]
    """log p(token) under the model's raw distribution (before sampling settings)."""
    top_logprobs: list[dict[str, float]]
    """Per token: the k most likely tokens and the chosen one."""
    text_offset: list[int]
    """Per token: its first character in the choice's text."""


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: Literal["stop", "length"]


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class CalledFunction(BaseModel):
    name: str
    arguments: str = Field(description="The arguments, a JSON text.")


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"]
    function: CalledFunction


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None = Field(description="The text; null when the answer is a tool call.")
    tool_calls: list[ToolCallOut] | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    """Request `logprobs: true` (and `top_logprobs`: k): log p of each token under the
    model's raw distribution (before sampling settings and constraints)."""

    content: list[TokenLogprob] | None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None
    finish_reason: Literal["stop", "length", "tool_calls"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class InputUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class Classification(BaseModel):
    index: int
    label: str
    score: float
    probs: dict[str, float]


class ClassifyResponse(BaseModel):
    object: Literal["list"]
    model: str
    data: list[Classification]
    usage: InputUsage


class Embedding(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str = Field(description="Floats, or base64 of float32s.")


class EmbeddingsResponse(BaseModel):
    object: Literal["list"]
    model: str
    data: list[Embedding]
    usage: InputUsage


class Score(BaseModel):
    index: int
    logprob: float
    tokens: int
    perplexity: float | None


class ScoreResponse(BaseModel):
    object: Literal["list"]
    model: str
    data: list[Score]
    usage: InputUsage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    dtype: str | None = None
    """What the model runs in (fp32, bf16, fp16, int8, int4; quantized runs: their method)."""
    device: str | None = None
    """Where it runs (cpu, cuda:0, ...). Both are absent while the model loads."""


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    """200 once the model is in; 503 while it loads (with Retry-After) or after it failed."""

    status: Literal["ready", "loading", "failed"]
    model: str
    kind: str | None = None
    family: str | None = None
    context: int | None = None
    endpoints: list[str] | None = None
    error: str | None = None


ERRORS: dict[int, str] = {
    400: "Bad request: the model's context exceeded (context_length_exceeded), an OpenAI field "
    "this server does not implement, an endpoint the model does not serve "
    "(unsupported_endpoint), or an output constraint that cannot be enforced (a JSON schema "
    "keyword, a regex look-around, a grammar error: the message names it), or two at once.",
    401: "Missing, malformed or unknown API key, when the server has keys (missing_api_key, "
    "invalid_api_key).",
    404: "The body's model names another model (model_not_found).",
    413: "The body is over --max-request-bytes (request_too_large).",
    422: "The body is not JSON (invalid_json) or a field has the wrong type or range "
    "(invalid_value).",
    429: "Over the key's rate limit (rate_limit_exceeded) or the queue is full (queue_full).",
    500: "A bug; its traceback is in the server log only.",
    503: "The model is still loading (model_loading, with Retry-After), failed to load "
    "(model_error), or the server is shutting down (shutting_down).",
    504: "The request took longer than --request-timeout, queueing included (timeout).",
}
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 1},
    }
}
WWW_AUTHENTICATE = {"WWW-Authenticate": {"schema": {"type": "string", "const": "Bearer"}}}
OPEN = (413, 500)
"""Statuses any path can answer."""
V1 = (*OPEN, 401, 429)
MODEL = (*V1, 400, 404, 422, 503, 504)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The documented error responses for `statuses`."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted(statuses):
        doc: dict[str, Any] = {"model": ErrorResponse, "description": ERRORS[status]}
        if status in (429, 503):
            doc["headers"] = RETRY_AFTER
        elif status == 401:
            doc["headers"] = WWW_AUTHENTICATE
        out[status] = doc
    return out


SSE_EVENT = {
    "type": "object",
    "properties": {
        "data": {
            "type": "string",
            "description": "A JSON chunk; a JSON error envelope if the stream fails; [DONE].",
        },
        "event": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer", "minimum": 0},
    },
    "required": ["data"],
}
"""One server-sent event (the `itemSchema` of Open API 3.2, as FastAPI writes it)."""


def _sse(what: str) -> dict[str, Any]:
    return {
        "description": f"stream false: the {what}; stream true: server-sent events, "
        f"`data: {{chunk}}` per text delta, then `data: [DONE]`.",
        "content": {"text/event-stream": {"itemSchema": SSE_EVENT}},
    }


def model_responses(ok: type[BaseModel], what: str, stream: bool = False) -> dict[int | str, dict]:
    """A model endpoint's responses: `ok`, the `what` (or server-sent events, with `stream`),
    and its errors."""
    success = _sse(what) if stream else {"description": f"The {what}."}
    return {200: {"model": ok, **success}, **errors(*MODEL)}


V1_RESPONSES = errors(*V1)
OPEN_RESPONSES = errors(*OPEN)
READY_RESPONSES = {
    200: {"model": Readiness, "description": "The model is loaded: what it serves."},
    503: {
        "model": Readiness,
        "description": "The model is loading (Retry-After) or failed to load.",
        "headers": RETRY_AFTER,
    },
    **OPEN_RESPONSES,
}
METRICS_RESPONSES = {
    200: {
        "description": "The metrics in Prometheus text exposition format (not JSON).",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
    **OPEN_RESPONSES,
}
