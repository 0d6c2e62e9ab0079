"""The server's domain errors beyond `tunelab.errors`, and the messages its queues refuse with.

Raised below the HTTP layer (the generators, the micro-batcher, `ServeState`); no status codes
here: `serve/errors.py` maps each of these, and `tunelab.errors`' QueueFull, DeadlineExceeded,
ShuttingDown and BadRequest, to its HTTP status, error code and Retry-After, in one table.
"""

from __future__ import annotations

import math

from tunelab.errors import BadRequest, DeadlineExceeded, QueueFull, TunelabError


class ModelLoading(TunelabError):
    """The model is still loading: retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelFailed(TunelabError):
    """The model failed to load: this server cannot answer model requests."""


class ModelNotServed(BadRequest):
    """The request names a model this server does not serve (its `model` field)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, param="model")


class EndpointNotServed(BadRequest):
    """The served model is of the wrong kind for the endpoint (a classifier asked to generate)."""


class ClientGone(TunelabError):
    """The client closed its connection before its answer was ready."""


class GenerationFailed(Exception):
    """Generation broke on a bug (not a TunelabError). The generator logged the traceback
    where it happened; the client hears only this one line. `__cause__` is the original."""

    def __init__(self, cause: BaseException | None = None) -> None:
        super().__init__("generation failed: the server log has the details")
        self.__cause__ = cause


def queue_full(name: str, retry_after: float) -> QueueFull:
    """The `name` queue refuses a request; the client may retry after whole seconds (>= 1)."""
    secs = max(1, math.ceil(retry_after))
    return QueueFull(f"the {name} queue is full: retry in {secs} s", retry_after=secs)


def deadline_exceeded(timeout: float) -> DeadlineExceeded:
    """A request ended at its `timeout` (the server's --request-timeout)."""
    return DeadlineExceeded(
        f"the request took longer than the server's {timeout:g} s limit and was ended: send "
        "less work per request or ask the operator for a longer --request-timeout",
        timeout=timeout,
    )
