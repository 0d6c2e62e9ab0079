"""Micro-batching for classify / score / embeddings: requests that arrive together run as one
batch.

    batcher = MicroBatcher(fn, name="classify", max_batch=32, window_s=0.005, max_queue=64, ...)
    results = await batcher.submit(inputs, deadline)     # one result per input, in order

A request joins the queue (at most `max_queue` requests wait; one more is refused at once
with QueueFull, never left hanging). The collector waits `window_s` after the first waiting
request for others to arrive (or until `max_batch` inputs are waiting), then runs `fn` on all
their inputs at once in the model's worker thread and hands each request its slice. A request
cancelled while waiting (its client disconnected) is dropped from the queue and never run; one
past its deadline gets DeadlineExceeded whether it was waiting or running.

Engine-side code: it raises the domain errors of tunelab.errors (QueueFull, DeadlineExceeded,
ShuttingDown), never HTTP ones; serve/errors.py answers them (429 + Retry-After, 504, 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from tunelab.errors import ShuttingDown
from tunelab.serve.domain_errors import deadline_exceeded, queue_full


@dataclass
class _Job:
    items: list[Any]
    future: asyncio.Future
    cancelled: bool = False
    queued_at: float = field(default_factory=time.monotonic)


class MicroBatcher:
    """Runs `fn(items) -> results` on batches gathered from concurrent requests."""

    def __init__(
        self,
        fn: Callable[[list[Any]], list[Any]],
        *,
        name: str,
        executor: Executor,
        max_batch: int = 32,
        window_s: float = 0.005,
        max_queue: int = 64,
        metrics=None,
    ) -> None:
        self.fn = fn
        self.name = name
        self.executor = executor
        self.max_batch = max_batch
        self.window_s = window_s
        self.max_queue = max_queue
        self.metrics = metrics
        self.waiting: deque[_Job] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._service_s = 0.1  # running mean of a batch's run time, for Retry-After

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for job in self.waiting:
            if not job.future.done():
                job.future.set_exception(ShuttingDown("the server is shutting down"))
        self.waiting.clear()

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.labels(self.name).set(len(self.waiting))

    async def submit(self, items: list[Any], timeout: float) -> list[Any]:
        """Results for `items`, in order, once their batch has run.

        Raises:
            QueueFull: at once, when `max_queue` requests are already waiting.
            DeadlineExceeded: after `timeout` seconds.
        """
        self.start()
        self.waiting = deque(j for j in self.waiting if not j.cancelled)
        if len(self.waiting) >= self.max_queue:
            raise queue_full(self.name, self._service_s * (1 + len(self.waiting) / 4))
        job = _Job(list(items), asyncio.get_running_loop().create_future())
        self.waiting.append(job)
        self._gauge()
        self._wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout)
        except TimeoutError:
            raise deadline_exceeded(timeout) from None
        finally:
            # cancelled (client gone), timed out or done: never run it if it is still waiting
            job.cancelled = True

    def _take(self) -> list[_Job]:
        batch, count = [], 0
        while self.waiting:
            job = self.waiting[0]
            if job.cancelled:
                self.waiting.popleft()
                continue
            if batch and count + len(job.items) > self.max_batch:
                break
            batch.append(self.waiting.popleft())
            count += len(job.items)
        self._gauge()
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self.waiting:
                continue
            if self.window_s > 0 and sum(len(j.items) for j in self.waiting) < self.max_batch:
                await asyncio.sleep(self.window_s)
            batch = self._take()
            if self.waiting:
                self._wake.set()  # more than one batch was waiting: go round again
            if not batch:
                continue
            items = [x for job in batch for x in job.items]
            if self.metrics is not None:
                self.metrics.batch_size.labels(self.name).set(len(items))
            t0 = time.perf_counter()
            try:
                results = await loop.run_in_executor(self.executor, self.fn, items)
            except Exception as exc:  # noqa: BLE001 - handed to the waiting requests
                for job in batch:
                    if not job.future.done() and not job.cancelled:
                        job.future.set_exception(exc)
                continue
            finally:
                if self.metrics is not None:
                    self.metrics.batch_size.labels(self.name).set(0)
                self._service_s = 0.8 * self._service_s + 0.2 * (time.perf_counter() - t0)
            start = 0
            for job in batch:
                part = results[start : start + len(job.items)]
                start += len(job.items)
                if not job.future.done() and not job.cancelled:
                    job.future.set_result(part)
