"""What the endpoints share: settings, the model, keys, limits, metrics, queues.

`ServeState.require(endpoint)` is the one place that says whether the model can serve an
endpoint now: ModelLoading while it loads, ModelFailed when it failed to load, ModelNotServed
for another model's name, EndpointNotServed when the model is of the wrong kind for that
endpoint (domain errors: serve/errors.py answers them with 503 + Retry-After, 503, 404, 400).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from concurrent.futures import ThreadPoolExecutor

from fastapi import Request

from tunelab.errors import TunelabError
from tunelab.serve import domain_errors as de
from tunelab.serve.auth import KeyChecker
from tunelab.serve.batching import MicroBatcher
from tunelab.serve.limits import RateLimiter
from tunelab.serve.loading import ModelHolder, Served
from tunelab.serve.masking import mask_any
from tunelab.serve.metrics import ServeMetrics
from tunelab.serve.settings import ServeSettings

log = logging.getLogger("tunelab.serve")


class ServeState:
    def __init__(self, settings: ServeSettings, holder: ModelHolder, keys: KeyChecker) -> None:
        self.settings = settings
        self.holder = holder
        self.keys = keys
        self.limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
        self.metrics = ServeMetrics()
        self.executor: ThreadPoolExecutor | None = None
        self.batchers: dict[str, MicroBatcher] = {}
        self.generator = None
        self.generator_factory = None

    @property
    def model_name(self) -> str:
        return self.settings.served_model_name or self.holder.name or "model"

    def require(self, endpoint: str, model: str | None = None) -> Served:
        """The served model, if it is loaded and serves `endpoint`.

        Raises:
            de.ModelFailed, de.ModelLoading: the model failed to load, or is not loaded yet.
            de.ModelNotServed: `model` (the request's) names another model.
            de.EndpointNotServed: the model is of the wrong kind for `endpoint`.
        """
        if self.holder.error:
            raise de.ModelFailed(f"the model failed to load: {self.holder.error}")
        served = self.holder.served
        if served is None:
            raise de.ModelLoading(
                "the model is still loading: retry shortly (GET /ready says when)", retry_after=5
            )
        if model is not None and model != self.model_name:
            raise de.ModelNotServed(
                f"model {model!r} is not served here: this server serves {self.model_name!r}"
            )
        if endpoint not in served.endpoints:
            a = "an" if served.family.startswith(tuple("aeiou")) else "a"
            raise de.EndpointNotServed(
                f"{self.model_name} is {a} {served.family} {served.kind} model and does not "
                f"serve {endpoint}; it serves {', '.join(served.endpoints)}"
            )
        return served

    def inputs(self, value):
        """Request inputs as the model should see them (PII masked when configured)."""
        return mask_any(value) if self.settings.mask_pii_in_inputs else value

    def log_request(self, request: Request, what) -> None:
        if self.settings.log_requests:
            log.info("%s key=%s inputs=%r", request.url.path, request.state.key, what)

    def batcher(self, name: str, fn) -> MicroBatcher:
        if name not in self.batchers:
            if self.executor is None:
                self.executor = ThreadPoolExecutor(1, thread_name_prefix="tunelab-batch")
            s = self.settings
            self.batchers[name] = MicroBatcher(
                fn,
                name=name,
                executor=self.executor,
                max_batch=s.max_batch_size,
                window_s=s.batch_window_ms / 1000,
                max_queue=s.max_queue,
                metrics=self.metrics,
            )
        return self.batchers[name]

    def get_generator(self, served: Served):
        if self.generator is None:
            from tunelab.serve.generation import SerialGenerator
            from tunelab.serve.scheduler import ContinuousGenerator

            factory = self.generator_factory
            if factory is None and self.settings.serial_generation:
                factory = SerialGenerator
            elif factory is None:
                factory = functools.partial(
                    ContinuousGenerator, max_batch=self.settings.max_running
                )
            self.generator = factory(
                served, max_queue=self.settings.max_queue, metrics=self.metrics
            )
        return self.generator

    async def close(self) -> None:
        for b in self.batchers.values():
            await b.stop()
        if self.generator is not None:
            await asyncio.to_thread(self.generator.stop)
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)


async def until_disconnect(request: Request) -> None:
    """Returns when the client has gone away (its connection closed)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, coro):
    """Await `coro`, cancelling it (and so dropping its queued work) if the client leaves:
    then raises de.ClientGone."""
    work = asyncio.ensure_future(coro)
    watch = asyncio.ensure_future(until_disconnect(request))
    try:
        await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        work.cancel()
        raise
    finally:
        watch.cancel()
    if work.done():
        return work.result()
    work.cancel()
    with contextlib.suppress(asyncio.CancelledError, TunelabError, de.GenerationFailed):
        await work
    raise de.ClientGone("the client closed the connection")
