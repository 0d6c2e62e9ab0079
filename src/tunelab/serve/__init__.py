"""`tunelab serve`: an OpenAI-compatible, batching, secured and observable model server.

Modules: settings (ServeSettings), app (create_app), loading (the model, loaded in the
background, safetensors only), state (what endpoints share), routes_generate (completions,
chat), routes_encode (classify, embeddings, score), generation (the Generator interface and
its first, serial implementation), scheduler (continuous batching, the default generator),
batching (micro-batches for classify/score/embeddings), auth (API keys), limits (rate limit,
body size), domain_errors (what the engine side raises: no HTTP), errors (the one mapping of
every error to HTTP: OpenAI-shaped bodies, status, Retry-After), metrics (Prometheus),
masking (PII in logs and inputs). See docs/serving.md.
"""

from tunelab.serve.app import create_app
from tunelab.serve.loading import ModelHolder, Served, load_served
from tunelab.serve.settings import ServeSettings

__all__ = ["create_app", "ModelHolder", "Served", "ServeSettings", "load_served"]
