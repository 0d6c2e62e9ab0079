"""The narrow interface between the completion endpoints and whatever runs generation.

    gen = SerialGenerator(served, max_queue=64, metrics=metrics)
    events = gen.submit(GenRequest(prompt_ids, opts, timeout=60))  # QueueFull raised at once
    async for ev in events:        # GenEvent: a text delta, or a choice's finish (or raises)
        ...

`Generator` is the protocol the endpoints use; `SerialGenerator`, this first version, runs one
request at a time (its prompts x n choices as one batch of the decoding `Engine`; beam search
through `tunelab.decoding.generate`) in a worker thread behind a bounded queue; the server uses
it with `--serial-generation`. The default is `scheduler.ContinuousGenerator` (continuous
batching) behind the same `submit`. The worker stops a request as soon as its client is gone
(the async iterator was closed) or its deadline passed.

Engine-side code: generators raise domain errors, never HTTP ones: QueueFull from `submit`;
from the events, DeadlineExceeded, a TunelabError for options the engine refuses, and
GenerationFailed for a bug (its traceback logged here). serve/errors.py maps them to HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from tunelab.decoding import DecodingOptions, generate
from tunelab.decoding.engine import Engine, Request
from tunelab.decoding.logprobs import token_bytes, token_text
from tunelab.decoding.text import TextTracker
from tunelab.errors import TunelabError
from tunelab.serve.domain_errors import GenerationFailed, deadline_exceeded, queue_full

log = logging.getLogger("tunelab.serve")
FINISH = {"eos": "stop", "stop": "stop", "length": "length"}  # ours -> OpenAI's finish_reason


@dataclass
class GenRequest:
    prompts: list[list[int]]
    """Token ids of every prompt."""
    opts: DecodingOptions
    """num_return_sequences is the request's n."""
    timeout: float = 60.0
    """Seconds from submission until the request is ended with DeadlineExceeded."""


@dataclass
class GenEvent:
    index: int
    """The choice: prompt i's j-th sequence is i * n + j."""
    text: str = ""
    """New text (may be empty on a finish event)."""
    finish_reason: str | None = None
    """stop or length once the choice is complete."""
    tokens: int = 0
    """Completion tokens of the choice (on its finish event)."""
    logprobs: list[dict] | None = None
    """When the request asked (opts.logprobs): one entry per token since the last event,
    {token, logprob, bytes, top: [(token, logprob, bytes)], offset} (token as text; offset:
    its first character in the choice's text)."""


class Generator(Protocol):
    def submit(self, request: GenRequest) -> AsyncIterator[GenEvent]:
        """Queue a request; raises QueueFull at once when the queue is full, ShuttingDown
        once stopping. Its events raise DeadlineExceeded, TunelabError or GenerationFailed."""
        ...

    def stop(self) -> None: ...


