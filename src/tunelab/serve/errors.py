"""Every error the server sends, in the OpenAI shape, and never with a stack trace.

    {"error": {"message": "...", "type": "invalid_request_error", "param": null, "code": null}}

This module is the one place where errors become HTTP. `APIError` is raised by endpoints and
middleware (auth, limits, json_body). Everything below them (the generators, the micro-batcher,
`ServeState`) raises domain errors instead (tunelab.errors, serve/domain_errors.py); `HTTP`
below maps each to its status, error code and Retry-After, and `api_error` applies it, for
the exception handlers (`install_error_handlers`, which also shape request validation errors
(422) and HTTP errors (404, 405)) and for the error event of a stream that already started.
`CatchAllMiddleware` catches anything else, logs its traceback on the server and answers 500
with a short body (a handler registered for `Exception` would be re-raised by Starlette into
the server's log a second time).
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunelab.errors import BadRequest, DeadlineExceeded, QueueFull, ShuttingDown, TunelabError
from tunelab.serve import domain_errors as de

log = logging.getLogger("tunelab.serve")

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
    504: "timeout_error",
}


class APIError(Exception):
    """An error response: status, one-line message, and the OpenAI type/param/code fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}
        self.type = type or TYPES.get(status, "invalid_request_error")

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


@dataclass(frozen=True)
class Http:
    """How one domain error is answered."""

    status: int
    code: str | None = None
    retry_after: float | None = None
    """Retry-After seconds, for errors that carry no `retry_after` of their own."""


HTTP: dict[type[BaseException], Http] = {
    QueueFull: Http(429, "queue_full"),  # Retry-After: the error's retry_after
    DeadlineExceeded: Http(504, "timeout"),
    ShuttingDown: Http(503, "shutting_down", retry_after=5),
    de.ModelLoading: Http(503, "model_loading"),  # Retry-After: the error's retry_after
    de.ModelFailed: Http(503, "model_error"),
    de.ModelNotServed: Http(404, "model_not_found"),
    de.EndpointNotServed: Http(400, "unsupported_endpoint"),
    de.ClientGone: Http(499, "client_closed"),
    BadRequest: Http(400),
    TunelabError: Http(400),
    de.GenerationFailed: Http(500),
}
"""Domain error -> its answer; the most specific class of an error wins. The message is the
error's own; `param` is its `param` (BadRequest's)."""


def api_error(exc: BaseException) -> APIError | None:
    """The HTTP error for `exc` (an APIError as it is), or None when `exc` is not a domain
    error: a bug, for CatchAllMiddleware's logged 500."""
    if isinstance(exc, APIError):
        return exc
    http = next((HTTP[c] for c in type(exc).__mro__ if c in HTTP), None)
    if http is None:
        return None
    retry = getattr(exc, "retry_after", http.retry_after)
    headers = None if retry is None else {"Retry-After": str(max(1, math.ceil(retry)))}
    param = getattr(exc, "param", None)
    return APIError(http.status, str(exc), param=param, code=http.code, headers=headers)


_TYPE_TAG = re.compile(r"^(str|int|float|bool|none|(list|dict|tuple|set)\[.*\])$")


def _json_kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "an array" if isinstance(value, list) else "a string"


def _validation_error(exc: RequestValidationError) -> APIError:
    errors = exc.errors()
    first = errors[0] if errors else {}
    # pydantic names the union member a value failed in (prompt.str, prompt.list[int].1):
    # the client's parameter is the field path without those type tags
    loc = [str(x) for x in first.get("loc", ()) if x != "body" and not _TYPE_TAG.match(str(x))]
    if first.get("type") == "json_invalid":
        return APIError(422, "the request body is not valid JSON", code="invalid_json")
    if tuple(first.get("loc", ())) == ("body",) and first.get("type") == "model_attributes_type":
        got = _json_kind(first.get("input"))
        return APIError(
            422, f"the request body must be a JSON object, not {got}", code="invalid_value"
        )
    param = ".".join(loc) or None
    msg = first.get("msg", "invalid request")
    where = f"{param}: " if param else ""
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return APIError(422, f"{where}{msg}{more}", param=param, code="invalid_value")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = {404: f"no such endpoint: {request.url.path}", 405: "method not allowed"}.get(
            exc.status_code, str(exc.detail)
        )
        return APIError(exc.status_code, msg, headers=exc.headers).response()

    async def _domain(request: Request, exc: Exception) -> JSONResponse:
        return api_error(exc).response()

    for cls in (TunelabError, de.GenerationFailed):  # subclasses: looked up along the MRO
        app.add_exception_handler(cls, _domain)


class CatchAllMiddleware:
    """ASGI middleware: an unexpected exception becomes a logged traceback and a 500 body."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def _send(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, _send)
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if started:  # too late for a status: end the response so the client is not left
                with contextlib.suppress(Exception):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            err = APIError(500, "internal server error: the server log has the details")
            await err.response()(scope, receive, send)
