"""The continuous-batching generator: concurrent requests share the running batch (and get
their one-at-a-time outputs), join it mid-flight, leave it when cancelled, are bounded by the
queue (429) and by their deadline (504); beam search and seeded sampling run alone."""

from __future__ import annotations

import asyncio
import time

import pytest
import torch

from tunelab.decoding import DecodingOptions, generate
from tunelab.serve.errors import APIError
from tunelab.serve.generation import GenRequest
from tunelab.serve.scheduler import ContinuousGenerator

PROMPTS = [[2, 10, 11], [2, 12, 13, 14, 15, 16], [2, 20], [2, 30, 31, 32, 33]]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def watched(served_decoder):
    """The served tiny decoder; every forward's input shape is recorded (and slowed by
    `delay[0]` seconds) through a hook on the input embeddings, which every path calls."""
    shapes: list[tuple[int, int]] = []
    delay = [0.0]

    def hook(module, args):
        shapes.append(tuple(args[0].shape))
        if delay[0]:
            time.sleep(delay[0])

    handle = served_decoder.model.get_input_embeddings().register_forward_pre_hook(hook)
    yield served_decoder, shapes, delay
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
    served, shapes, _ = watched
    opts = [
        DecodingOptions(max_new_tokens=12, ignore_eos=True),
        DecodingOptions(max_new_tokens=5),
        DecodingOptions(max_new_tokens=9, ignore_eos=True),
        DecodingOptions(max_new_tokens=16),
    ]
    expected = [alone(served, p, o) for p, o in zip(PROMPTS, opts, strict=True)]
    shapes.clear()

    async def main():
        gen = ContinuousGenerator(served, max_queue=8, max_batch=8)
        outs = await asyncio.gather(
            *(collect(gen.submit(GenRequest([p], o))) for p, o in zip(PROMPTS, opts, strict=True))
        )
        gen.stop()
        return outs

    outs = asyncio.run(main())
    assert [o[0] for o in outs] == expected
    assert len({t for t, _, _ in expected}) == 4 and all(n > 2 for _, _, n in expected)
    assert max(b for b, s in shapes if s == 1) > 1  # decode steps really were batched


def test_a_request_joins_the_running_batch(watched):
    served, shapes, delay = watched
    delay[0] = 0.01
    long = DecodingOptions(max_new_tokens=40, ignore_eos=True)
    short = DecodingOptions(max_new_tokens=4, ignore_eos=True)

    async def main():
        gen = ContinuousGenerator(served, max_queue=8, max_batch=8)
        first = gen.submit(GenRequest([PROMPTS[0]], long))
        await first.__anext__()  # the first request is decoding
        sizes = []
        second = await collect(gen.submit(GenRequest([PROMPTS[1]], short)))
        sizes.append(gen.batch_size)
        rest = await collect(first)
        gen.stop()
        return second, rest, sizes

    second, rest, sizes = asyncio.run(main())
    assert second[0][1:] == ("length", 4) and rest[0][1:] == ("length", 40)
    assert second[0] == alone(served, PROMPTS[1], short)
    assert (2, 1) in shapes  # a decode step ran both requests' rows together
    assert sizes == [1]  # the second left while the first went on


def test_cancelling_frees_the_slot(watched):
    served, shapes, delay = watched
    delay[0] = 0.01
    endless = DecodingOptions(max_new_tokens=500, ignore_eos=True)
    quick = DecodingOptions(max_new_tokens=3, ignore_eos=True)

    async def main():
        gen = ContinuousGenerator(served, max_queue=8, max_batch=1)
        first = gen.submit(GenRequest([PROMPTS[0]], endless))
        await first.__anext__()
        waiting = asyncio.ensure_future(collect(gen.submit(GenRequest([PROMPTS[2]], quick))))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # no room: max_batch is 1
        calls = len(shapes)
        await first.aclose()  # the client left
        out = await asyncio.wait_for(waiting, 10)
        gen.stop()
        return out, len(shapes) - calls

    out, calls = asyncio.run(main())
    assert out[0][1:] == ("length", 3)
    assert calls < 10  # the 500-token request stopped at once: a prefill and 2 decode steps


def test_full_queue_answers_429_and_deadlines_504(watched):
    served, _, delay = watched
    delay[0] = 0.02
    long = DecodingOptions(max_new_tokens=200, ignore_eos=True)

    async def main():
        gen = ContinuousGenerator(served, max_queue=1, max_batch=1)
        running = gen.submit(GenRequest([PROMPTS[0]], long, timeout=0.6))
        await running.__anext__()
        waiting = gen.submit(GenRequest([PROMPTS[1]], long, timeout=0.3))
        with pytest.raises(APIError) as full:
            gen.submit(GenRequest([PROMPTS[2]], long))
        errors = []
        for events in (waiting, running):
            with pytest.raises(APIError) as late:
                await collect(events)
            errors.append(late.value)
        took = time.monotonic()
        ok = await collect(gen.submit(GenRequest([PROMPTS[2]], DecodingOptions(max_new_tokens=2))))
        gen.stop()
        return full.value, errors, ok, time.monotonic() - took

    full, errors, ok, took = asyncio.run(main())
    assert (
        full.status == 429 and full.code == "queue_full" and int(full.headers["Retry-After"]) >= 1
    )
    assert [e.status for e in errors] == [504, 504] and all(e.code == "timeout" for e in errors)
    assert 0 in ok and took < 2  # the expired requests left the batch: the next one runs


def test_beam_and_seeded_sampling_run_alone_and_reproduce(watched):
    served, _, _ = watched
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
    served, _, delay = watched
    delay[0] = 0.01
    opts = DecodingOptions(max_new_tokens=20, ignore_eos=True)

    async def main():
        gen = ContinuousGenerator(served, max_queue=8, max_batch=8)
        events = gen.submit(GenRequest([PROMPTS[0]], opts))
        first = await events.__anext__()
        stopping = asyncio.ensure_future(asyncio.to_thread(gen.stop))
        rest = await collect(events)
        await stopping
        with pytest.raises(APIError) as refused:
            gen.submit(GenRequest([PROMPTS[0]], opts))
        return first, rest, refused.value

    first, rest, refused = asyncio.run(main())
    assert rest[0][1:] == ("length", 20)
    assert refused.status == 503 and refused.code == "shutting_down"


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
