"""--mask-pii-in-logs under a real uvicorn server run in-process: the access line is still
printed (no "--- Logging error ---" dump) and e-mail, phone and card values in a request never
reach any log output, a 422 whose validation error holds the raw input included."""

from __future__ import annotations

import logging
import socket
import threading
import time

import httpx
import pytest

from tunelab.serve import ModelHolder, ServeSettings, create_app
from tunelab.serve.auth import KeyChecker
from tunelab.serve.masking import LOGGERS, MaskingFilter, remove_log_masking

SECRETS = ("eve.secret@example.com", "4111 1111 1111 1111", "4111111111111111", "7946 0958")
TEXT = "mail eve.secret@example.com, card 4111 1111 1111 1111, call +44 20 7946 0958"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _remove_masking() -> None:
    for logger in [logging.getLogger(), *map(logging.getLogger, LOGGERS)]:
        for holder in [logger, *logger.handlers]:
            for flt in [f for f in holder.filters if isinstance(f, MaskingFilter)]:
                remove_log_masking(flt)


@pytest.fixture
def masked_server(served_decoder):
    """(base url) of a uvicorn server built as `tunelab serve --mask-pii-in-logs
    --log-requests` builds it, running in a thread of this process."""
    from tunelab.serve.server import make_server

    handlers = list(logging.getLogger("tunelab").handlers)
    settings = ServeSettings(port=_free_port(), mask_pii_in_logs=True, log_requests=True)
    app = create_app(settings, ModelHolder.of(served_decoder), KeyChecker({}))
    server = make_server(app, settings, "info")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        thread.join(15)
        _remove_masking()
        tunelab = logging.getLogger("tunelab")
        for handler in [h for h in tunelab.handlers if h not in handlers]:
            tunelab.removeHandler(handler)


def test_masked_logs_keep_access_lines_and_hide_pii(masked_server, capfd, caplog):
    with caplog.at_level(logging.INFO):
        ok = httpx.post(
            f"{masked_server}/v1/completions",
            json={"prompt": TEXT, "max_tokens": 2, "user": TEXT},
            timeout=30,
        )
        bad = httpx.post(  # no prompt: the validation error's input is the whole body
            f"{masked_server}/v1/completions?to=eve.secret@example.com",
            json={"input": TEXT, "max_tokens": "many"},
            timeout=30,
        )
        time.sleep(0.2)  # let the access lines be written
    assert ok.status_code == 200 and bad.status_code == 422
    out, err = capfd.readouterr()
    server_records = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    logs = out + err + "\n".join(caplog.handler.format(r) for r in server_records)
    assert "Logging error" not in logs and "Traceback" not in logs
    assert '"POST /v1/completions HTTP/1.1" 200' in logs
    assert '"POST /v1/completions?to=[EMAIL] HTTP/1.1" 422' in logs
    for secret in SECRETS:
        assert secret not in logs, secret
