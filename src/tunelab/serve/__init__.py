"""`tunelab serve`: an OpenAI-compatible, batching, secured and observable model server.

Modules: settings (ServeSettings), app (create_app), loading (the model, loaded in the
background, safetensors only), state (what endpoints share), routes_generate (completions,
chat), routes_encode (classify, embeddings, score), generation (the Generator interface and
its first, serial implementation), scheduler (continuous batching, the default generator),
batching (micro-batches for classify/score/embeddings), auth (API keys), limits (rate limit,
body size), json_body (request bodies must be JSON: 422 invalid_json), domain_errors (what
the engine side raises: no HTTP), errors (the one mapping of every error to HTTP:
OpenAI-shaped bodies, status, Retry-After), openapi (what /openapi.json says each endpoint
answers), metrics (Prometheus), masking (PII in logs and inputs). See docs/serving.md.

The package's own import is light (no fastapi): `tunelab.api` and `--help` import it; the
app's modules load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "create_app": "tunelab.serve.app",
    "ModelHolder": "tunelab.serve.loading",
    "Served": "tunelab.serve.loading",
    "load_served": "tunelab.serve.loading",
    "ServeSettings": "tunelab.serve.settings",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tunelab.serve' has no attribute {name!r}")


__all__ = ["create_app", "ModelHolder", "Served", "ServeSettings", "load_served"]
