"""One audit line per /v1 request, and the quota charge of its tokens.

    INFO:     audit key=alice endpoint=/v1/chat/completions model=smollm2 status=200
              prompt_tokens=31 completion_tokens=64 total_tokens=95 ms=812

(one line) on the logger `tunelab.audit`, which `tunelab serve` writes to stderr with its
other lines. What it holds is masked by construction: the key's id (never the key, nor
whatever a refused caller sent), the route's template (an unknown path is `other`, as in
/metrics, so no text of the request reaches the line), the status, the tokens (`-` where
none were counted: a refused request) and the time taken; never the inputs or outputs.
Probes (/health, /ready, /metrics) are not audited.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from tunelab.serve.metrics import _endpoint
from tunelab.serve.quota import track

log = logging.getLogger("tunelab.audit")
TAIL = 4096
"""Bytes of a JSON answer kept to find its `usage` (the last field of every answer)."""


class AuditMiddleware:
    """ASGI middleware (outside the auth middleware, which names the key in
    scope["state"]["key_id"]): counts the request's tokens, charges them to the key's quota
    and logs the audit line when the response has been sent."""

    def __init__(
        self,
        app,
        keys,
        model_name: Callable[[], str],
        paths: set[str] | None = None,
        prefix: str = "/v1/",
    ) -> None:
        self.app = app
        self.keys = keys
        self.model_name = model_name
        self.paths = paths if paths is not None else set()
        self.prefix = prefix

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        start = time.perf_counter()
        status, is_json, tail = 500, False, b""

        async def _send(message) -> None:
            nonlocal status, is_json, tail
            if message["type"] == "http.response.start":
                status = message["status"]
                kind = dict(message.get("headers") or []).get(b"content-type", b"")
                is_json = kind.startswith(b"application/json")
            elif message["type"] == "http.response.body" and is_json:
                tail = (tail + message.get("body", b""))[-TAIL:]
            await send(message)

        with track() as tokens:
            try:
                await self.app(scope, receive, _send)
            finally:
                if status == 200 and is_json:
                    tokens.read_usage(tail)
                key = state.get("key_id")
                if key is not None:
                    self.keys.ledger.charge(key, tokens.total)
                counts = (
                    f"prompt_tokens={tokens.prompt} completion_tokens={tokens.completion} "
                    f"total_tokens={tokens.total}"
                    if tokens.known
                    else "prompt_tokens=- completion_tokens=- total_tokens=-"
                )
                log.info(
                    "audit key=%s endpoint=%s model=%s status=%d %s ms=%d",
                    key or "-",
                    _endpoint(scope, self.paths),
                    self.model_name(),
                    status,
                    counts,
                    round((time.perf_counter() - start) * 1000),
                )