@dataclass
class Job:
    request: GenRequest
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue
    deadline: float
    """On `clock`: when the request is ended with DeadlineExceeded."""
    cancel: threading.Event = field(default_factory=threading.Event)
    clock: Callable[[], float] = time.monotonic
    """Seconds; the generator's clock (a test's fake one ticks only when told)."""

    def emit(self, item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            self.cancel.set()


_STOP = object()


async def job_events(job: Job, end: object) -> AsyncIterator[GenEvent]:
    """The events a worker emits for `job` until `end`; raises what it emits as an exception,
    or the deadline error. However it ends, the job is then cancelled (done, failed, timed
    out, or the client left), so its worker stops working on it."""
    try:
        while True:
            left = job.deadline - job.clock()
            try:
                # not asyncio.wait_for: on Python 3.11 it swallows a cancellation (the client
                # left) that arrives in the same loop turn as an event, and decoding goes on
                async with asyncio.timeout(max(left, 0) + 0.5):
                    item = await job.events.get()
            except TimeoutError:
                raise deadline_exceeded(job.request.timeout) from None
            if item is end:
                return
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        job.cancel.set()


class ChoiceText(TextTracker):
    """A choice's text as tokens arrive (TextTracker), and its token logprobs not yet sent."""

    def __init__(self, tokenizer, stop: list[str]) -> None:
        super().__init__(tokenizer, stop)
        self.logprobs: list[dict] = []

    def note(self, lp) -> None:
        """Keep a token's engine logprobs (decoding.logprobs.TokenLogprob) as a wire entry."""
        tok = self.tokenizer
        self.logprobs.append(
            {
                "token": token_text(tok, lp.token),
                "logprob": lp.logprob,
                "bytes": token_bytes(tok, lp.token),
                "top": [(token_text(tok, t), v, token_bytes(tok, t)) for t, v in lp.top],
                "offset": len(self.text),
            }
        )

    def take(self) -> list[dict] | None:
        """The entries not sent yet (tokens that start after a stop string's cut dropped)."""
        out, self.logprobs = self.logprobs, []
        if self.stopped:
            out = [e for e in out if e["offset"] < len(self.text)]
        return out or None


def emit_step(job: Job, ev, k: int, tracker: TextTracker, engine: Engine, count) -> str | None:
    """Feed one engine StepEvent of choice `k` to its text tracker (stop strings, whole
    characters) and emit the new text, with the finish when there is one, to `job`; `count`
    receives the tokens generated. Returns the finish reason, None while the choice goes on.
    A ChoiceText tracker also collects the token's logprobs (the engine's, when asked); they
    go out with the next event. The EOS token is not listed (nor in the text), as OpenAI."""
    reason = ev.finish_reason
    if reason != "eos":
        if ev.logprobs is not None and isinstance(tracker, ChoiceText):
            tracker.note(ev.logprobs)
        tracker.add(ev.token)
        count(1)
    if tracker.stopped:
        if not ev.finished:
            engine.cancel(ev.request_id)
        reason = "stop"
    piece = tracker.delta(final=reason is not None)
    lps = tracker.take() if isinstance(tracker, ChoiceText) and (piece or reason) else None
    if piece or reason:
        fin = FINISH[reason] if reason else None
        job.emit(GenEvent(k, piece, fin, len(tracker.tokens), lps))
    return reason


class SerialGenerator:
    """One request at a time in a worker thread; a bounded queue of waiting requests."""

    def __init__(self, served, max_queue: int = 64, metrics=None) -> None:
        self.model, self.tokenizer = served.model, served.tokenizer
        self.max_queue = max_queue
        self.metrics = metrics
        self._queue: queue.Queue = queue.Queue()
        self._waiting = 0
        self._lock = threading.Lock()
        self._service_s = 1.0  # running mean of a request's time, for Retry-After
        self._thread = threading.Thread(target=self._work, name="tunelab-generate", daemon=True)
        self._thread.start()

    def _depth(self, change: int) -> None:
        with self._lock:
            self._waiting += change
            if self.metrics is not None:
                self.metrics.queue_depth.labels("generate").set(self._waiting)

    def submit(self, request: GenRequest) -> AsyncIterator[GenEvent]:
        with self._lock:
            full = self._waiting >= self.max_queue
        if full:
            raise queue_full("generation", self._service_s * (1 + self._waiting))
        loop = asyncio.get_running_loop()
        job = Job(request, loop, asyncio.Queue(), time.monotonic() + request.timeout)
        self._depth(+1)
        self._queue.put(job)
        return job_events(job, _STOP)

    def stop(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=5)

    # ------------------------------------------------------------------ worker thread
    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            self._depth(-1)
            if job.cancel.is_set():
                continue
            t0 = time.perf_counter()
            try:
                if time.monotonic() > job.deadline:
                    job.emit(deadline_exceeded(job.request.timeout))
                elif job.request.opts.num_beams > 1:
                    self._beam(job)
                else:
                    self._decode(job)
                job.emit(_STOP)
            except TunelabError as exc:
                job.emit(exc)
            except Exception as exc:  # noqa: BLE001 - the client gets one line, the log the traceback
                log.exception("generation failed")
                job.emit(GenerationFailed(exc))
            finally:
                if self.metrics is not None:
                    self.metrics.batch_size.labels("generate").set(0)
                self._service_s = 0.8 * self._service_s + 0.2 * (time.perf_counter() - t0)

    def _count(self, n: int) -> None:
        if self.metrics is not None and n:
            self.metrics.tokens.inc(n)

    def _beam(self, job: Job) -> None:
        req = job.request
        outs = generate(self.model, self.tokenizer, req.prompts, req.opts, batch_size=16)
        for k, out in enumerate(outs):
            self._count(len(out.token_ids))
            job.emit(GenEvent(k, out.text, FINISH[out.finish_reason], len(out.token_ids)))

    def _decode(self, job: Job) -> None:
        req, n = job.request, job.request.opts.num_return_sequences
        rows = len(req.prompts) * n
        engine = Engine(self.model, self.tokenizer, max_batch=rows, seed=req.opts.seed)
        opts = replace(req.opts, stop=list(req.opts.stop))
        index: dict[int, tuple[int, ChoiceText]] = {}
        for i, ids in enumerate(req.prompts):
            for j in range(n):
                rid = engine.add(Request(list(ids), opts))
                index[rid] = (i * n + j, ChoiceText(self.tokenizer, opts.stop))
        if self.metrics is not None:
            self.metrics.batch_size.labels("generate").set(rows)
        while engine.has_work():
            if job.cancel.is_set():
                return  # the client is gone: free the worker
            if time.monotonic() > job.deadline:
                job.emit(deadline_exceeded(req.timeout))
                return
            for ev in engine.step():
                k, tracker = index[ev.request_id]
                emit_step(job, ev, k, tracker, engine, self._count)
