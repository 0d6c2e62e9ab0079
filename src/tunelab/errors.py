"""The error types for what a user or a client can cause, and for a service under load.

The CLI turns a `TunelabError` into one line on stderr and exit code 2; anything else is a
bug and keeps its traceback. The domain errors below are raised by the engine-side code
(scheduler, micro-batcher, generators) and mapped to HTTP only in `serve/errors.py`, so the
layers under serve/ never speak HTTP.
"""

from __future__ import annotations


class TunelabError(Exception):
    """A user-caused problem. The message says what was wrong and how to fix it, in one line."""


class BadRequest(TunelabError):
    """A request that cannot be served as asked (too long, bad options): the client's fault.

    `param` names the offending request field where there is one (OpenAI's error `param`)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class QueueFull(TunelabError):
    """The service's queue is full: try again after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceeded(TunelabError):
    """A request waited or ran past its deadline (`timeout` seconds) and was dropped."""

    def __init__(self, message: str, timeout: float) -> None:
        super().__init__(message)
        self.timeout = timeout


class ShuttingDown(TunelabError):
    """The service is stopping and takes no new work."""
