"""Request bodies in the OpenAI wire format (pydantic), plus tunelab's own endpoints.

Fields OpenAI has and tunelab does not implement (echo, suffix, best_of, logit_bias,
frequency/presence penalties, the legacy `functions`...) are accepted only at their neutral
value: `unsupported()` names the first one set, and the endpoint answers 400 rather than
silently ignoring it. Extension fields: top_k, min_p, repetition_penalty, num_beams,
length_penalty. Constrained output (serve/structured.py turns these into a decoding
Constraint): `response_format`, vLLM's `structured_outputs` and its older `guided_choice`,
`guided_regex`, `guided_json`, `guided_grammar`; chat adds `tools` and `tool_choice`.
Logprobs: completions `logprobs` (0-5 alternatives), chat `logprobs` + `top_logprobs` (0-20).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def _whole(value):
    """2.0 is the integer 2 (JSON Schema says so, and clients generated from the schema may
    send it); 2.5, "2" and true stay errors."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Int = Annotated[int, BeforeValidator(_whole)]
"""A JSON integer: an int, or a float with no fraction."""
INT64 = 2**63
"""Seeds and top_k are int64 (torch's); beyond, the engine fails rather than refusing."""
# the bounds before the validator, so that the JSON schema has them as minimum / maximum
Positive = Annotated[int, Field(ge=1), BeforeValidator(_whole)]
Int64 = Annotated[int, Field(ge=-INT64, lt=INT64), BeforeValidator(_whole)]

NEUTRAL: dict[str, Any] = {
    "logprobs": (None, False, 0),
    "top_logprobs": (None, 0),
    "echo": (None, False),
    "suffix": (None, ""),
    "best_of": (None, 1),
    "logit_bias": (None, {}),
    "frequency_penalty": (None, 0, 0.0),
    "presence_penalty": (None, 0, 0.0),
    "tools": (None, []),
    "functions": (None, []),
    "tool_choice": (None, "none", "auto"),
    "response_format": (None, {"type": "text"}),
    "dimensions": (None,),
}


class _Body(BaseModel):
    # clients send fields this server does not know (user, metadata...): keep them, check below;
    # strict: "5" is no max_tokens and true is no token id (JSON has the right types)
    model_config = ConfigDict(extra="allow", strict=True, use_attribute_docstrings=True)
    model: str | None = None
    """The served model's id (see /v1/models); another id answers 404."""

    def unsupported(self) -> str | None:
        """The first OpenAI field set to something this server does not implement."""
        extra = self.model_extra or {}
        for name, neutral in NEUTRAL.items():
            if name in extra and extra[name] not in neutral:
                return name
        return None


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True)
    include_usage: bool = False


class _Sampling(_Body):
    max_tokens: Positive | None = None
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: Int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: Int64 | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    # extensions (transformers' names); the bounds keep the arithmetic finite: a penalty of
    # 1e-300 divides logits into inf, a length penalty of 1e10 overflows (step + 1) ** lp
    top_k: Int = Field(0, ge=0, lt=INT64)
    min_p: float = Field(0.0, ge=0, lt=1)
    repetition_penalty: float = Field(1.0, ge=0.01, le=100)
    num_beams: Int = Field(1, ge=1, le=16)
    length_penalty: float = Field(1.0, ge=-10, le=10)

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class JsonSchemaFormat(BaseModel):
    """response_format.json_schema: OpenAI's structured outputs."""

    model_config = ConfigDict(
        extra="allow", strict=True, populate_by_name=True, use_attribute_docstrings=True
    )
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    """The JSON schema every output must be valid under (absent: any JSON object)."""
    strict: bool | None = None
    """true: a schema keyword that cannot be enforced is a 400; false/absent: it is ignored."""


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StructuredOutputs(BaseModel):
    """vLLM's `structured_outputs`: exactly one of these."""

    model_config = ConfigDict(
        extra="forbid", strict=True, populate_by_name=True, use_attribute_docstrings=True
    )
    choice: list[str] | None = None
    """The output is one of these strings."""
    regex: str | None = None
    """The output fully matches this regular expression."""
    json_: dict[str, Any] | str | None = Field(None, alias="json")
    """The output is JSON valid under this schema (an object, or its JSON text)."""
    grammar: str | None = None
    """The output is a sentence of this Lark grammar (llguidance's dialect)."""
    json_object: bool | None = None
    """true: the output is any JSON object."""


class _Constrained(_Sampling):
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputs | None = None
    guided_choice: list[str] | None = None
    """vLLM's older spelling of structured_outputs.choice (and the three below)."""
    guided_regex: str | None = None
    guided_json: dict[str, Any] | str | None = None
    guided_grammar: str | None = None


class CompletionRequest(_Constrained):
    prompt: str | list[str] | list[Int] | list[list[Int]]
    max_tokens: Positive | None = None
    """Unset: OpenAI's 16, within the server's limit and the model's context."""
    logprobs: Int | None = Field(None, ge=0, le=5)
    """Each token's logprob and those of the k most likely alternatives (legacy shape)."""


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    type: str
    text: str | None = None


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, use_attribute_docstrings=True)
    name: str
    arguments: str
    """The arguments as a JSON text (OpenAI's spelling)."""


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, use_attribute_docstrings=True)
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCall] | None = None
    """An assistant message's earlier tool calls."""
    tool_call_id: str | None = None
    """A tool message: the call it answers."""
    name: str | None = None


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, use_attribute_docstrings=True)
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    """A JSON schema of the arguments (absent: any JSON object)."""
    strict: bool | None = None
    """true: a keyword of `parameters` that cannot be enforced is a 400."""


class Tool(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["function"]
    function: FunctionDef


class FunctionName(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["function"]
    function: FunctionName


class ChatRequest(_Constrained):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Positive | None = None
    logprobs: bool = False
    """true: each token's logprob in choices[i].logprobs.content."""
    top_logprobs: Int | None = Field(None, ge=0, le=20)
    """With logprobs: the k most likely alternatives of each token too."""
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    """none: never call; auto (the default with tools): the model may; required: one call;
    a named function: a call of that one. Calls are constrained to the tools' schemas."""
    parallel_tool_calls: bool | None = None
    """Accepted; tunelab answers at most one call per choice."""


class ClassifyRequest(_Body):
    input: str | list[str]


class EmbeddingsRequest(_Body):
    input: str | list[str] | list[Int] | list[list[Int]]
    encoding_format: Literal["float", "base64"] = "float"
    normalize: bool = True
    """Extension: scale every embedding to length 1 (as OpenAI's are); false: the raw mean."""


class ScoreRequest(_Body):
    input: str | list[str]
    """Texts (or completions, with prompt) to score."""
    prompt: str | list[str] | None = None
    """Context for every input (one, or one per input): only the input's tokens are scored."""
