"""Running the server: the app under uvicorn, keys, log masking, a clean stop on signals.

`tunelab serve` (cli/serve.py) parses flags into ServeSettings and calls `api.serve`, which is
`serve()` here.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import sys

from tunelab.errors import TunelabError


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Stopped(Exception):
    """SIGTERM after uvicorn's graceful shutdown."""


def _raise_stopped(signum, frame) -> None:
    raise _Stopped


def setup_logging(log_level: str = "info") -> logging.Logger:
    """tunelab's log lines on stderr at `log_level` (once per process); returns its logger."""
    log = logging.getLogger("tunelab")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        log.addHandler(handler)
    log.setLevel(log_level.upper())
    return log


def make_server(app, settings, log_level: str = "info"):
    """The uvicorn server for `app`, with tunelab's log lines on stderr, uvicorn's access log,
    and personal data masked in every log line when `settings.mask_pii_in_logs` (installed
    after uvicorn has configured its loggers, so its handlers get the filter too)."""
    import uvicorn

    from tunelab.serve.masking import install_log_masking

    setup_logging(log_level)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        timeout_graceful_shutdown=settings.graceful_timeout,
        access_log=True,
    )
    server = uvicorn.Server(config)
    if settings.mask_pii_in_logs:
        install_log_masking()
    return server


def serve(model: str, settings, log_level: str = "info") -> None:
    """Serve `model` (a run folder, model folder, .gguf or embedded name) with `settings`
    (a ServeSettings) under uvicorn until SIGINT / SIGTERM; in-flight requests finish first.

    Raises:
        TunelabError: a source that cannot be served, a bad keys file, a failed load.
    """
    import threading
    from functools import partial

    from tunelab.models.precision import resolve
    from tunelab.serve import ModelHolder, create_app
    from tunelab.serve.auth import KeyChecker, read_keys
    from tunelab.serve.loading import check_source, load_served

    resolve(settings.dtype, settings.device)  # a missing GPU is said before the server starts
    check_source(model)
    keys = KeyChecker(read_keys(settings.keys_file), keys_file=settings.keys_file)
    log = logging.getLogger("tunelab")
    loader = partial(load_served, dtype=settings.dtype, device=settings.device)
    holder = ModelHolder(model, settings.served_model_name, loader=loader)
    server = make_server(create_app(settings, holder, keys), settings, log_level)
    if not _is_loopback(settings.host) and not keys.enabled:
        log.warning(
            "binding %s without API keys: anyone who can reach this port can use the model "
            "(pass --keys-file or set TUNELAB_API_KEYS)",
            settings.host,
        )

    def _stop_if_load_failed() -> None:
        holder.ready_event.wait()
        if holder.error:
            server.should_exit = True

    threading.Thread(target=_stop_if_load_failed, daemon=True).start()
    log.info(
        "serving %s on http://%s:%d (keys: %s)",
        model,
        settings.host,
        settings.port,
        "on" if keys.enabled else "off",
    )
    # uvicorn drains in-flight requests on SIGINT/SIGTERM, then re-raises the signal: a
    # drained server is a clean stop (exit 0), not an interruption
    previous = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        server.run()
    except (KeyboardInterrupt, _Stopped):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    log.info("server stopped")
    if holder.error:
        raise TunelabError(f"cannot serve {model}: {holder.error}")
