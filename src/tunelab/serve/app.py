"""`create_app(settings, holder)`: the FastAPI application of `tunelab serve`.

    from tunelab.serve import ModelHolder, ServeSettings, create_app
    app = create_app(ServeSettings(keys_file="keys.txt"), ModelHolder("runs/quickstart"))
    # uvicorn.run(app, host="127.0.0.1", port=8000)

Middleware, outermost first: metrics (every response counted and timed, errors included),
the audit line of every /v1 request (audit.py: key id, endpoint, status, tokens; quotas
charged), the catch-all 500 handler, API keys, their scopes, quotas and rate limits on /v1
paths (401, 403, 429: checked before the body is read), the body size limit (413), the JSON
check of request bodies (422 invalid_json; json_body.py). /health, /ready and /metrics are
open: they say nothing about the model's inputs or outputs. The model loads in a background
thread started by the app's lifespan, so /health answers at once and /ready turns 200 when
it is in; /metrics has tunelab_ready for alerts (ops_metrics.py).
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, Response

from tunelab.serve import openapi as doc
from tunelab.serve import ops_metrics
from tunelab.serve.audit import AuditMiddleware
from tunelab.serve.auth import AuthMiddleware, KeyChecker, read_keys
from tunelab.serve.errors import CatchAllMiddleware, install_error_handlers
from tunelab.serve.json_body import JsonBodyMiddleware
from tunelab.serve.limits import BodyLimitMiddleware
from tunelab.serve.loading import ModelHolder
from tunelab.serve.metrics import MetricsMiddleware
from tunelab.serve.quota import counting
from tunelab.serve.settings import ServeSettings
from tunelab.serve.state import ServeState


def create_app(
    settings: ServeSettings,
    holder: ModelHolder,
    keys: KeyChecker | None = None,
    generator_factory=None,
) -> FastAPI:
    """The server app for one model.

    Args:
        settings: limits, keys file, batching; see ServeSettings.
        holder: the model (loading starts with the app's lifespan).
        keys: API keys (default: read from settings.keys_file and TUNELAB_API_KEYS).
        generator_factory: `(served, max_queue=, metrics=) -> Generator` for the completion
            endpoints (default: ContinuousGenerator; SerialGenerator with
            settings.serial_generation).

    Raises:
        TunelabError: an unreadable keys file or a key that is too short.
    """
    from tunelab.serve import routes_encode, routes_generate

    st = ServeState(
        settings,
        holder,
        keys or KeyChecker(read_keys(settings.keys_file), keys_file=settings.keys_file),
    )
    st.generator_factory = counting(generator_factory, settings)  # tokens for quotas, audit
    started = int(time.time())
    paths: set[str] = set()  # known routes: metric labels for requests refused before routing
    json_paths: set[str] = set()  # routes that read a JSON body

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        holder.start()
        yield
        await st.close()

    app = FastAPI(title="tunelab serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.tl = st
    install_error_handlers(app)
    app.add_middleware(JsonBodyMiddleware, paths=json_paths)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(
        AuthMiddleware, keys=st.keys, limiter=st.limiter, model_name=lambda: st.model_name
    )
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(AuditMiddleware, keys=st.keys, model_name=lambda: st.model_name, paths=paths)
    app.add_middleware(MetricsMiddleware, metrics=st.metrics, paths=paths)
    ops_metrics.install(
        st.metrics.registry,
        lambda: holder.ready and not holder.error,
        settings.max_queue,
        settings.max_running,
    )

    @app.get("/health", responses={200: {"model": doc.Health}, **doc.OPEN_RESPONSES})
    async def health():
        return {"status": "ok"}

    @app.get("/ready", responses=doc.READY_RESPONSES)
    async def ready():
        if holder.error:
            return JSONResponse(
                {"status": "failed", "model": st.model_name, "error": holder.error}, 503
            )
        if not holder.ready:
            return JSONResponse(
                {"status": "loading", "model": st.model_name}, 503, headers={"Retry-After": "5"}
            )
        served = holder.served
        return {
            "status": "ready",
            "model": st.model_name,
            "kind": served.kind,
            "family": served.family,
            "context": served.context,
            "endpoints": served.endpoints,
        }

    @app.get("/metrics", response_class=Response, responses=doc.METRICS_RESPONSES)
    async def metrics():
        if holder.served is not None:
            st.metrics.set_model(st.model_name, holder.served.kind, holder.served.precision)
        return Response(st.metrics.render(), media_type=st.metrics.content_type)

    v1 = APIRouter()

    @v1.get("/v1/models", responses={200: {"model": doc.ModelList}, **doc.V1_RESPONSES})
    async def models():
        card = {"id": st.model_name, "object": "model", "created": started, "owned_by": "tunelab"}
        served = holder.served
        if served is not None and served.precision:
            card |= {"dtype": served.precision["dtype"], "device": served.precision["device"]}
        return {"object": "list", "data": [card]}

    v1.include_router(routes_generate.router)
    v1.include_router(routes_encode.router)
    app.include_router(v1)
    documented = app.openapi()["paths"]  # app.routes nests included routers
    paths.update(documented)
    json_paths.update(p for p, ops in documented.items() if "requestBody" in ops.get("post", {}))
    return app
