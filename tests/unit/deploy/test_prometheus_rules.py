"""deploy/prometheus/rules.yml: promtool checks the rules and runs their unit tests (every
alert fires on a synthetic bad series, stays quiet on a healthy one, and resolves), and the
tests themselves can fail: a threshold moved past the synthetic data breaks them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.unit.deploy.promtool import find_promtool

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "prometheus"
RULES = DEPLOY / "rules.yml"
TESTS = DEPLOY / "rules.test.yml"
STATES = {"TunelabInstanceDown", "TunelabNotReady"}  # a state, not a tunable threshold


def _rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def _alerts() -> dict[str, dict]:
    return {r["alert"]: r for r in _rules() if "alert" in r}


@pytest.fixture(scope="module")
def promtool() -> str:
    exe, why = find_promtool()
    if exe is None:
        pytest.skip(f"no promtool: {why}")
    return exe


def _promtool(exe: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_every_alert_is_complete():
    alerts = _alerts()
    assert set(alerts) == {
        "TunelabInstanceDown",
        "TunelabNotReady",
        "TunelabHighErrorRate",
        "TunelabHighLatencyP95",
        "TunelabSlowFirstToken",
        "TunelabQueueSaturated",
        "TunelabManyRateLimited",
    }
    thresholds = {
        r["record"] for r in _rules() if r.get("record", "").startswith("tunelab:threshold:")
    }
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["for"].endswith("m"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        used = {t for t in thresholds if t in rule["expr"]}
        assert used or name in STATES, f"{name} compares with no tunelab:threshold: series"
    used_anywhere = {t for t in thresholds if any(t in r["expr"] for r in alerts.values())}
    assert used_anywhere == thresholds  # no threshold left unused


def test_every_alert_fires_and_resolves_in_the_unit_tests():
    cases: dict[str, list[bool]] = {}
    for test in yaml.safe_load(TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            fired = case.get("exp_alerts") or []
            cases.setdefault(case["alertname"], []).append(bool(fired))
            for alert in fired:  # the healthy instances never fire
                assert alert["exp_labels"]["instance"] == "bad:8000"
    for name in _alerts():
        seen = cases.get(name, [])
        assert True in seen and False in seen, f"{name}: needs a firing and a quiet case"
        assert seen[-1] is False, f"{name}: its last case must show it resolved"


def test_promtool_checks_and_unit_tests_pass(promtool):
    checked = _promtool(promtool, "check", "rules", RULES.name, cwd=DEPLOY)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _promtool(promtool, "test", "rules", TESTS.name, cwd=DEPLOY)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout + tested.stderr


def test_the_unit_tests_can_fail(promtool, tmp_path):
    """Move a threshold past the synthetic data: its alert no longer fires, promtool says so."""
    text = RULES.read_text()
    moved = text.replace(
        "record: tunelab:threshold:error_ratio\n        expr: vector(0.05)",
        "record: tunelab:threshold:error_ratio\n        expr: vector(0.5)",
    )
    assert moved != text
    (tmp_path / "rules.yml").write_text(moved)
    shutil.copy(TESTS, tmp_path / "rules.test.yml")
    tested = _promtool(promtool, "test", "rules", "rules.test.yml", cwd=tmp_path)
    assert tested.returncode != 0
    assert "TunelabHighErrorRate" in tested.stdout + tested.stderr
