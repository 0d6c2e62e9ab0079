"""Request bodies in the OpenAI wire format (pydantic), plus tunelab's own endpoints.

Fields OpenAI has and tunelab does not implement (logprobs, echo, suffix, best_of, tools,
logit_bias, frequency/presence penalties...) are accepted only at their neutral value:
`unsupported()` names the first one set, and the endpoint answers 400 rather than silently
ignoring it. Extension fields: top_k, min_p, repetition_penalty, num_beams, length_penalty.
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
    model_config = ConfigDict(extra="allow", strict=True)
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


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[Int] | list[list[Int]]
    max_tokens: Positive | None = None
    """Unset: OpenAI's 16, within the server's limit and the model's context."""


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Positive | None = None


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
