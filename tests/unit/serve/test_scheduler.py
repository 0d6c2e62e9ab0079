"""The continuous-batching generator: concurrent requests share the running batch (and get
their one-at-a-time outputs), join it mid-flight, leave it when cancelled, are bounded by the
queue (QueueFull: 429) and by their deadline (DeadlineExceeded: 504); beam search and seeded
sampling run alone.

Nothing here depends on the machine's speed: a hook sees every forward of the model (its
input shape, in order) and can hold the worker thread before a chosen forward until the test
lets it go, so each test puts the worker exactly where it needs it; deadlines run on a fake
clock that moves only when the test says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

import pytest
import torch

from tunelab.decoding import DecodingOptions, generate
from tunelab.errors import DeadlineExceeded, QueueFull, ShuttingDown
from tunelab.serve.errors import api_error
from tunelab.serve.generation import GenRequest
from tunelab.serve.scheduler import ContinuousGenerator

PROMPTS = [[2, 10, 11], [2, 12, 13, 14, 15, 16], [2, 20], [2, 30, 31, 32, 33]]
WAIT = 60  # seconds: only a broken test ever waits this long (then fails, never hangs)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Pause:
    """A point where the worker thread stops: `reached` is set when it gets there, and it
    waits there until `resume` is set."""

    def __init__(self, rule: Callable[[list], bool]) -> None:
        self.rule = rule
        self.reached = threading.Event()
        self.resume = threading.Event()

    async def wait_reached(self) -> None:
        assert await asyncio.to_thread(self.reached.wait, WAIT), "the worker never got there"


class Forwards:
    """A forward pre-hook on the input embeddings (every path calls them): `shapes` is every
    forward's input shape, in order ((rows, 1) is a decode step, (rows, length) a prefill);
    `pause_before(rule)` holds the worker before the first forward for which `rule(shapes)`
    (the shapes so far, that forward's included) is true."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, int]] = []
        self.pauses: list[Pause] = []

    def pause_before(self, rule: Callable[[list], bool]) -> Pause:
        self.pauses.append(Pause(rule))
        return self.pauses[-1]

    def __call__(self, module, args) -> None:
        self.shapes.append(tuple(args[0].shape))
        for p in self.pauses:
            if not p.resume.is_set() and p.rule(self.shapes):
                p.reached.set()
                assert p.resume.wait(WAIT), "the test never resumed the worker"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def watched(served_decoder):
    """The served tiny decoder and the `Forwards` hook watching it."""
    forwards = Forwards()
    handle = served_decoder.model.get_input_embeddings().register_forward_pre_hook(forwards)
    yield served_decoder, forwards
    for p in forwards.pauses:  # a failed test must not leave the worker held
        p.resume.set()
    handle.remove()


async def collect(events) -> dict[int, tuple[str, str, int]]:
    """choice index -> (text, finish_reason, tokens)."""
    texts: dict[int, str] = {}
    out = {}
    async for ev in events:
        texts[ev.index] = texts.get(ev.index, "") + ev.text
        if ev.finish_reason:
            out[ev.index] = (texts[ev.index], ev.finish_reason, ev.tokens)
    return out


def alone(served, prompt, opts) -> tuple[str, str, int]:
    (o,) = generate(served.model, served.tokenizer, [prompt], opts)
    return o.text, {"eos": "stop"}.get(o.finish_reason, o.finish_reason), len(o.token_ids)


def test_concurrent_requests_get_their_one_at_a_time_outputs(watched):
    served, forwards = watched
    opts = [
        DecodingOptions(max_new_tokens=12, ignore_eos=True),
        DecodingOptions(max_new_tokens=5),
        DecodingOptions(max_new_tokens=9, ignore_eos=True),
        DecodingOptions(max_new_tokens=16),
    ]
    expected = [alone(served, p, o) for p, o in zip(PROMPTS, opts, strict=True)]
    forwards.shapes.clear()
    # the worker may start on the first request at once: it waits before its second forward
    # until all four are queued, so every request is in the batch by the third step
    queued = forwards.pause_before(lambda s: len(s) == 2)

    async def main():
        gen = ContinuousGenerator(served, max_queue=8, max_batch=8)
        events = [gen.submit(GenRequest([p], o)) for p, o in zip(PROMPTS, opts, strict=True)]
        queued.resume.set()
        outs = await asyncio.gather(*(collect(e) for e in events))
        gen.stop()
        return outs

    outs = asyncio.run(main())
    assert [o[0] for o in outs] == expected
    assert len({t for t, _, _ in expected}) == 4 and all(n > 2 for _, _, n in expected)
    assert (4, 1) in forwards.shapes  # a decode step ran all four requests' rows together


def test_a_request_joins_the_running_batch(watched):
    served, forwards = watched
    long = DecodingOptions(max_new_tokens=40, ignore_eos=True)
    short = DecodingOptions(max_new_tokens=4, ignore_eos=True)
    expected = alone(served, PROMPTS[1], short)
    forwards.shapes.clear()
    decoding = forwards.pause_before(lambda s: len(s) == 2)  # the first request's 1st decode
    # the first decoding alone again, after steps shared with the second: the second has left
    left = forwards.pause_before(lambda s: (2, 1) in s and s[-1] == (1, 1))

    async def main():
        gen = ContinuousGenerator(served, max_queue=8, max_batch=8)
        first = asyncio.ensure_future(collect(gen.submit(GenRequest([PROMPTS[0]], long))))
        await decoding.wait_reached()
        second = gen.submit(GenRequest([PROMPTS[1]], short))
        decoding.resume.set()
        out = await collect(second)
        await left.wait_reached()
        size = gen.batch_size
        left.resume.set()
        rest = await first
        gen.stop()
        return out, rest, size

    second, rest, size = asyncio.run(main())
    assert second[0] == expected and second[0][1:] == ("length", 4)
    assert rest[0][1:] == ("length", 40)
    assert forwards.shapes.count((2, 1)) == 3  # the second's 3 decode steps ran with the first
    assert size == 1  # the second left while the first went on


def test_cancelling_frees_the_slot(watched):
    served, forwards = watched
    endless = DecodingOptions(max_new_tokens=500, ignore_eos=True)
    quick = DecodingOptions(max_new_tokens=3, ignore_eos=True)
    decoding = forwards.pause_before(lambda s: len(s) == 2)  # the endless request's 1st decode
    # one forward later: the worker has seen the second request queued since, and kept it out
    refused = forwards.pause_before(lambda s: len(s) == 3)

    async def main():
        gen = ContinuousGenerator(served, max_queue=8, max_batch=1)
        first = asyncio.ensure_future(collect(gen.submit(GenRequest([PROMPTS[0]], endless))))
        await decoding.wait_reached()
        waiting = asyncio.ensure_future(collect(gen.submit(GenRequest([PROMPTS[2]], quick))))
        decoding.resume.set()
        await refused.wait_reached()
        before = list(forwards.shapes)
        first.cancel()  # the client left
        with contextlib.suppress(asyncio.CancelledError):
            await first
        refused.resume.set()
        out = await waiting
        gen.stop()
        return out, before

    out, before = asyncio.run(main())
    assert before == [(1, 3), (1, 1), (1, 1)]  # no room (max_batch 1): the second only waited
    assert out[0][1:] == ("length", 3)
    # the 500-token request stopped at once: then only the second's prefill and 2 decode steps
    assert forwards.shapes[3:] == [(1, 2), (1, 1), (1, 1)]


def test_full_queue_is_refused_and_deadlines_end_requests(watched):
    served, forwards = watched
    long = DecodingOptions(max_new_tokens=200, ignore_eos=True)
    clock = FakeClock()
    decoding = forwards.pause_before(lambda s: len(s) == 2)  # the first request's 1st decode
    expiring = forwards.pause_before(lambda s: len(s) == 3)  # one forward later

    async def main():
        gen = ContinuousGenerator(served, max_queue=1, max_batch=1, clock=clock)
        request = GenRequest([PROMPTS[0]], long, timeout=100)
        running = asyncio.ensure_future(collect(gen.submit(request)))
        await decoding.wait_reached()  # running, so no longer queued: the queue is empty
        waiting = asyncio.ensure_future(
            collect(gen.submit(GenRequest([PROMPTS[1]], long, timeout=50)))
        )
        with pytest.raises(QueueFull) as full:
            gen.submit(GenRequest([PROMPTS[2]], long))
        await asyncio.sleep(0)  # the waiting request's client starts listening
        clock.now = 60  # past the waiting request's deadline, not the running one's
        decoding.resume.set()
        await expiring.wait_reached()  # the worker has looked at the waiting request since
        clock.now = 110  # past the running request's deadline too
        expiring.resume.set()
        errors = []
        for task in (waiting, running):
            with pytest.raises(DeadlineExceeded) as late:
                await task
            errors.append(late.value)
        quick = DecodingOptions(max_new_tokens=2, ignore_eos=True)
        ok = await collect(gen.submit(GenRequest([PROMPTS[2]], quick)))
        gen.stop()
        return full.value, errors, ok

    full, errors, ok = asyncio.run(main())
    assert full.retry_after >= 1
    http = api_error(full)  # what the client sees
    assert http.status == 429 and http.code == "queue_full"
    assert int(http.headers["Retry-After"]) >= 1
    assert [e.timeout for e in errors] == [50, 100]
    assert [(api_error(e).status, api_error(e).code) for e in errors] == [(504, "timeout")] * 2
    assert ok[0][1:] == ("length", 2)
    # the waiting request never ran (no (1, 6) prefill) and the running one stopped at its
    # deadline: after that, only the next request's prefill and its one decode step
    assert forwards.shapes == [(1, 3), (1, 1), (1, 1), (1, 2), (1, 1)]


def test_beam_and_seeded_sampling_run_alone_and_reproduce(watched):
    served, _ = watched
    beam = DecodingOptions(max_new_tokens=6, num_beams=3, num_return_sequences=2)
    seeded = DecodingOptions(
        max_new_tokens=8, do_sample=True, temperature=1.5, num_return_sequences=2, seed=11
    )
    greedy = DecodingOptions(max_new_tokens=10, ignore_eos=True)
    beams = generate(served.model, served.tokenizer, [PROMPTS[1]], beam)
    expected_beam = {k: (o.text, len(o.token_ids)) for k, o in enumerate(beams)}

    async def main():
        gen = ContinuousGenerator(served, max_queue=8, max_batch=8)
        jobs = [
            collect(gen.submit(GenRequest([PROMPTS[0]], greedy))),
            collect(gen.submit(GenRequest([PROMPTS[1]], beam))),
            collect(gen.submit(GenRequest([PROMPTS[2]], seeded))),
            collect(gen.submit(GenRequest([PROMPTS[3]], greedy))),
            collect(gen.submit(GenRequest([PROMPTS[2]], seeded))),
        ]
        outs = await asyncio.gather(*jobs)
        gen.stop()
        return outs

    g1, b, s1, g2, s2 = asyncio.run(main())
    assert {k: (t, n) for k, (t, _, n) in b.items()} == expected_beam
    assert s1 == s2 and len(s1) == 2  # same seed, same outputs, though submitted among others
    assert g1[0] == alone(served, PROMPTS[0], greedy) and g2[0] == alone(served, PROMPTS[3], greedy)


def test_stop_lets_running_requests_finish_then_refuses(watched):
    served, forwards = watched
    opts = DecodingOptions(max_new_tokens=20, ignore_eos=True)
    decoding = forwards.pause_before(lambda s: len(s) == 2)  # the request's 1st decode

    async def main():
        gen = ContinuousGenerator(served, max_queue=8, max_batch=8)
        events = asyncio.ensure_future(collect(gen.submit(GenRequest([PROMPTS[0]], opts))))
        await decoding.wait_reached()
        gen.stop(timeout=0)  # stopping now, with the request running (not waiting for it here)
        with pytest.raises(ShuttingDown) as refused:
            gen.submit(GenRequest([PROMPTS[0]], opts))
        decoding.resume.set()
        rest = await events
        await asyncio.to_thread(gen.stop)  # the worker ends once nothing runs
        return rest, refused.value

    rest, refused = asyncio.run(main())
    assert rest[0][1:] == ("length", 20)  # all 20 tokens, though stop came at the 2nd
    http = api_error(refused)
    assert http.status == 503 and http.code == "shutting_down"
    assert http.headers["Retry-After"] == "5"


def test_the_server_batches_by_default_and_serial_on_request(served_decoder, client_for):
    from tunelab.serve.generation import SerialGenerator

    req = {"prompt": "goal team", "max_tokens": 4, "temperature": 0}
    for serial, kind in ((False, ContinuousGenerator), (True, SerialGenerator)):
        c = client_for(served_decoder, serial_generation=serial, max_running=4)
        r = c.post("/v1/completions", json=req)
        assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in (
            "stop",
            "length",
        )
        gen = c.app.state.tl.generator
        assert type(gen) is kind
        if not serial:
            assert gen.max_batch == 4
