"""A real `tunelab serve` process (uvicorn on 127.0.0.1) driven by the official openai client:
completions and chat, streaming included, a wrong key, and a graceful shutdown that lets an
in-flight request finish."""

from __future__ import annotations

import shutil
import signal
import threading
import time

import httpx
import openai
import pytest

from tests.unit.serve.conftest import CHAT_TEMPLATE, KEY
from tests.unit.serve.live import start_serve


@pytest.fixture(scope="module")
def server(tiny_models, tmp_path_factory):
    """One server for the module: the shutdown test, last, stops it."""
    from transformers import AutoTokenizer

    tmp_path = tmp_path_factory.mktemp("serve")
    folder = tmp_path / "tiny-chat"
    shutil.copytree(tiny_models["decoder"], folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(folder)
    keys = tmp_path / "keys.txt"
    keys.write_text(f"tester {KEY}\n")
    proc, base = start_serve(folder, "--keys-file", str(keys), "--batch-window-ms", "2500")
    yield proc, base
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_openai_client_against_a_real_server(server):
    proc, base = server
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0)
    assert [m.id for m in client.models.list()] == ["tiny"]

    kw = {"model": "tiny", "max_tokens": 10, "temperature": 0}
    whole = client.completions.create(prompt="the goal of the match", **kw)
    assert whole.choices[0].text and whole.usage.completion_tokens >= 1
    parts = list(client.completions.create(prompt="the goal of the match", stream=True, **kw))
    assert len(parts) > 1
    assert "".join(p.choices[0].text for p in parts) == whole.choices[0].text

    msgs = [{"role": "user", "content": "goal team coach"}]
    chat = client.chat.completions.create(messages=msgs, **kw)
    assert chat.choices[0].message.role == "assistant"
    streamed = client.chat.completions.create(messages=msgs, stream=True, **kw)
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == chat.choices[0].message.content

    bad = openai.OpenAI(base_url=f"{base}/v1", api_key="wrong-key-000000", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.completions.create(prompt="goal", model="tiny")
    with pytest.raises(openai.BadRequestError, match="context"):
        client.completions.create(prompt="goal " * 130, **kw)


def test_graceful_shutdown_finishes_in_flight_request(server):
    proc, base = server
    out = {}

    def slow_request():  # scoring waits out the 2.5 s batch window: in flight at SIGTERM
        out["r"] = httpx.post(
            f"{base}/v1/score",
            json={"input": ["the goal of the match"]},
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=30,
        )

    t = threading.Thread(target=slow_request)
    t.start()
    time.sleep(0.8)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.4)
    with pytest.raises(httpx.TransportError):  # no new connections while draining
        httpx.get(f"{base}/health", timeout=2)
    t.join(30)
    r = out["r"]
    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["tokens"] > 0
    assert proc.wait(timeout=30) == 0
