"""Request bodies are checked to be JSON before FastAPI sees them: one clear 422 for each way
a body can fail, and valid JSON accepted whatever Content-Type it came with.

`JsonBodyMiddleware` (ASGI, inside the body size limit, so the body is small and read once)
looks at POST bodies sent to the app's JSON endpoints. A body that is empty, not UTF-8, not
JSON (NaN and Infinity included: RFC 8259 has neither), nested deeper than `MAX_DEPTH`,
holding a number no double holds (1e999 would be inf) or one of over `MAX_DIGITS` digits, or
a lone UTF-16 surrogate escape ("\\ud800": no character, which no tokenizer can encode)
answers 422 with code `invalid_json` and a one-line message; FastAPI alone would answer some
of these with a bare 400, and pass inf on to the model. A body that parses is passed on as
application/json whatever its Content-Type (text/plain, none, or the form type `curl -d`
sends), which is what OpenAI clients and curl users expect; one that does not parse and was
not sent as JSON is told to send Content-Type: application/json.
"""

from __future__ import annotations

import json
import math
from email.message import Message

from tunelab.serve.errors import APIError
from tunelab.serve.limits import replay

MAX_DEPTH = 32
"""Most nested arrays and objects in a body (OpenAI's need 5: {messages: [{content: [{}]}]})."""
MAX_DIGITS = 100
"""Longest integer accepted (token ids and seeds need 20 digits; Python refuses 4,300 with a
message about sys.set_int_max_str_digits)."""
HINT = "send a JSON object with Content-Type: application/json"


class _Unusable(ValueError):
    """A JSON text the endpoints cannot use (its message says why)."""


def _constant(name: str):
    raise _Unusable(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise _Unusable(f"a number has more than {MAX_DIGITS} digits")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Unusable(f"the number {text[:20]} is too large for a double")
    return value


def _problem(value) -> str | None:
    """What is wrong with a parsed body: too deep, or a string no text can hold; None if fine."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            items = [*item.keys(), *item.values()]
        elif isinstance(item, list):
            items = item
        else:
            if isinstance(item, str):
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return "a string holds a lone surrogate escape (\\ud800-\\udfff): no text"
            continue
        if depth > MAX_DEPTH:
            return f"it nests arrays and objects deeper than {MAX_DEPTH} levels"
        stack.extend((x, depth + 1) for x in items)
    return None


def _is_json_type(content_type: str | None) -> bool:
    if not content_type:
        return False
    msg = Message()
    msg["content-type"] = content_type
    sub = msg.get_content_subtype()
    return msg.get_content_maintype() == "application" and (sub == "json" or sub.endswith("+json"))


def _invalid(message: str) -> APIError:
    return APIError(422, message, code="invalid_json")


def check_json(body: bytes, content_type: str | None) -> None:
    """Raises APIError 422 invalid_json when `body` is not a JSON text the endpoints can read."""
    if not body.strip():
        raise _invalid(f"the request body is empty: {HINT}")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _invalid(
            f"the request body is not valid UTF-8 (byte {exc.start}): send JSON encoded as UTF-8"
        ) from None
    try:
        value = json.loads(text, parse_constant=_constant, parse_int=_int, parse_float=_float)
    except json.JSONDecodeError as exc:
        sent = f"sent as {content_type}" if content_type else "sent with no Content-Type"
        sent = "" if _is_json_type(content_type) else f", {sent}"
        why = f"{exc.msg} at line {exc.lineno} column {exc.colno}{sent}"
        raise _invalid(f"the request body is not JSON ({why}): {HINT}") from None
    except _Unusable as exc:
        problem = str(exc)
    except RecursionError:
        problem = f"it nests arrays and objects deeper than {MAX_DEPTH} levels"
    else:
        problem = _problem(value)
    if problem:
        raise _invalid(f"the request body is not usable: {problem}")


class JsonBodyMiddleware:
    """ASGI middleware: POST bodies to `paths` must be JSON (else 422 invalid_json); their
    Content-Type is set to application/json for the endpoint."""

    def __init__(self, app, paths: set[str]) -> None:
        self.app = app
        self.paths = paths
        """The JSON endpoints' paths (filled once the app's routes are in)."""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left before sending it all
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        headers = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-type"]
        sent = dict(scope.get("headers") or []).get(b"content-type")
        try:
            check_json(body, sent.decode("latin-1") if sent is not None else None)
        except APIError as exc:
            await exc.response()(scope, receive, send)
            return
        scope["headers"] = [*headers, (b"content-type", b"application/json")]  # in place: the
        # outer middleware (metrics) reads the route the router writes into this scope
        await self.app(scope, replay(body, receive), send)
