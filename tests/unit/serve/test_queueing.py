"""Bounded queues (QueueFull: 429 + Retry-After), deadlines (DeadlineExceeded: 504), and
cancellation of requests whose client went away: the micro-batcher, the generator, and both
over HTTP."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
import time

import pytest

from tunelab.decoding import DecodingOptions
from tunelab.errors import DeadlineExceeded, QueueFull
from tunelab.serve.batching import MicroBatcher
from tunelab.serve.errors import api_error
from tunelab.serve.generation import GenRequest, SerialGenerator


class Gate:
    """A batch function (or model forward wrapper) that blocks until opened."""

    def __init__(self, fn=None) -> None:
        self.open = threading.Event()
        self.entered = threading.Event()
        self.seen: list = []
        self.fn = fn

    def __call__(self, *args, **kwargs):
        self.entered.set()
        self.open.wait(10)
        if self.fn is not None:
            return self.fn(*args, **kwargs)
        (items,) = args
        self.seen.append(list(items))
        return [x * 10 for x in items]


def _batcher(fn, **kw) -> MicroBatcher:
    pool = concurrent.futures.ThreadPoolExecutor(1)
    return MicroBatcher(fn, name="t", executor=pool, **kw)


def test_requests_arriving_together_run_as_one_batch():
    async def main():
        gate = Gate()
        gate.open.set()
        b = _batcher(gate, window_s=0.05, max_batch=8)
        out = await asyncio.gather(b.submit([1, 2], 5), b.submit([3], 5), b.submit([4, 5], 5))
        await b.stop()
        return out, gate.seen

    out, seen = asyncio.run(main())
    assert out == [[10, 20], [30], [40, 50]]
    assert seen == [[1, 2, 3, 4, 5]]


def test_max_batch_splits_batches():
    async def main():
        gate = Gate()
        gate.open.set()
        b = _batcher(gate, window_s=0.05, max_batch=3)
        out = await asyncio.gather(*(b.submit([i, i], 5) for i in range(3)))
        await b.stop()
        return out, gate.seen

    out, seen = asyncio.run(main())
    assert out == [[0, 0], [10, 10], [20, 20]]
    assert all(len(s) <= 3 for s in seen) and sum(map(len, seen)) == 6


def test_full_queue_429_cancelled_dropped_deadline_504():
    async def main():
        gate = Gate()
        b = _batcher(gate, window_s=0, max_queue=1)
        running = asyncio.ensure_future(b.submit([1], 5))
        while not gate.entered.is_set():
            await asyncio.sleep(0.01)
        leaving = asyncio.ensure_future(b.submit([2], 5))  # waits; its client will leave
        await asyncio.sleep(0.02)
        with pytest.raises(QueueFull) as full:
            await b.submit([3], 5)
        leaving.cancel()
        await asyncio.sleep(0.02)
        with pytest.raises(DeadlineExceeded) as late:
            await b.submit([4], 0.1)  # room again (the cancelled one left); deadline passes
        gate.open.set()
        first = await running
        after = await b.submit([5], 5)
        await b.stop()
        return full.value, late.value, first, after, gate.seen

    full, late, first, after, seen = asyncio.run(main())
    assert full.retry_after >= 1 and int(api_error(full).headers["Retry-After"]) >= 1
    assert late.timeout == 0.1 and "limit" in str(late) and api_error(late).status == 504
    assert first == [10] and after == [50]
    assert [2] not in seen and [4] not in seen  # cancelled / expired work never ran


@pytest.fixture
def gated_decoder(served_decoder):
    # a pre-hook on the input embeddings: the engine may call the model or its base model,
    # and every decoder forward goes through them
    gate = Gate(lambda *a, **k: None)
    embeddings = served_decoder.model.get_input_embeddings()
    handle = embeddings.register_forward_pre_hook(lambda module, args: gate())
    yield served_decoder, gate
    gate.open.set()
    handle.remove()


def test_generation_queue_full_and_deadline_over_http(gated_decoder, client_for):
    served, gate = gated_decoder
    c = client_for(served, max_queue=1, request_timeout=1.5)
    req = {"prompt": "goal", "max_tokens": 2, "temperature": 0}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        a = pool.submit(c.post, "/v1/completions", json=req)
        assert gate.entered.wait(5)
        b = pool.submit(c.post, "/v1/completions", json=req)
        deadline = time.monotonic() + 5
        while 'tunelab_queue_depth{queue="generate"} 1.0' not in c.get("/metrics").text:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        r = c.post("/v1/completions", json=req)
        assert r.status_code == 429 and r.json()["error"]["code"] == "queue_full"
        assert int(r.headers["retry-after"]) >= 1
        late = a.result(timeout=10)  # the gate stays shut past the 1.5 s deadline
        assert late.status_code == 504 and late.json()["error"]["code"] == "timeout"
        gate.open.set()
        assert b.result(timeout=10).status_code in (200, 504)


def test_closed_stream_stops_generation(served_decoder):
    calls = []

    def slow(module, args):
        calls.append(1)
        time.sleep(0.01)

    embeddings = served_decoder.model.get_input_embeddings()
    handle = embeddings.register_forward_pre_hook(slow)
    opts = DecodingOptions(max_new_tokens=100, ignore_eos=True)

    async def main():
        gen = SerialGenerator(served_decoder, max_queue=4)
        events = gen.submit(GenRequest([[2, 10, 11]], opts, timeout=30))
        first = await events.__anext__()
        await events.aclose()  # what the server does when the client disconnects
        at_close = len(calls)
        await asyncio.sleep(0.5)
        gen.stop()
        return first, at_close, len(calls)

    first, at_close, later = asyncio.run(main())
    handle.remove()
    assert first.index == 0
    assert at_close >= 1  # the hook saw the model run
    assert later - at_close <= 2 and later < 50  # the worker stopped, not ran 100 steps


def test_client_disconnect_drops_queued_request(classify_run, client_for):
    """A classify request whose client leaves while it waits never reaches the model."""
    from tunelab.serve import load_served

    served = load_served(str(classify_run), dtype="fp32")
    gate = Gate(served.model.forward)
    served.model.forward = gate
    app = client_for(served, batch_window_ms=0).app
    batches: list[int] = []
    inner = gate.fn

    def counting(*args, **kwargs):
        batches.append(kwargs["input_ids"].shape[0])
        return inner(*args, **kwargs)

    gate.fn = counting

    async def call(texts, leave_after: float | None):
        body = json.dumps({"input": texts}).encode()
        sent, out = False, {}

        async def receive():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(leave_after if leave_after is not None else 3600)
            return {"type": "http.disconnect"}

        async def send(message):
            if message["type"] == "http.response.start":
                out["status"] = message["status"]

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/classify",
            "raw_path": b"/v1/classify",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000),
        }
        await app(scope, receive, send)
        return out.get("status")

    async def main():
        first = asyncio.ensure_future(call(["goal team"], None))
        while not gate.entered.is_set():
            await asyncio.sleep(0.01)
        leaving = await call(["bank tax", "phone app", "coach cup"], 0.2)
        gate.open.set()
        return await first, leaving

    first, leaving = asyncio.run(main())
    assert first == 200 and leaving == 499
    assert batches == [1]  # the three texts of the request that left were never run


def test_stream_past_its_deadline_ends_with_an_error_event(gated_decoder, client_for):
    served, gate = gated_decoder
    c = client_for(served, request_timeout=0.5)
    req = {"prompt": "goal", "max_tokens": 3, "stream": True}
    with c.stream("POST", "/v1/completions", json=req) as r:
        assert r.status_code == 200  # the stream had started: the error comes as an event
        text = r.read().decode()
    gate.open.set()
    events = [json.loads(e[6:]) for e in text.split("\n\n") if e.startswith("data: {")]
    assert events[-1]["error"]["code"] == "timeout" and "[DONE]" not in text
