"""`tunelab serve RUN_OR_MODEL`: the OpenAI-compatible server (tunelab.serve) under uvicorn.

tunelab serve runs/quickstart                        # classify + embeddings on 127.0.0.1:8000
tunelab serve smollm2-135m --keys-file keys.txt      # completions, chat, score
tunelab serve runs/chat --host 0.0.0.0 --port 9000 --rate-limit 60 --mask-pii-in-logs
tunelab serve runs/chat --replicas auto --max-replicas 4   # Ray Serve (tunelab[scale])

Every option is a ServeSettings field (its docstring is the --help text). SIGINT / SIGTERM
stop accepting connections and let in-flight requests finish (up to --graceful-timeout).
"""

from __future__ import annotations

import argparse
import dataclasses

from tunelab.cli.flags import verb_parser
from tunelab.errors import TunelabError


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


HELP = "serve a model over HTTP (OpenAI-compatible; classify, embeddings, score)"
DESCRIPTION = (
    "Serve one model: completions, chat completions and score for language "
    "models; classify for classification runs; embeddings for encoders. API keys, rate "
    "limits, bounded queues, Prometheus /metrics. See docs/serving.md."
)


def add_parser(sub) -> None:
    from tunelab.config.parse import field_docs
    from tunelab.serve.settings import ServeSettings

    p = verb_parser(sub, "serve", HELP, DESCRIPTION)
    p.add_argument("model", metavar="RUN_OR_MODEL", help="run folder, model folder, .gguf or name")
    docs = field_docs(ServeSettings)
    for f in dataclasses.fields(ServeSettings):
        default = "" if f.default is None else f" (default: {f.default})"
        help_text = f"{docs.get(f.name, '')}{default}".replace("%", "%%")
        if f.type in ("bool", bool):
            p.add_argument(_flag(f.name), dest=f.name, action="store_true", help=help_text)
            continue
        kind = {"int": int, "float": float}.get(str(f.type), str)
        p.add_argument(
            _flag(f.name),
            dest=f.name,
            type=kind,
            default=f.default,
            metavar="N" if kind is not str else f.name.split("_")[-1].upper(),
            help=help_text,
        )
    p.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="server log level (default: info)",
    )


def _settings(a: argparse.Namespace):
    from tunelab.serve.settings import ServeSettings

    values = {f.name: getattr(a, f.name) for f in dataclasses.fields(ServeSettings)}
    s = ServeSettings(**values)
    positive = ("max_request_bytes", "max_queue", "max_batch_size", "max_tokens_limit")
    for name in (*positive, "max_running"):
        if getattr(s, name) < 1:
            raise TunelabError(f"{_flag(name)} must be positive, got {getattr(s, name)}")
    if not 0 <= s.port <= 65535:
        raise TunelabError(f"--port must be 0-65535 (0: any free port), got {s.port}")
    for name in ("request_timeout", "graceful_timeout", "batch_window_ms", "rate_limit"):
        if getattr(s, name) < 0 or (name == "request_timeout" and s.request_timeout == 0):
            least = "above 0" if name == "request_timeout" else "0 or more"
            raise TunelabError(f"{_flag(name)} must be {least}, got {getattr(s, name)}")
    if s.rate_burst < 0:
        raise TunelabError(f"--rate-burst must be 0 or more, got {s.rate_burst}")
    _check_keys(s.keys_file)
    return s


def _replicas(s):
    """The replica plan (None: one plain process); Ray Serve must be installed for more."""
    from tunelab.serve.replicas import plan, require_ray

    p = plan(s)
    if p is not None:
        require_ray()
    return p


def _check_keys(keys_file: str | None) -> None:
    """A --keys-file must exist and hold a key: an empty one would turn authentication off."""
    from tunelab.serve.auth import read_keys

    if keys_file is None or read_keys(keys_file, environ={}):
        return
    from pathlib import Path

    from tunelab.serve.keys import is_hashed, parse_file

    path = Path(keys_file).expanduser()
    text = path.read_text()
    if is_hashed(text) and parse_file(text, path).keys:
        raise TunelabError(
            f"--keys-file {keys_file}: every key in it is revoked: add one with `tunelab keys "
            f"create --keys-file {keys_file}`, or drop --keys-file to serve without "
            "authentication"
        )
    raise TunelabError(
        f"--keys-file {keys_file} holds no keys: add one KEY or NAME KEY per line (or make a "
        "hashed file with `tunelab keys create`), or drop --keys-file to serve without "
        "authentication"
    )


def _port_free(host: str, port: int) -> None:
    """A one-line error when another process already listens on host:port."""
    import socket

    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise TunelabError(
                f"cannot listen on {host}:{port} ({exc.strerror}): stop what uses it or pass "
                "another --port"
            ) from None


def run(a: argparse.Namespace) -> None:
    from tunelab import api

    settings = _settings(a)
    replicas = _replicas(settings)
    _port_free(settings.host, settings.port)
    if replicas is None:
        api.serve(a.model, settings, a.log_level)
        return
    from tunelab.serve.replicas import serve_replicas

    serve_replicas(a.model, settings, replicas, a.log_level)
