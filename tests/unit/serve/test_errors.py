"""The one mapping from domain errors to HTTP: each error's status, OpenAI `type`, `code`,
`param` and Retry-After, as clients get them from an endpoint that raises it."""

from __future__ import annotations

import pytest

from tunelab.errors import BadRequest, ShuttingDown, TunelabError
from tunelab.serve.domain_errors import (
    ClientGone,
    EndpointNotServed,
    GenerationFailed,
    ModelFailed,
    ModelLoading,
    ModelNotServed,
    deadline_exceeded,
    queue_full,
)
from tunelab.serve.errors import api_error

# error -> (status, type, code, param, Retry-After)
CASES = [
    (queue_full("generation", 2.3), (429, "rate_limit_error", "queue_full", None, "3")),
    (queue_full("classify", 0.01), (429, "rate_limit_error", "queue_full", None, "1")),
    (deadline_exceeded(1.5), (504, "timeout_error", "timeout", None, None)),
    (ShuttingDown("stopping"), (503, "server_error", "shutting_down", None, "5")),
    (ModelLoading("loading"), (503, "server_error", "model_loading", None, "5")),
    (ModelFailed("broken"), (503, "server_error", "model_error", None, None)),
    (ModelNotServed("not here"), (404, "not_found_error", "model_not_found", "model", None)),
    (EndpointNotServed("no"), (400, "invalid_request_error", "unsupported_endpoint", None, None)),
    (ClientGone("gone"), (499, "invalid_request_error", "client_closed", None, None)),
    (BadRequest("bad stop", param="stop"), (400, "invalid_request_error", None, "stop", None)),
    (TunelabError("bad option"), (400, "invalid_request_error", None, None, None)),
    (GenerationFailed(RuntimeError("secret detail")), (500, "server_error", None, None, None)),
]


@pytest.mark.parametrize(("exc", "expected"), CASES, ids=lambda c: type(c).__name__)
def test_each_domain_error_has_its_http_answer(exc, expected, served_decoder, client_for):
    status, kind, code, param, retry = expected
    c = client_for(served_decoder)

    async def fail():
        raise exc

    c.app.add_api_route("/fail", fail)
    r = c.get("/fail")
    assert r.status_code == status and r.headers.get("retry-after") == retry
    assert r.json() == {"error": {"message": str(exc), "type": kind, "param": param, "code": code}}
    assert "secret" not in r.text


def test_messages_clients_read():
    assert str(queue_full("generation", 2.3)) == "the generation queue is full: retry in 3 s"
    assert "1.5 s limit" in str(deadline_exceeded(1.5))
    assert str(GenerationFailed()) == "generation failed: the server log has the details"


def test_bugs_are_not_domain_errors():
    assert api_error(RuntimeError("a bug")) is None  # CatchAllMiddleware's logged 500
