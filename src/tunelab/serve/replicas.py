"""`tunelab serve RUN --replicas N|auto`: the same app as a Ray Serve deployment.

    tunelab serve runs/chat --replicas 2
    tunelab serve runs/chat --replicas auto --min-replicas 1 --max-replicas 4

Ray Serve (the `scale` extra: pip install 'tunelab[scale]') runs the app of `create_app` in
every replica (`@serve.ingress`), so endpoints, keys, scopes and errors are the one-process
ones. Each replica loads the model before it reports ready (a replica added under load never
answers "still loading") and drives its own continuous-batching generator; torch in each
gets cores / replicas threads, and Ray reserves as many CPUs for it.

Autoscaling (`--replicas auto`) is Ray Serve's, on ongoing requests: a replica's running
plus queued requests (Ray lets --max-running + --max-queue in, so tunelab's own queue, and
its 429 when full, stay as with one process); the target is one full batch (--max-running)
unless --target-ongoing says otherwise. On Kubernetes, deploy/k8s/ scales pods on
tunelab_queue_depth instead (KEDA).

What must hold across replicas lives in one named Ray actor, `SharedStore`:
- rate limits: the token buckets themselves (RateLimiter.share), so a key's rate is the
  rate, whatever replica a request lands on; not a per-replica split;
- quotas: each key's tokens of the day (QuotaLedger.share);
- metrics: every replica pushes its /metrics page there every PUSH_S seconds and when it
  answers a scrape; GET /metrics (which Ray routes to any one replica) answers all the
  replicas' pages merged, each sample labelled `replica` (ops_metrics.merge). Sum over the
  label (sum(tunelab_queue_depth)) for the deployment; a page is at most PUSH_S old.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import threading
import time
import warnings
from dataclasses import dataclass

from tunelab.errors import TunelabError

INSTALL = "--replicas needs Ray Serve: pip install 'tunelab[scale]'"
NAMESPACE = "tunelab"
STORE = "tunelab-shared-store"
APP = "tunelab"
PUSH_S = 2.0
STALE_S = 60.0  # a page not pushed for this long is a replica that is gone
log = logging.getLogger("tunelab")
_held: list = []  # the store's handle while serving: an actor nobody holds is collected


@dataclass
class ReplicaPlan:
    """How many replicas: `fixed` N, or autoscaled between `min_replicas` and `max_replicas`."""

    fixed: int | None
    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing: float = 1.0
    upscale_delay: float = 10.0
    downscale_delay: float = 60.0

    @property
    def most(self) -> int:
        return self.fixed or self.max_replicas


def plan(settings) -> ReplicaPlan | None:
    """The replica plan of `settings` (ServeSettings), or None for one plain process
    (--replicas 1, the default).

    Raises:
        TunelabError: a bad --replicas, --min-replicas, --max-replicas, --target-ongoing or
            delay, naming the flag.
    """
    text = str(settings.replicas).strip().lower()
    if text != "auto":
        if not text.isdigit() or int(text) < 1:
            raise TunelabError(
                f"--replicas must be a whole number of at least 1 or auto, got {settings.replicas}"
            )
        n = int(text)
        return None if n == 1 else ReplicaPlan(fixed=n, min_replicas=n, max_replicas=n)
    if settings.min_replicas < 1:
        raise TunelabError(f"--min-replicas must be at least 1, got {settings.min_replicas}")
    if settings.max_replicas < settings.min_replicas:
        raise TunelabError(
            f"--max-replicas ({settings.max_replicas}) must be at least --min-replicas "
            f"({settings.min_replicas})"
        )
    if settings.target_ongoing < 0:
        raise TunelabError(f"--target-ongoing must be 0 or more, got {settings.target_ongoing}")
    for flag, value in (
        ("--upscale-delay", settings.upscale_delay),
        ("--downscale-delay", settings.downscale_delay),
    ):
        if value < 0:
            raise TunelabError(f"{flag} must be 0 or more seconds, got {value}")
    return ReplicaPlan(
        fixed=None,
        min_replicas=settings.min_replicas,
        max_replicas=settings.max_replicas,
        target_ongoing=settings.target_ongoing or float(settings.max_running),
        upscale_delay=settings.upscale_delay,
        downscale_delay=settings.downscale_delay,
    )


def require_ray() -> None:
    """Raises TunelabError(INSTALL) when Ray Serve is not installed."""
    try:
        import ray  # noqa: F401
        from ray import serve  # noqa: F401
    except ImportError:
        raise TunelabError(INSTALL) from None


class SharedStore:
    """What all replicas share (a named Ray actor): rate-limit buckets, quota counts, and
    every replica's latest /metrics page."""

    def __init__(self, rate_limit: float, rate_burst: int) -> None:
        from tunelab.serve.limits import RateLimiter
        from tunelab.serve.quota import QuotaLedger

        self.limiter = RateLimiter(rate_limit, rate_burst)
        self.ledger = QuotaLedger()
        self.pages: dict[str, tuple[float, str]] = {}  # replica id -> (time pushed, page)

    def retry_after(self, name: str) -> float:
        return self.limiter.retry_after(name)

    def used(self, key: str) -> int:
        return self.ledger.used(key)

    def charge(self, key: str, tokens: int) -> None:
        self.ledger.charge(key, tokens)

    def push(self, replica: str, page: str) -> None:
        self.pages[replica] = (time.time(), page)

    def drop(self, replica: str) -> None:
        self.pages.pop(replica, None)

    def metrics(self) -> dict[str, str]:
        """The pages of the replicas that pushed in the last STALE_S seconds."""
        now = time.time()
        self.pages = {r: (t, p) for r, (t, p) in self.pages.items() if now - t < STALE_S}
        return {r: p for r, (_, p) in self.pages.items()}


