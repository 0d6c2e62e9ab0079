"""Prometheus metrics of one server, in its own CollectorRegistry (two apps in one process, as
in tests, do not share counters).

tunelab_requests_total{endpoint,status}        requests answered, by route and HTTP status
tunelab_request_duration_seconds{endpoint}      latency until the last byte (streams included)
tunelab_time_to_first_token_seconds{endpoint}   completions: arrival -> first generated text
tunelab_tokens_generated_total                  completion tokens produced
tunelab_queue_depth{queue}                      requests waiting (generate, classify, ...)
tunelab_batch_size{queue}                       inputs in the batch running now (0: idle)
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServeMetrics:
    """The server's metric objects and their registry."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "tunelab_requests", "Requests answered", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "tunelab_request_duration_seconds",
            "Request latency until the response's last byte",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "tunelab_time_to_first_token_seconds",
            "Time from a completion request's arrival to its first generated text",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("tunelab_tokens_generated", "Completion tokens generated", registry=r)
        self.queue_depth = Gauge(
            "tunelab_queue_depth", "Requests waiting in a queue", ["queue"], registry=r
        )
        self.batch_size = Gauge(
            "tunelab_batch_size", "Inputs in the batch running now", ["queue"], registry=r
        )

        self.model_info = Gauge(
            "tunelab_model_info",
            "The served model: 1, labelled with what it runs in and on",
            ["model", "kind", "dtype", "device"],
            registry=r,
        )

    def set_model(self, name: str, kind: str, precision: dict) -> None:
        """Label tunelab_model_info with the served model (once it has loaded)."""
        dtype, device = precision.get("dtype", "unknown"), precision.get("device", "unknown")
        self.model_info.labels(name, kind, dtype, device).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _endpoint(scope, paths: set[str]) -> str:
    """The matched route's path template, or the path when it is a known route refused before
    routing (401, 413), else 'other': label values stay bounded."""
    route = getattr(scope.get("route"), "path", None)
    if route:
        return route
    return scope["path"] if scope["path"] in paths else "other"


class MetricsMiddleware:
    """ASGI middleware: counts every HTTP response by endpoint and status, and times it."""

    def __init__(self, app, metrics: ServeMetrics, paths: set[str] | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.paths = paths if paths is not None else set()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def _send(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            endpoint = _endpoint(scope, self.paths)
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
