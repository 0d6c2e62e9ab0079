"""`tunelab serve --replicas`: flag checks, the one-line error without Ray, and the tiny
decoder on a local Ray Serve autoscaled between 1 and 2 replicas (short delays): load scales
it to 2, idle back to 1, every request answers, keys are still required, and rate limits,
quotas and /metrics are shared by the replicas through the store."""

from __future__ import annotations

import builtins
import threading
import time

import pytest

from tests.unit.serve.live import free_port
from tunelab.errors import TunelabError
from tunelab.serve import replicas
from tunelab.serve.settings import ServeSettings

KEY = "replica-test-key-0123456789"
pytestmark = pytest.mark.filterwarnings("ignore:The `metrics_interval_s`:DeprecationWarning")


def test_plan_parses_and_names_the_flag():
    assert replicas.plan(ServeSettings()) is None  # one plain process: the uvicorn path
    assert replicas.plan(ServeSettings(replicas="3")).fixed == 3
    auto = replicas.plan(ServeSettings(replicas="auto", max_replicas=4, max_running=8))
    assert (auto.fixed, auto.min_replicas, auto.max_replicas, auto.target_ongoing) == (
        None,
        1,
        4,
        8.0,
    )
    bad = [
        ({"replicas": "two"}, "--replicas"),
        ({"replicas": "0"}, "--replicas"),
        ({"replicas": "auto", "min_replicas": 0}, "--min-replicas"),
        ({"replicas": "auto", "min_replicas": 3, "max_replicas": 2}, "--max-replicas"),
        ({"replicas": "auto", "upscale_delay": -1}, "--upscale-delay"),
        ({"replicas": "auto", "target_ongoing": -1}, "--target-ongoing"),
    ]
    for values, flag in bad:
        with pytest.raises(TunelabError, match=flag):
            replicas.plan(ServeSettings(**values))


def test_deployment_options_fit_the_machine():
    s = ServeSettings(max_running=4, max_queue=10)
    fixed = replicas.deployment_options(replicas.ReplicaPlan(fixed=2), s, cpus=8)
    assert fixed["num_replicas"] == 2 and fixed["ray_actor_options"]["num_cpus"] == 4
    assert fixed["max_ongoing_requests"] == 14  # tunelab's own queue answers 429, not Ray
    auto = replicas.plan(ServeSettings(replicas="auto", max_replicas=4, max_running=4))
    opts = replicas.deployment_options(auto, s, cpus=8)
    assert opts["ray_actor_options"]["num_cpus"] == 2 and "num_replicas" not in opts
    assert opts["autoscaling_config"]["target_ongoing_requests"] == 4.0


def test_without_ray_one_line_says_what_to_install(monkeypatch, capsys):
    from tunelab.cli import main

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    assert main(["serve", "tiny", "--replicas", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"tunelab: error: {replicas.INSTALL}"], err


def test_cli_names_the_bad_flag(capsys):
    from tunelab.cli import main

    assert main(["serve", "tiny", "--replicas", "auto", "--max-replicas", "0"]) == 2
    assert "--max-replicas" in capsys.readouterr().err


# --- on a local Ray -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_local():
    pytest.importorskip("ray.serve", reason="Ray Serve not installed: pip install 'tunelab[scale]'")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, namespace=replicas.NAMESPACE)
    yield ray
    replicas.stop()


def _wait(what, until, timeout=60.0):
    """Poll `until()` until true (the autoscaler's pace is Ray's, not this machine's)."""
    end = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_autoscales_1_to_2_and_back(ray_local, chat_decoder, tmp_path, monkeypatch):
    import httpx

    keys = tmp_path / "keys.txt"
    keys.write_text(f"load {KEY}\n")
    port = free_port()
    settings = ServeSettings(
        port=port,
        keys_file=str(keys),
        replicas="auto",
        min_replicas=1,
        max_replicas=2,
        target_ongoing=1,
        upscale_delay=0.5,
        downscale_delay=2,
        max_running=2,
        dtype="fp32",
    )
    p = replicas.plan(settings)
    replicas.start(str(chat_decoder), settings, p, cpus=2)
    url = f"http://127.0.0.1:{port}"
    assert replicas.replica_count() == 1

    assert httpx.post(f"{url}/v1/completions", json={"prompt": "a"}).status_code == 401
    auth = {"Authorization": f"Bearer {KEY}"}
    statuses: list[int] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=url, headers=auth, timeout=60) as c:
            while not stop.is_set():
                body = {"prompt": "the goal", "max_tokens": 24, "temperature": 0}
                statuses.append(c.post("/v1/completions", json=body).status_code)

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        _wait("2 replicas under load", lambda: replicas.replica_count() == 2)
        seen = len(statuses)
        _wait("requests after scaling up", lambda: len(statuses) > seen + 6)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert statuses and set(statuses) == {200}, sorted(set(statuses))
    _wait("1 replica when idle", lambda: replicas.replica_count() == 1)

    # /metrics: one page, every replica's samples labelled with it
    page = httpx.get(f"{url}/metrics").text
    assert "tunelab_queue_depth" in page and 'replica="' in page
    served = [
        float(line.rsplit(" ", 1)[1])
        for line in page.splitlines()
        if line.startswith('tunelab_requests_total{endpoint="/v1/completions"')
        and 'status="200"' in line
    ]
    assert sum(served) >= 1


def test_limits_and_quotas_hold_across_replicas(ray_local, served_decoder, tmp_path):
    """Two apps wired to one store (as two replicas are): a key's rate limit and its quota
    count once, whichever app a request lands on."""
    from fastapi.testclient import TestClient

    from tunelab.serve import ModelHolder, create_app
    from tunelab.serve.auth import KeyChecker, read_keys
    from tunelab.serve.keys import create_key

    keys_file = tmp_path / "keys.json"
    quota_key = create_key(str(keys_file), "q", tokens_per_day=1)[1]
    rate_key = create_key(str(keys_file), "r")[1]
    settings = ServeSettings(keys_file=str(keys_file), rate_limit=2, rate_burst=2)
    store = replicas.start_store(settings, name="tunelab-test-store")  # not the server's
    clients = []
    for name in ("a", "b"):
        app = create_app(
            settings, ModelHolder.of(served_decoder), KeyChecker(read_keys(str(keys_file)))
        )
        replicas.share(app, store, name)
        clients.append(TestClient(app).__enter__())
    a, b = clients
    body = {"prompt": "goal", "max_tokens": 2}

    def post(c, key):
        return c.post("/v1/completions", json=body, headers={"Authorization": f"Bearer {key}"})

    assert [post(c, rate_key).status_code for c in (a, b, a, b)] == [200, 200, 429, 429]

    assert post(a, quota_key).status_code == 200  # starts under its quota: finishes
    _wait("the quota charged", lambda: ray_local.get(store.used.remote("q")) > 0, 30)
    refused = post(b, quota_key)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota"

    assert b.get("/metrics").status_code == 200  # b pushes its page (replicas push it too)
    page = a.get("/metrics").text  # both apps' pages, labelled
    assert 'replica="a"' in page and 'replica="b"' in page
    for c in clients:
        c.__exit__(None, None, None)
    ray_local.kill(store)