def start_store(settings, name: str = STORE):
    """The named SharedStore actor (created once per Ray; later callers get the same one)."""
    import ray

    actor = ray.remote(num_cpus=0)(SharedStore)
    return actor.options(name=name, namespace=NAMESPACE, get_if_exists=True).remote(
        settings.rate_limit, settings.rate_burst
    )


class _MetricsPage:
    """ASGI middleware answering GET /metrics with every replica's page (the store's)."""

    def __init__(self, app, store, replica: str, render) -> None:
        self.app, self.store, self.replica, self.render = app, store, replica, render

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != "/metrics" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        from fastapi.responses import Response
        from prometheus_client.exposition import CONTENT_TYPE_LATEST

        from tunelab.serve.ops_metrics import merge

        await self.store.push.remote(self.replica, self.render())
        pages = await self.store.metrics.remote()
        await Response(merge(pages), media_type=CONTENT_TYPE_LATEST)(scope, receive, send)


def share(app, store, replica: str):
    """Wire the app of one replica to the SharedStore `store`: its rate limiter and quota
    ledger count there, GET /metrics answers every replica's page. Returns `render()`, this
    replica's own page (what it pushes)."""
    st = app.state.tl
    st.limiter.share(lambda name: store.retry_after.remote(name))
    st.keys.ledger.share(
        lambda key: store.used.remote(key), lambda key, n: store.charge.remote(key, n)
    )

    def render() -> str:
        served = st.holder.served
        if served is not None:
            st.metrics.set_model(st.model_name, served.kind, served.precision)
        return st.metrics.render().decode()

    app.add_middleware(_MetricsPage, store=store, replica=replica, render=render)
    return render


def replica_app(model: str, settings, threads: int):
    """One replica's app: torch on `threads` threads, the model loaded (before the replica
    says it is ready), limits, quotas and /metrics shared through the store."""
    import ray
    import torch

    from tunelab.serve import ModelHolder, create_app
    from tunelab.serve.auth import KeyChecker, read_keys
    from tunelab.serve.loading import load_served

    torch.set_num_threads(threads)
    name = ModelHolder(model, settings.served_model_name).name
    served = load_served(model, name, dtype=settings.dtype, device=settings.device)
    store = ray.get_actor(STORE, namespace=NAMESPACE)
    keys = KeyChecker(read_keys(settings.keys_file), keys_file=settings.keys_file)
    app = create_app(settings, ModelHolder.of(served), keys)
    replica = ray.get_runtime_context().get_actor_id()[:12]
    return app, store, replica, share(app, store, replica)


def deployment_options(p: ReplicaPlan, settings, cpus: int) -> dict:
    """Ray Serve deployment options: CPUs per replica so the most replicas fit the machine,
    Ray's in-flight cap = what one tunelab process admits, and the autoscaling config."""
    opts = {
        "name": APP,
        "ray_actor_options": {"num_cpus": cpus / p.most},
        "max_ongoing_requests": settings.max_running + settings.max_queue,
        "graceful_shutdown_timeout_s": settings.graceful_timeout,
    }
    if p.fixed is not None:
        opts["num_replicas"] = p.fixed
    else:
        opts["autoscaling_config"] = {
            "min_replicas": p.min_replicas,
            "max_replicas": p.max_replicas,
            "target_ongoing_requests": p.target_ongoing,
            "upscale_delay_s": p.upscale_delay,
            "downscale_delay_s": p.downscale_delay,
        }
        # replicas report their load every metrics_interval_s (Ray's default: 10 s) averaged
        # over look_back_period_s (30 s): both at the delays' scale, so short delays react
        quick = min(p.upscale_delay, p.downscale_delay)
        interval = min(10.0, max(0.5, quick / 2))
        opts["autoscaling_config"] |= {
            "metrics_interval_s": interval,
            "look_back_period_s": min(30.0, max(2 * interval, quick)),
        }
    return opts


