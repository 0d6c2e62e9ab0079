"""`ServeSettings`: every knob of `tunelab serve`; attribute docstrings become its --help."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServeSettings:
    host: str = "127.0.0.1"
    """Address to bind (127.0.0.1: this machine only; 0.0.0.0 exposes it: set API keys)."""
    port: int = 8000
    """TCP port."""
    keys_file: str | None = None
    """File of API keys, one per line: KEY or NAME KEY (# comments). Also read:
    TUNELAB_API_KEYS (comma-separated). No keys at all: no authentication."""
    rate_limit: float = 0.0
    """Requests per minute allowed per API key (per client address without keys); 0: off."""
    rate_burst: int = 0
    """Requests a key may send at once before the rate limit applies (0: one minute's worth)."""
    max_request_bytes: int = 1_048_576
    """Largest request body accepted (bigger: 413)."""
    max_queue: int = 64
    """Requests waiting per queue (generation, classify, embeddings, score); more: 429."""
    request_timeout: float = 60.0
    """Seconds a request may take, queueing included (longer: 504)."""
    max_running: int = 32
    """Most sequences decoded together by continuous batching (completions: prompts x n)."""
    serial_generation: bool = False
    """Run completion requests one at a time instead of continuous batching."""
    max_tokens_limit: int = 2048
    """Largest max_tokens a completion request may ask for."""
    batch_window_ms: float = 5.0
    """How long classify / score / embeddings requests wait for others to share a batch."""
    max_batch_size: int = 32
    """Most inputs in one classify / score / embeddings batch."""
    mask_pii_in_logs: bool = False
    """Mask e-mail addresses, phone numbers and card numbers in the server's log lines."""
    mask_pii_in_inputs: bool = False
    """Also mask them in the inputs before the model sees them."""
    log_requests: bool = False
    """Log every request's inputs at INFO (masked with mask_pii_in_logs)."""
    served_model_name: str | None = None
    """The model id clients pass and /v1/models lists (default: the folder or model name)."""
    dtype: str = "auto"
    """What the model runs in: auto (bf16 where the hardware has native bf16, else fp32), fp32
    (exact), bf16, fp16, int8 (int8 weights) or int4 (CPU). Shown in /v1/models and /metrics."""
    device: str = "auto"
    """Where it runs: auto (a CUDA GPU if there is one, else cpu), cpu, cuda, cuda:N or mps."""
    graceful_timeout: float = 30.0
    """On SIGINT/SIGTERM: seconds in-flight requests get to finish before the server stops."""
    replicas: str = "1"
    """Replicas of the server, each with its own model and batching: N, or auto (between
    --min-replicas and --max-replicas on ongoing requests). Above 1 it runs on Ray Serve
    (pip install 'tunelab[scale]'); rate limits and quotas hold across replicas."""
    min_replicas: int = 1
    """--replicas auto: fewest replicas kept running."""
    max_replicas: int = 2
    """--replicas auto: most replicas started under load."""
    target_ongoing: float = 0.0
    """--replicas auto: requests in flight per replica (running + queued) that the autoscaler
    aims at; 0: --max-running, one full continuous batch."""
    upscale_delay: float = 10.0
    """--replicas auto: seconds of load above the target before a replica is added."""
    downscale_delay: float = 60.0
    """--replicas auto: seconds of load below the target before a replica is removed."""
