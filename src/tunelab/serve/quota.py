"""Token quotas per key and per UTC day, and the token count of each request they charge.

`QuotaLedger` keeps each key's tokens (prompt + completion) of the current UTC day in this
process: a restart starts from zero (docs/deploy.md says so). With replicas
(serve/replicas.py) `share(used, charge)` keeps the counts in one store for all of them. The
auth middleware calls `acheck` before a request (429 `insufficient_quota` once the day's tokens
are spent, Retry-After: the seconds to midnight UTC); the audit middleware `charge`s the
request's tokens when it ends. A request that starts under its quota is finished even if it
goes over: the next one is refused.

`RequestTokens` is one request's count, opened by `track()` in a context variable for the
time of the request. Completions add to it through `counting(factory, settings)`, which
makes the app's generator add each request's prompt tokens and every finished choice's
completion tokens to the request that submitted it (streams included, whether they ask for
stream_options.include_usage or not); the other endpoints' counts are read from the `usage`
of their JSON answer (audit.py).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from tunelab.serve.errors import APIError

DAY = 86400


class QuotaLedger:
    """Tokens used per key id in the current UTC day."""

    def __init__(self, clock=time.time) -> None:
        self.clock = clock
        self._used: dict[str, tuple[int, int]] = {}  # key id -> (UTC day number, tokens)
        self._lock = threading.Lock()
        self._shared: tuple[Callable[[str], Awaitable[int]], Callable[[str, int], None]] | None
        self._shared = None

    def share(self, used: Callable[[str], Awaitable[int]], charge: Callable[[str, int], None]):
        """Keep the counts in a shared store: `acheck` awaits `used(key)` (today's tokens
        there), `charge` sends `charge(key, tokens)` there (replicas.py's store)."""
        self._shared = (used, charge)

    def used(self, key: str) -> int:
        day = int(self.clock() // DAY)
        with self._lock:
            seen, tokens = self._used.get(key, (day, 0))
            return tokens if seen == day else 0

    def charge(self, key: str, tokens: int) -> None:
        if tokens <= 0:
            return
        if self._shared is not None:
            self._shared[1](key, tokens)
            return
        day = int(self.clock() // DAY)
        with self._lock:
            seen, used = self._used.get(key, (day, 0))
            self._used[key] = (day, (used if seen == day else 0) + tokens)

    def check(self, key: str, tokens_per_day: int) -> None:
        """Raises APIError 429 (insufficient_quota) when `key` has spent `tokens_per_day`
        today (0: no quota)."""
        if tokens_per_day:
            self._refuse(key, tokens_per_day, self.used(key))

    async def acheck(self, key: str, tokens_per_day: int) -> None:
        """`check`, asking the shared store when there is one."""
        if not tokens_per_day:
            return
        used = await self._shared[0](key) if self._shared is not None else self.used(key)
        self._refuse(key, tokens_per_day, used)

    def _refuse(self, key: str, tokens_per_day: int, used: int) -> None:
        if used < tokens_per_day:
            return
        wait = max(1, math.ceil(DAY - self.clock() % DAY))
        raise APIError(
            429,
            f"key {key} has used its {tokens_per_day} tokens for today (UTC): retry after "
            f"midnight UTC, in {wait} s, or ask for a larger --tokens-per-day",
            code="insufficient_quota",
            type="insufficient_quota",
            headers={"Retry-After": str(wait)},
        )


@dataclass
class RequestTokens:
    prompt: int = 0
    completion: int = 0
    known: bool = False
    """Whether anything was counted (a generator saw the request, or its answer had usage)."""

    @property
    def total(self) -> int:
        return self.prompt + self.completion

    def read_usage(self, tail: bytes) -> None:
        """Take the counts from the last `"usage": {...}` in the tail of a JSON answer (every
        tunelab answer ends with it); does nothing when a generator already counted."""
        at = tail.rfind(b'"usage"')
        if self.known or at < 0:
            return
        text = tail[at + len(b'"usage"') :].decode("utf-8", "replace").lstrip().removeprefix(":")
        try:
            usage, _ = json.JSONDecoder().raw_decode(text.lstrip())
            prompt, total = int(usage.get("prompt_tokens", 0)), int(usage.get("total_tokens", 0))
        except (ValueError, AttributeError, TypeError):
            return
        self.prompt, self.completion, self.known = prompt, max(0, total - prompt), True


_CURRENT: ContextVar[RequestTokens | None] = ContextVar("tunelab_request_tokens", default=None)


@contextlib.contextmanager
def track() -> Iterator[RequestTokens]:
    """The token count of the request running in this context (and the tasks it starts)."""
    tokens = RequestTokens()
    reset = _CURRENT.set(tokens)
    try:
        yield tokens
    finally:
        _CURRENT.reset(reset)


def counting(factory, settings):
    """A generator factory (as create_app takes) whose generators count tokens for `track`.

    `factory` None is the server's default, chosen as `ServeState.get_generator` chooses it.
    The generator is instrumented in place (its `submit` wrapped), so it keeps its class.
    """

    def make(served, **kwargs):
        inner = factory
        if inner is None:  # the same choice as ServeState.get_generator's
            from tunelab.serve.generation import SerialGenerator
            from tunelab.serve.scheduler import ContinuousGenerator

            inner = (
                SerialGenerator
                if settings.serial_generation
                else functools.partial(ContinuousGenerator, max_batch=settings.max_running)
            )
        gen = inner(served, **kwargs)
        gen.submit = _counted(gen.submit)
        return gen

    return make


def _counted(submit):
    @functools.wraps(submit)
    def wrapper(request):
        events = submit(request)  # QueueFull raises here, before anything is counted
        tokens = _CURRENT.get()
        if tokens is None:
            return events
        tokens.known = True
        tokens.prompt += sum(len(p) for p in request.prompts)
        return _tally(events, tokens)

    return wrapper


async def _tally(events, tokens: RequestTokens):
    try:
        async for ev in events:
            if ev.finish_reason:
                tokens.completion += ev.tokens
            yield ev
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()