def build(model: str, settings, p: ReplicaPlan, cpus: int):
    """The bound Ray Serve application (pass it to serve.run)."""
    from ray import serve

    threads = max(1, math.floor(cpus / p.most))

    @serve.ingress()
    class TunelabReplica:
        async def __init__(self) -> None:
            self.tl_app, self.store, self.replica, self.render = await asyncio.to_thread(
                replica_app, model, settings, threads
            )
            self.pusher = asyncio.get_running_loop().create_task(self._push())

        async def _push(self) -> None:
            while True:
                with contextlib.suppress(Exception):  # a push missed is retried next time
                    await self.store.push.remote(self.replica, self.render())
                await asyncio.sleep(PUSH_S)

        def __serve_build_asgi_app__(self):
            return self.tl_app

        async def __del__(self) -> None:
            if hasattr(self, "pusher"):  # not when __init__ failed
                self.pusher.cancel()
            with contextlib.suppress(Exception):
                await self.store.drop.remote(self.replica)

    with warnings.catch_warnings():  # metrics_interval_s: Ray's env variables will replace it
        warnings.simplefilter("ignore", DeprecationWarning)
        deployment = serve.deployment(**deployment_options(p, settings, cpus))(TunelabReplica)
    return deployment.bind()


def init_ray(cpus: int) -> None:
    """A local Ray with `cpus` CPUs and no dashboard (none when one is already up)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=cpus,
            include_dashboard=False,
            namespace=NAMESPACE,
            logging_level=logging.WARNING,
            configure_logging=True,
        )


def start(model: str, settings, p: ReplicaPlan, cpus: int | None = None) -> None:
    """Start Ray (local, CPU count `cpus`, no dashboard), the store and the deployment on
    settings.host:port; returns once the first replicas are ready."""
    from ray import serve

    cpus = cpus or os.cpu_count() or 1
    init_ray(cpus)
    _held[:] = [start_store(settings)]
    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(build(model, settings, p, cpus), name=APP, route_prefix="/")


def replica_count() -> int:
    """Replicas of the tunelab deployment running now."""
    from ray import serve

    status = serve.status().applications[APP].deployments[APP]
    return status.replica_states.get("RUNNING", 0)


def stop() -> None:
    """Stop the deployment (in-flight requests finish, up to --graceful-timeout) and Ray."""
    import ray
    from ray import serve

    with contextlib.suppress(Exception):
        serve.shutdown()
    _held.clear()
    ray.shutdown()


def serve_replicas(model: str, settings, p: ReplicaPlan, log_level: str = "info") -> None:
    """`tunelab serve --replicas`: serve `model` on Ray Serve until SIGINT / SIGTERM.

    Raises:
        TunelabError: Ray Serve missing, a source that cannot be served, a bad keys file.
    """
    require_ray()
    from tunelab.models.precision import resolve
    from tunelab.serve.auth import read_keys
    from tunelab.serve.loading import check_source

    resolve(settings.dtype, settings.device)
    check_source(model)
    from tunelab.serve.server import setup_logging

    keys = read_keys(settings.keys_file)  # a bad file is said before Ray starts
    setup_logging(log_level)
    done = threading.Event()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        init_ray(os.cpu_count() or 1)
        # after ray.init, which installs its own SIGTERM handler (one that aborts at once)
        for s in previous:
            signal.signal(s, lambda *_: done.set())
        try:
            start(model, settings, p)
        except RuntimeError as exc:  # serve.run: a replica failed to start (its log says why)
            reason = str(exc).strip().splitlines()[0]
            raise TunelabError(f"cannot serve {model} with --replicas: {reason}") from None
        what = f"{p.fixed} replicas" if p.fixed else f"{p.min_replicas}-{p.max_replicas} replicas"
        log.info(
            "serving %s on http://%s:%d with %s (Ray Serve; keys: %s)",
            model,
            settings.host,
            settings.port,
            what,
            "on" if keys else "off",
        )
        while not done.wait(1.0):  # wakes for the signal handler
            pass
    finally:
        stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    log.info("server stopped")
