"""The metrics that alert rules need beside serve/metrics.py's: readiness and the limits that
the queue depth and batch size are measured against.

tunelab_ready              1 when GET /ready answers 200 (the model is in), else 0
tunelab_queue_limit        requests one queue may hold before answering 429 (--max-queue)
tunelab_max_running        most sequences decoded together (--max-running)

Read at scrape time (`set_function`), registered in the server's own registry.

`merge(texts)` joins the /metrics pages of several replicas into one, each sample labelled
with its `replica`: what GET /metrics answers under `tunelab serve --replicas` (replicas.py),
so one scrape sees them all and `sum(tunelab_queue_depth)` is the whole deployment's queue.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Gauge, generate_latest


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


class _Merged:
    """A collector (what generate_latest reads) over already-parsed metric families."""

    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self):
        return iter(self.families)


def merge(texts: Mapping[str, str], label: str = "replica") -> bytes:
    """The Prometheus text pages in `texts` (replica id -> page) as one page, every sample
    labelled `label`=its replica id (families keep their type and help)."""
    from prometheus_client.metrics_core import Metric
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, Metric] = {}
    for replica in sorted(texts):
        for fam in text_string_to_metric_families(texts[replica]):
            into = families.setdefault(
                fam.name, Metric(fam.name, fam.documentation, fam.type, fam.unit)
            )
            for s in fam.samples:
                into.samples.append(s._replace(labels={**s.labels, label: replica}))
    return generate_latest(_Merged(list(families.values())))
