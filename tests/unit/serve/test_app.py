"""/health, /ready, /v1/models, /metrics; loading in the background; safetensors only."""

from __future__ import annotations

import threading
import time

import pytest

from tunelab.errors import TunelabError
from tunelab.serve import ModelHolder, load_served
from tunelab.serve.loading import check_source, require_safetensors


def _wait(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def test_health_at_once_ready_after_loading(chat_decoder, client_for):
    gate = threading.Event()

    def slow_loader(source, name):
        gate.wait(10)
        return load_served(source, name, dtype="fp32")

    holder = ModelHolder(str(chat_decoder), "tiny", loader=slow_loader)
    c = client_for(None, holder=holder)
    assert c.get("/health").json() == {"status": "ok"}
    r = c.get("/ready")
    assert r.status_code == 503 and r.json()["status"] == "loading" and "retry-after" in r.headers
    r = c.post("/v1/completions", json={"prompt": "goal"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_loading"
    gate.set()
    _wait(lambda: c.get("/ready").status_code == 200)
    ready = c.get("/ready").json()
    assert ready["kind"] == "generate" and ready["context"] == 128
    assert "/v1/completions" in ready["endpoints"]
    assert c.post("/v1/completions", json={"prompt": "goal", "max_tokens": 2}).status_code == 200


def test_failed_load_is_reported(tmp_path, client_for):
    holder = ModelHolder(str(tmp_path / "nothing"), "x")
    c = client_for(None, holder=holder)
    _wait(lambda: holder.ready_event.is_set())
    r = c.get("/ready")
    assert r.status_code == 503 and r.json()["status"] == "failed" and r.json()["error"]
    assert c.post("/v1/completions", json={"prompt": "a"}).json()["error"]["code"] == "model_error"


def test_only_safetensors_are_loaded(tiny_models, tmp_path):
    import shutil

    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_models["decoder"], folder)
    weights = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(weights, folder / "pytorch_model.bin")
    for call in (require_safetensors, check_source, load_served):
        with pytest.raises(TunelabError, match="pickle weights .*pytorch_model.bin"):
            call(str(folder))
    require_safetensors(tiny_models["decoder"])  # the normal folder passes


def test_check_source_errors(tmp_path):
    with pytest.raises(TunelabError, match="not a model folder"):
        check_source(str(tmp_path))
    with pytest.raises(TunelabError, match="not a model"):
        check_source(str(tmp_path / "missing"))


def test_metrics_count_requests_tokens_and_latency(served_decoder, client_for):
    c = client_for(served_decoder)
    c.post("/v1/completions", json={"prompt": "goal", "max_tokens": 4, "temperature": 0})
    with c.stream(
        "POST",
        "/v1/completions",
        json={"prompt": "goal", "max_tokens": 4, "temperature": 0, "stream": True},
    ) as s:
        s.read()
    c.post("/v1/completions", json={"prompt": "goal", "max_tokens": 0})
    text = c.get("/metrics").text
    assert 'tunelab_requests_total{endpoint="/v1/completions",status="200"} 2.0' in text
    assert 'tunelab_requests_total{endpoint="/v1/completions",status="422"} 1.0' in text
    assert 'tunelab_request_duration_seconds_count{endpoint="/v1/completions"} 3.0' in text
    assert 'tunelab_time_to_first_token_seconds_count{endpoint="/v1/completions"} 2.0' in text
    tokens = [ln for ln in text.splitlines() if ln.startswith("tunelab_tokens_generated_total")]
    assert 2 <= float(tokens[0].split()[-1]) <= 8
    assert 'tunelab_queue_depth{queue="generate"} 0.0' in text
    assert 'tunelab_batch_size{queue="generate"} 0.0' in text


def test_pii_masked_in_inputs(served_decoder, client_for, caplog):
    c = client_for(served_decoder, mask_pii_in_inputs=True, log_requests=True)
    with caplog.at_level("INFO", logger="tunelab.serve"):
        r = c.post("/v1/score", json={"input": "mail me at bob@example.com"})
    assert r.status_code == 200
    assert "mail me at [EMAIL]" in caplog.text and "bob@example.com" not in caplog.text


def test_models_and_metrics_say_what_the_model_runs_in(chat_decoder, client_for):
    from tunelab.serve import load_served

    served = load_served(str(chat_decoder), "tiny-bf16", dtype="bf16", device="cpu")
    c = client_for(served)
    card = c.get("/v1/models").json()["data"][0]
    assert (card["dtype"], card["device"]) == ("bf16", "cpu")
    text = c.get("/metrics").text
    assert (
        'tunelab_model_info{device="cpu",dtype="bf16",kind="generate",model="tiny-bf16"} 1.0'
        in text
    )
    out = c.post("/v1/completions", json={"prompt": "hello", "max_tokens": 2})
    assert out.status_code == 200, out.text
