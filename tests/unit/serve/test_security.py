"""Keys, rate limits, body limits and the error bodies (OpenAI shape, never a traceback)."""

from __future__ import annotations

import pytest

from tests.unit.serve.conftest import KEY
from tunelab.errors import TunelabError
from tunelab.serve.auth import KeyChecker, read_keys
from tunelab.serve.errors import APIError
from tunelab.serve.limits import RateLimiter


def _error(r, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert "Traceback" not in r.text and 'File "' not in r.text
    return err


def test_read_keys_file_and_env(tmp_path):
    f = tmp_path / "keys.txt"
    f.write_text("# team keys\nalice alice-secret-1\n\nbare-secret-key-2  # no name\n")
    keys = read_keys(str(f), {"TUNELAB_API_KEYS": "env-secret-3, env-secret-4"})
    assert keys["alice"] == "alice-secret-1" and "bare-secret-key-2" in keys.values()
    assert {"env-secret-3", "env-secret-4"} <= set(keys.values()) and len(keys) == 4
    with pytest.raises(TunelabError, match="shorter than"):
        read_keys(None, {"TUNELAB_API_KEYS": "short"})
    with pytest.raises(TunelabError, match="not found"):
        read_keys(str(tmp_path / "missing.txt"), {})
    assert read_keys(None, {}) == {}


def test_key_checker_compares_every_key():
    checker = KeyChecker({"a": "first-key-123", "b": "second-key-456"})
    assert checker.identify("second-key-456") == "b"
    assert checker.identify("second-key-45") is None
    assert checker.check("Bearer first-key-123") == "a"
    assert checker.check("bearer   first-key-123 ") == "a"
    for header, code in [
        (None, "missing_api_key"),
        ("Basic abc", "invalid_api_key"),
        ("Bearer", "invalid_api_key"),
        ("Bearer nope-nope-nope", "invalid_api_key"),
    ]:
        with pytest.raises(APIError) as e:
            checker.check(header)
        assert e.value.status == 401 and e.value.code == code
    assert KeyChecker({}).check(None) is None  # auth off


def test_http_auth(served_decoder, client_for):
    c = client_for(served_decoder, keys={"tester": KEY})
    assert _error(c.get("/v1/models"), 401)["code"] == "missing_api_key"
    r = c.get("/v1/models", headers={"Authorization": "Bearer wrong-key-000000"})
    assert _error(r, 401)["type"] == "authentication_error"
    assert r.headers["www-authenticate"] == "Bearer"
    r = c.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and r.json()["data"][0]["id"] == "tiny-decoder"
    r = c.post("/v1/completions", json={"prompt": "goal"})
    assert _error(r, 401)["code"] == "missing_api_key"  # before the body is even looked at
    r = c.post("/v1/completions", content=b"{not json", headers={"content-type": "x"})
    assert _error(r, 401)["code"] == "missing_api_key"  # nothing parsed without a key
    assert c.get("/health").status_code == 200  # probes stay open
    metrics = c.get("/metrics").text
    assert 'tunelab_requests_total{endpoint="/v1/models",status="401"} 2.0' in metrics
    assert 'tunelab_requests_total{endpoint="/v1/completions",status="401"} 2.0' in metrics


def test_rate_limiter_token_bucket():
    now = [0.0]
    lim = RateLimiter(per_minute=60, burst=2, clock=lambda: now[0])
    assert lim.retry_after("k") == 0 and lim.retry_after("k") == 0
    assert lim.retry_after("k") == pytest.approx(1.0)  # one request per second refills
    assert lim.retry_after("other") == 0  # buckets are per key
    now[0] = 1.0
    assert lim.retry_after("k") == 0
    assert RateLimiter(0).retry_after("k") == 0  # off


def test_http_rate_limit_429_with_retry_after(served_decoder, client_for):
    c = client_for(served_decoder, keys={"tester": KEY}, rate_limit=6, rate_burst=2)
    h = {"Authorization": f"Bearer {KEY}"}
    assert [c.get("/v1/models", headers=h).status_code for _ in range(2)] == [200, 200]
    r = c.get("/v1/models", headers=h)
    err = _error(r, 429)
    assert err["type"] == "rate_limit_error" and int(r.headers["retry-after"]) == 10


def test_body_limit_413(served_decoder, client_for):
    c = client_for(served_decoder, max_request_bytes=200)
    r = c.post("/v1/completions", json={"prompt": "goal " * 100})
    assert _error(r, 413)["code"] == "request_too_large"

    def chunks():  # no Content-Length: the limit is checked while reading
        for _ in range(10):
            yield b'{"prompt": "' + b"g" * 50

    r = c.post("/v1/completions", content=chunks(), headers={"content-type": "application/json"})
    assert _error(r, 413)["code"] == "request_too_large"
    ok = c.post("/v1/completions", json={"prompt": "goal", "max_tokens": 2})
    assert ok.status_code == 200


def test_validation_and_http_errors_have_the_openai_shape(served_decoder, client_for):
    c = client_for(served_decoder)
    err = _error(c.post("/v1/completions", json={"prompt": "goal", "n": "many"}), 422)
    assert err["param"] == "n" and err["type"] == "invalid_request_error"
    r = c.post(
        "/v1/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert _error(r, 422)["code"] == "invalid_json"
    assert _error(c.get("/v1/nothing"), 404)["type"] == "not_found_error"
    assert _error(c.get("/v1/completions"), 405)["message"] == "method not allowed"


def test_unexpected_errors_are_500_without_traceback(served_decoder, client_for, caplog):
    c = client_for(served_decoder)

    async def boom():
        raise RuntimeError("secret internal detail")

    c.app.add_api_route("/boom", boom)
    with caplog.at_level("ERROR", logger="tunelab.serve"):
        r = c.get("/boom")
    err = _error(r, 500)
    assert "secret internal detail" not in r.text and err["type"] == "server_error"
    assert "secret internal detail" in caplog.text  # the traceback went to the server log
    metrics = c.get("/metrics").text
    assert 'tunelab_requests_total{endpoint="/boom",status="500"} 1.0' in metrics
