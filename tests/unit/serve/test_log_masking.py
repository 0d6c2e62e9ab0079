"""--mask-pii-in-logs under a real uvicorn server run in-process: the access line is still
printed (no "--- Logging error ---" dump) and e-mail, phone and card values in a request never
reach any log output, a 422 whose validation error holds the raw input included."""

from __future__ import annotations

import logging
import re
import threading
import time

import httpx
import pytest

from tests.unit.serve.live import free_port
from tunelab.serve import ModelHolder, ServeSettings, create_app
from tunelab.serve.auth import KeyChecker
from tunelab.serve.masking import LOGGERS, MaskingFilter, remove_log_masking

SECRETS = ("eve.secret@example.com", "4111 1111 1111 1111", "4111111111111111", "7946 0958")
TEXT = "mail eve.secret@example.com, card 4111 1111 1111 1111, call +44 20 7946 0958"


def _remove_masking() -> None:
    for logger in [logging.getLogger(), *map(logging.getLogger, LOGGERS)]:
        for holder in [logger, *logger.handlers]:
            for flt in [f for f in holder.filters if isinstance(f, MaskingFilter)]:
                remove_log_masking(flt)


@pytest.fixture
def start_masked():
    """start_masked(served, keys=None, **settings) -> the base url of a uvicorn server built
    as `tunelab serve --mask-pii-in-logs --log-requests` builds it, running in a thread of
    this process (stopped, and its log masking removed, after the test)."""
    from tunelab.serve.server import make_server

    handlers = list(logging.getLogger("tunelab").handlers)
    running = []

    def start(served, keys=None, **overrides):
        settings = ServeSettings(
            port=free_port(), mask_pii_in_logs=True, log_requests=True, **overrides
        )
        app = create_app(settings, ModelHolder.of(served), KeyChecker(keys or {}))
        server = make_server(app, settings, "info")
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        running.append((server, thread))
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{settings.port}"

    try:
        yield start
    finally:
        for server, thread in running:
            server.should_exit = True
            thread.join(15)
        _remove_masking()
        tunelab = logging.getLogger("tunelab")
        for handler in [h for h in tunelab.handlers if h not in handlers]:
            tunelab.removeHandler(handler)


@pytest.fixture
def masked_server(served_decoder, start_masked):
    return start_masked(served_decoder)


def _logs(capfd, caplog) -> str:
    """Everything the server logged: its stdout / stderr and the records pytest caught (the
    client's own httpx records left out)."""
    out, err = capfd.readouterr()
    server_records = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    return out + err + "\n".join(caplog.handler.format(r) for r in server_records)


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
    logs = _logs(capfd, caplog)
    assert "Logging error" not in logs and "Traceback" not in logs
    assert '"POST /v1/completions HTTP/1.1" 200' in logs
    assert '"POST /v1/completions?to=[EMAIL] HTTP/1.1" 422' in logs
    for secret in SECRETS:
        assert secret not in logs, secret


KEY = "test-key-0123456789"
# seeded personal data, and the forms it takes on the wire: plain, in a JSON body (the e-mail
# after a \u0040 escape is the client's business: json.dumps writes it plainly), and
# percent-encoded in a query string, which uvicorn's access line prints as it came
SEEDED = {
    "email": ["eve.secret@example.com", "eve.secret%40example.com"],
    "phone": ["7946 0958", "(555) 123-4567", "555%29+123-4567", "7946%200958"],
    "card": [
        "4111 1111 1111 1111",
        "4111111111111111",
        "5500-0000-0000-0004",
        "4111+1111+1111+1111",
        "4111%201111%201111%201111",
    ],
}
BODY_TEXT = "I am eve.secret@example.com, call (555) 123-4567 or +44 20 7946 0958, card " + (
    "4111 1111 1111 1111 / 5500-0000-0000-0004"
)
QUERY = (
    "?to=eve.secret%40example.com&tel=%28555%29+123-4567&alt=%2B44%2020%207946%200958"
    "&card=4111%201111%201111%201111&raw=eve.secret@example.com"
)


def test_a_full_request_cycle_logs_no_pii(served_decoder, start_masked, capfd, caplog):
    url = start_masked(served_decoder, keys={"tester": KEY}, max_request_bytes=2048)
    auth = {"Authorization": f"Bearer {KEY}"}
    post = f"{url}/v1/completions{QUERY}"
    body = {"prompt": BODY_TEXT, "max_tokens": 2, "user": BODY_TEXT}
    with caplog.at_level(logging.INFO):
        answers = {
            "ok": httpx.post(post, json=body, headers=auth, timeout=30),
            "no key": httpx.post(post, json=body, timeout=30),
            "too large": httpx.post(
                post, json={**body, "pad": BODY_TEXT * 40}, headers=auth, timeout=30
            ),
            "invalid": httpx.post(post, json={**body, "n": BODY_TEXT}, headers=auth, timeout=30),
            "not json": httpx.post(post, content=BODY_TEXT.encode(), headers=auth, timeout=30),
        }

        def boom(*args, **kwargs):
            raise RuntimeError(f"the model choked on {BODY_TEXT}")

        lm = served_decoder.model  # its body: the exact fp32 path calls the body, not the LM
        model = getattr(lm, lm.base_model_prefix)
        model.forward = boom  # instance attribute: nn.Module.__call__ finds it
        try:
            answers["generation bug"] = httpx.post(post, json=body, headers=auth, timeout=30)
            answers["endpoint bug"] = httpx.post(  # score: raised inside the endpoint
                f"{url}/v1/score{QUERY}", json={"input": BODY_TEXT}, headers=auth, timeout=30
            )
        finally:
            del model.forward
        time.sleep(0.3)  # let the access lines be written
    statuses = {name: r.status_code for name, r in answers.items()}
    assert statuses == {
        "ok": 200,
        "no key": 401,
        "too large": 413,
        "invalid": 422,
        "not json": 422,
        "generation bug": 500,
        "endpoint bug": 500,
    }
    logs = _logs(capfd, caplog)
    assert "Logging error" not in logs
    # the access lines are all there, their query strings masked
    masked = re.escape("?to=[EMAIL]&tel=[PHONE]&alt=[PHONE]&card=[CARD]&raw=[EMAIL]")
    for status in (200, 401, 413, 422, 500):
        line = rf'"POST /v1/completions{masked} HTTP/1.1" {status}'
        assert re.search(line, logs), status
    assert re.search(r'"POST /v1/score\?to=\[EMAIL\][^"]*HTTP/1.1" 500', logs)
    # the inputs were logged (masked), and so were both bugs, with their tracebacks
    assert "inputs=" in logs and "[EMAIL]" in logs and "[CARD]" in logs
    assert logs.count("Traceback") >= 2 and "the model choked on" in logs
    for kind, forms in SEEDED.items():
        for form in forms:
            assert form not in logs, (kind, form)
    for r in answers.values():  # and none in the answers either: bodies never echo inputs
        for forms in SEEDED.values():
            assert not any(form in r.text for form in forms), r.text
