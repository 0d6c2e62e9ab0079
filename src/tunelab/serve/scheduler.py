"""Continuous batching for the completion endpoints: requests join and leave a running batch
between decoding steps.

    gen = ContinuousGenerator(served, max_queue=64, metrics=metrics, max_batch=32)
    events = gen.submit(GenRequest(prompt_ids, opts, timeout=60))  # QueueFull raised at once

Engine-side code: it raises domain errors (QueueFull, DeadlineExceeded, ShuttingDown,
TunelabError, GenerationFailed), never HTTP ones; serve/errors.py maps them to HTTP.

One worker thread owns one decoding `Engine` (tunelab.decoding.engine). Submitted requests
wait in a bounded admission queue (`max_queue` waiting requests; one more is refused with
QueueFull, whose retry_after estimates when there is room). Between two decoding steps the
worker admits waiting requests, oldest first, while the batch has room (`max_batch`
sequences: a request with p prompts and n choices takes p x n); the engine prefills them and
merges them into the running batch. Every step's tokens go through the request's
`TextTracker` (stop strings, UTF-8-safe deltas) and to its asyncio queue
(`loop.call_soon_threadsafe`). A sequence that ends (EOS, length, a stop string) leaves the
batch at once; a request whose client is gone (its event iterator was closed) or whose
deadline passed is cancelled in the engine and frees its rows at the next step. With nothing
to do the worker blocks on the admission queue.

Two kinds of request cannot share the running batch, and run alone between batches (admission
stops until the batch has drained, they run, then batching resumes; arrival order is kept):
- beam search (num_beams > 1): its beams are re-ranked every step by `tunelab.decoding`'s
  beam search, which the engine's one-token-per-row steps do not do;
- sampling with a `seed`: the engine has one random generator per batch, so a seed only
  reproduces its outputs when the request is decoded on its own (an engine seeded with it).
Greedy and unseeded sampling requests are batched.

Why our own scheduler rather than transformers' continuous batching (`generate_batch`,
`init_continuous_batching`, `transformers serve --continuous-batching`): bench/serve_load.py
measures them side by side (SmolLM2-135M fp32, CPU, 1 thread, greedy, 16 clients): this
server 76 tokens per CPU-second (5.6x one-at-a-time generate()), `transformers serve` 64,
`generate_batch` 22. transformers' manager is not faster on CPU, batches decoder-only models
only, and has no beam search; this scheduler reuses tunelab's decoding engine (the outputs of
`tunelab generate`, stop strings, context sliding, encoder-decoders) behind the server's
limits. Figures and caveats (a shared, busy machine): docs/serving.md, "Throughput".
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

from tunelab.decoding import generate
from tunelab.decoding.engine import Engine, Request
from tunelab.decoding.options import is_greedy
from tunelab.errors import ShuttingDown, TunelabError
from tunelab.serve.domain_errors import GenerationFailed, deadline_exceeded, queue_full
from tunelab.serve.generation import (
    FINISH,
    ChoiceText,
    GenEvent,
    GenRequest,
    Job,
    emit_step,
    job_events,
)

log = logging.getLogger("tunelab.serve")
_DONE = object()  # end of a request's events
_STOP = object()  # the worker's shutdown signal


@dataclass
class _Job(Job):
    rows: dict[int, tuple[int, ChoiceText]] = field(default_factory=dict)
    """Engine request id -> (choice index, text tracker), for rows still decoding."""
    started: float = 0.0

    @property
    def size(self) -> int:
        return len(self.request.prompts) * self.request.opts.num_return_sequences

    @property
    def alone(self) -> bool:
        """Beam search, or seeded sampling: decoded on its own, not in the shared batch."""
        o = self.request.opts
        return o.num_beams > 1 or (o.seed is not None and not is_greedy(o))


class ContinuousGenerator:
    """A `Generator` (generation.py) that decodes concurrent requests as one changing batch."""

    def __init__(
        self,
        served,
        max_queue: int = 64,
        metrics=None,
        max_batch: int = 32,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`clock` (seconds) times the requests' deadlines; tests pass a fake one."""
        self.model, self.tokenizer = served.model, served.tokenizer
        self.clock = clock
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.metrics = metrics
        self.engine = self._new_engine(None, max_batch)
        self.batch_size = 0
        """Sequences in the running batch after the last step."""
        self._inbox: queue.Queue = queue.Queue()
        self._pending: deque[_Job] = deque()  # worker side: waiting, in arrival order
        self._running: list[_Job] = []
        self._waiting = 0  # submitted and not yet admitted (the QueueFull bound)
        self._lock = threading.Lock()
        self._closing = False
        self._ids = itertools.count()
        self._service_s = 1.0  # running mean of a request's time in the batch, for retry_after
        self._thread = threading.Thread(target=self._work, name="tunelab-batch-gen", daemon=True)
        self._thread.start()

    def _new_engine(self, seed: int | None, max_batch: int) -> Engine:
        return Engine(self.model, self.tokenizer, max_batch=max_batch, seed=seed)

    # ------------------------------------------------------------------ event loop side
    def submit(self, request: GenRequest) -> AsyncIterator[GenEvent]:
        loop = asyncio.get_running_loop()
        deadline = self.clock() + request.timeout
        job = _Job(request, loop, asyncio.Queue(), deadline, clock=self.clock)
        with self._lock:
            if self._closing:
                raise ShuttingDown("the server is shutting down: retry on another instance")
            waiting = self._waiting
            if waiting >= self.max_queue:
                batches = 1 + waiting / max(self.max_batch, 1)
                raise queue_full("generation", self._service_s * batches)
            self._waiting += 1
            self._inbox.put(job)  # under the lock: never behind the shutdown signal
        self._gauge_queue()
        return job_events(job, _DONE)

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new requests; let the queued and running ones finish (up to `timeout` s)."""
        with self._lock:
            self._closing = True
            self._inbox.put(_STOP)
        self._thread.join(timeout=timeout)

    # ------------------------------------------------------------------ metrics
    def _gauge_queue(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.labels("generate").set(self._waiting)

    def _gauge_batch(self, size: int) -> None:
        self.batch_size = size
        if self.metrics is not None:
            self.metrics.batch_size.labels("generate").set(size)

    def _count(self, n: int) -> None:
        if self.metrics is not None and n:
            self.metrics.tokens.inc(n)

    # ------------------------------------------------------------------ worker thread
    def _work(self) -> None:
        stopping = False
        while True:
            idle = not self._running and not self._pending
            if idle and stopping:
                return
            try:  # block only when there is nothing to decode
                item = self._inbox.get(block=idle)
                while True:
                    if item is _STOP:
                        stopping = True
                    else:
                        self._pending.append(item)
                    item = self._inbox.get_nowait()
            except queue.Empty:
                pass
            try:
                self._drop_ended()
                self._admit()
                if self.engine.has_work():
                    self._step(self.engine, self._running)
                else:
                    self._gauge_batch(0)
            except Exception as exc:  # noqa: BLE001 - every running request gets the error
                self._fail(self._running, exc)
                self._running = []
                self.engine = self._new_engine(None, self.max_batch)  # state may be broken
                self._gauge_batch(0)

    def _unqueue(self, job: _Job) -> None:
        with self._lock:
            self._waiting -= 1
        self._gauge_queue()

    def _drop_ended(self) -> None:
        """Waiting or running requests whose client left or whose deadline passed."""
        now = self.clock()
        for job in list(self._pending):
            if job.cancel.is_set() or now > job.deadline:
                self._pending.remove(job)
                self._unqueue(job)
                if not job.cancel.is_set():
                    job.emit(deadline_exceeded(job.request.timeout))
        for job in list(self._running):
            if job.cancel.is_set() or now > job.deadline:
                if not job.cancel.is_set():
                    job.emit(deadline_exceeded(job.request.timeout))
                self._finish(job, cancel_rows=True)

    def _admit(self) -> None:
        """Move waiting requests into the batch while it has room (oldest first)."""
        while self._pending:
            job = self._pending[0]
            if job.alone:
                if self._running:
                    return  # let the batch drain, then run it on its own
                self._pending.popleft()
                self._unqueue(job)
                self._run_alone(job)
                continue
            used = sum(len(j.rows) for j in self._running)
            if self._running and used + job.size > self.max_batch:
                return
            self._pending.popleft()
            self._unqueue(job)
            try:
                self._add(self.engine, job)
            except Exception as exc:  # noqa: BLE001 - e.g. options the engine refuses
                for rid in job.rows:
                    self.engine.cancel(rid)
                self._fail([job], exc)
                continue
            self._running.append(job)

    def _add(self, engine: Engine, job: _Job) -> None:
        req, n = job.request, job.request.opts.num_return_sequences
        opts = replace(req.opts, stop=list(req.opts.stop))
        job.started = time.perf_counter()
        for i, ids in enumerate(req.prompts):
            for j in range(n):
                rid = engine.add(Request(list(ids), opts, id=next(self._ids)))
                job.rows[rid] = (i * n + j, ChoiceText(self.tokenizer, opts.stop))

    def _step(self, engine: Engine, running: list[_Job]) -> None:
        """One decoding step; its tokens routed to their requests' event queues."""
        owner = {rid: job for job in running for rid in job.rows}
        ended = []
        for ev in engine.step():
            job = owner.get(ev.request_id)
            if job is None or ev.request_id not in job.rows:
                continue
            k, tracker = job.rows[ev.request_id]
            if emit_step(job, ev, k, tracker, engine, self._count) is not None:
                del job.rows[ev.request_id]
                if not job.rows:
                    ended.append(job)
        # The gauge is set before an ended request's client hears it is done, so a client
        # (or a scrape) that saw its request finish never sees it still counted in the batch.
        self._gauge_batch(len(engine.rows))
        for job in ended:
            self._finish(job)

    def _finish(self, job: _Job, cancel_rows: bool = False) -> None:
        if cancel_rows:
            for rid in job.rows:
                self.engine.cancel(rid)
            job.rows.clear()
        else:
            job.emit(_DONE)
            self._service_s = 0.8 * self._service_s + 0.2 * (time.perf_counter() - job.started)
        if job in self._running:
            self._running.remove(job)

    def _fail(self, jobs: list[_Job], exc: Exception) -> None:
        """`exc` to every job's client: as it is when the user caused it (bad options), else
        logged with its traceback here and sent as GenerationFailed."""
        if not isinstance(exc, TunelabError):
            log.error("generation failed", exc_info=exc)
        for job in jobs:
            job.emit(exc if isinstance(exc, TunelabError) else GenerationFailed(exc))

    def _run_alone(self, job: _Job) -> None:
        """Beam search or seeded sampling, with the batch empty: nothing else runs meanwhile."""
        req = job.request
        self._gauge_batch(job.size)
        job.started = time.perf_counter()
        try:
            if req.opts.num_beams > 1:
                outs = generate(self.model, self.tokenizer, req.prompts, req.opts, batch_size=16)
                for k, out in enumerate(outs):
                    self._count(len(out.token_ids))
                    job.emit(GenEvent(k, out.text, FINISH[out.finish_reason], len(out.token_ids)))
                job.emit(_DONE)
                return
            engine = self._new_engine(req.opts.seed, job.size)
            self._add(engine, job)
            alone = [job]
            while job.rows:
                if job.cancel.is_set() or self.clock() > job.deadline:
                    if not job.cancel.is_set():
                        job.emit(deadline_exceeded(req.timeout))
                    return
                self._step(engine, alone)
        except Exception as exc:  # noqa: BLE001
            self._fail([job], exc)
        finally:
            self._gauge_batch(0)
