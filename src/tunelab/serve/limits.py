"""Request limits: per-key rate limiting (a token bucket) and the request body size cap.

`RateLimiter` keeps one bucket per key name (or client address when auth is off): `rate`
requests per minute refill it continuously, `burst` is its size; an empty bucket answers 429
with Retry-After = the seconds until the next request is allowed. With replicas
(serve/replicas.py) the buckets live in one shared store: `share(retry_after)` hands every
check to it, so a key's rate holds across replicas, not per replica.

`BodyLimitMiddleware` (ASGI) refuses a body over the cap with 413: at once when Content-Length
says so, and while reading when a chunked or lying client sends more. It reads the (small,
JSON) body up front and replays it to the app, then passes later messages (the client's
disconnect) through, so endpoints can still notice a client that went away.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Awaitable, Callable

from tunelab.serve.errors import APIError


class RateLimiter:
    """Token buckets by key name."""

    def __init__(self, per_minute: float, burst: int = 0, clock=time.monotonic) -> None:
        self.rate = per_minute / 60.0  # tokens per second
        self.capacity = float(burst or max(1, math.ceil(per_minute)))
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, last time)
        self._lock = threading.Lock()
        self._shared: Callable[[str], Awaitable[float]] | None = None

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def share(self, retry_after: Callable[[str], Awaitable[float]]) -> None:
        """Take tokens from a shared store's buckets instead of this process's:
        `retry_after(name)` is awaited by `acheck` (the replicas' store; see replicas.py)."""
        self._shared = retry_after

    def retry_after(self, name: str) -> float:
        """0 when `name` may send a request now (and takes a token), else seconds to wait."""
        if not self.enabled:
            return 0.0
        with self._lock:
            now = self.clock()
            tokens, last = self._buckets.get(name, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[name] = (tokens - 1, now)
                return 0.0
            self._buckets[name] = (tokens, now)
            return (1 - tokens) / self.rate

    def check(self, name: str) -> None:
        """Raises APIError 429 with Retry-After when `name` is over its rate."""
        self._refuse(name, self.retry_after(name))

    async def acheck(self, name: str) -> None:
        """`check`, asking the shared store when there is one (what the auth middleware
        awaits)."""
        if not self.enabled:
            return
        wait = await self._shared(name) if self._shared is not None else self.retry_after(name)
        self._refuse(name, wait)

    @staticmethod
    def _refuse(name: str, wait: float) -> None:
        if wait > 0:
            secs = max(1, math.ceil(wait))
            raise APIError(
                429,
                f"rate limit reached for {name}: retry in {secs} s",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(secs)},
            )


class BodyLimitMiddleware:
    """ASGI middleware answering 413 for request bodies over `max_bytes`."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self, size: str) -> APIError:
        return APIError(
            413,
            f"request body of {size} bytes is over the server's limit of {self.max_bytes} "
            "bytes: send fewer or shorter inputs",
            code="request_too_large",
        )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._too_large(length.decode()).response()(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left before sending it all
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(f"more than {self.max_bytes}").response()(
                    scope, receive, send
                )
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        await self.app(scope, replay(body, receive), send)


def replay(body: bytes, receive):
    """An ASGI receive that hands the app `body` (already read) as one message, then defers
    to the server's `receive` (disconnects)."""
    replayed = False

    async def _receive():
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return _receive
