"""The metrics that alert rules need beside serve/metrics.py's: readiness and the limits that
the queue depth and batch size are measured against.

tunelab_ready              1 when GET /ready answers 200 (the model is in), else 0
tunelab_queue_limit        requests one queue may hold before answering 429 (--max-queue)
tunelab_max_running        most sequences decoded together (--max-running)

Read at scrape time (`set_function`), registered in the server's own registry.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge


def install(
    registry: CollectorRegistry, ready: Callable[[], bool], max_queue: int, max_running: int
) -> None:
    """Register the gauges above in `registry`; `ready()` is asked at every scrape."""
    Gauge(
        "tunelab_ready", "1 when /ready answers 200 (the model is in), else 0", registry=registry
    ).set_function(lambda: 1.0 if ready() else 0.0)
    Gauge(
        "tunelab_queue_limit",
        "Requests one queue may hold before answering 429 (--max-queue)",
        registry=registry,
    ).set(max_queue)
    Gauge(
        "tunelab_max_running",
        "Most sequences decoded together by continuous batching (--max-running)",
        registry=registry,
    ).set(max_running)
