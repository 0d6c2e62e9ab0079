"""Every metric that the Grafana dashboard and the alert rules name is one that a live
server's /metrics really exposes (the app in-process on the tiny decoder, after a few
requests), so a renamed metric breaks this test, not a dashboard nobody looks at."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "deploy" / "grafana" / "tunelab.json"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
FROM_PROMETHEUS = {"up"}  # made by Prometheus for every scrape target, not by the server
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or"}
KEYWORDS |= {"unless", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (label matchers, strings, durations,
    grouping labels, functions and keywords left out)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings ("/v1/.+", "$job")
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range durations ([5m], [$__rate_interval])
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\blabel_values\s*\(([^,)]*),[^)]*\)", r"\1", expr)  # Grafana variables
    names = set()
    for m in re.finditer(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(\s*\()?", expr):
        if m.group(2) is None and m.group(1).lower() not in KEYWORDS:
            names.add(m.group(1))
    return names


def test_metric_names_parser():
    expr = (
        "histogram_quantile(0.95, sum by (le, endpoint) (rate(tunelab_request_duration_seconds"
        '_bucket{job=~"$job", endpoint=~"/v1/.+"}[$__rate_interval]))) / on() group_left() '
        "tunelab:threshold:x and on(job, instance) up offset 5m > 2"
    )
    assert metric_names(expr) == {
        "tunelab_request_duration_seconds_bucket",
        "tunelab:threshold:x",
        "up",
    }
    assert metric_names('label_values(tunelab_ready{job=~"$job"}, instance)') == {"tunelab_ready"}
    assert metric_names("vector(0.05)") == set()


def dashboard_queries() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    queries = [
        t["expr"] for p in dash["panels"] for t in p.get("targets", []) if p["type"] != "row"
    ]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            queries.append(
                var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            )
    return queries


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_dashboard_shape():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"]
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in panels:
        assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), p["title"]
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
    text = " ".join(dashboard_queries())
    # what the dashboard must show (issue 18): requests by status, latency, TTFT, tokens/s,
    # queue depth, batch size, errors, 429s, the model with its dtype and device
    for name in (
        "tunelab_requests_total",
        "tunelab_request_duration_seconds_bucket",
        "tunelab_time_to_first_token_seconds_bucket",
        "tunelab_tokens_generated_total",
        "tunelab_queue_depth",
        "tunelab_batch_size",
        "tunelab_model_info",
        'status="429"',
        'status=~"5.."',
        "by (status)",
    ):
        assert name in text, name


@pytest.fixture(scope="module")
def exposed(chat_decoder) -> set[str]:
    """The sample names of a live server's /metrics after a completion, a streamed chat and
    a refused request."""
    from fastapi.testclient import TestClient

    from tunelab.serve import ModelHolder, ServeSettings, create_app, load_served
    from tunelab.serve.auth import KeyChecker

    served = load_served(str(chat_decoder), "tiny-decoder", dtype="fp32")
    app = create_app(ServeSettings(), ModelHolder.of(served), KeyChecker({}))
    with TestClient(app) as c:
        assert c.post("/v1/completions", json={"prompt": "goal", "max_tokens": 2}).is_success
        chat = {"messages": [{"role": "user", "content": "goal"}], "max_tokens": 2, "stream": True}
        assert c.post("/v1/chat/completions", json=chat).is_success
        assert c.post("/v1/completions", json={"prompt": ""}).status_code == 400
        text = c.get("/metrics").text
    assert "tunelab_ready 1.0" in text.splitlines()  # what TunelabNotReady watches
    assert "tunelab_queue_limit 64.0" in text.splitlines()  # ServeSettings().max_queue
    names = {line.split("{")[0].split()[0] for line in text.splitlines() if line and line[0] != "#"}
    assert "tunelab_requests_total" in names  # the scrape worked
    return names


def test_dashboard_names_only_exposed_metrics(exposed):
    used = set().union(*map(metric_names, dashboard_queries()))
    assert used, "no metric found in the dashboard"
    assert not used - exposed, f"the dashboard names metrics /metrics lacks: {used - exposed}"


def test_rules_name_only_exposed_or_recorded_metrics(exposed):
    recorded = {r["record"] for r in rules() if "record" in r}
    used = set().union(*(metric_names(r["expr"]) for r in rules()))
    missing = used - exposed - recorded - FROM_PROMETHEUS
    assert not missing, f"rules.yml names metrics /metrics lacks: {missing}"
    raw = used - recorded - FROM_PROMETHEUS
    assert {"tunelab_ready", "tunelab_queue_limit", "tunelab_queue_depth"} <= raw


def test_ready_is_0_until_the_model_is_in():
    from fastapi.testclient import TestClient

    from tunelab.serve import ModelHolder, ServeSettings, create_app
    from tunelab.serve.auth import KeyChecker

    app = create_app(ServeSettings(max_queue=7), ModelHolder("not-loaded"), KeyChecker({}))
    lines = TestClient(app).get("/metrics").text.splitlines()  # no lifespan: never loads
    assert "tunelab_ready 0.0" in lines and "tunelab_queue_limit 7.0" in lines
