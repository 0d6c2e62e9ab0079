"""Scoped keys over HTTP: 403 outside a key's endpoints or models and 200 inside, 429 once its
tokens of the day are spent, and one audit line per /v1 request that names the key's id,
never the key or the request's text."""

from __future__ import annotations

import json
import logging
import re

import pytest

from tunelab.serve.auth import read_keys
from tunelab.serve.errors import APIError
from tunelab.serve.keys import create_key
from tunelab.serve.quota import DAY, QuotaLedger, RequestTokens

CHAT = {"messages": [{"role": "user", "content": "goal team"}], "max_tokens": 2}
COMPLETION = {"prompt": "goal team", "max_tokens": 2}
PII = "mail eve.secret@example.com now"


def _keys(tmp_path, **specs) -> tuple[dict, dict[str, str]]:
    """Keys made by `tunelab keys create` in a file, as the server reads them; and the keys."""
    path = str(tmp_path / "keys.json")
    plain = {name: create_key(path, name, **spec)[1] for name, spec in specs.items()}
    return read_keys(path, {}), plain


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _error(r, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


def test_scoped_key_gets_403_outside_and_200_inside(served_decoder, client_for, tmp_path):
    stored, k = _keys(
        tmp_path,
        chat={"endpoints": "chat"},
        every={},
        other_model={"models": "other-*"},
        this_model={"models": "tiny-*", "endpoints": "completions,models"},
    )
    c = client_for(served_decoder, keys=stored)
    assert c.post("/v1/chat/completions", json=CHAT, headers=_auth(k["chat"])).status_code == 200
    for r in (
        c.post("/v1/completions", json=COMPLETION, headers=_auth(k["chat"])),
        c.get("/v1/models", headers=_auth(k["chat"])),
        c.post("/v1/completions", content=b"{not json", headers=_auth(k["chat"])),  # unread
    ):
        err = _error(r, 403)
        assert err["type"] == "permission_error" and err["code"] == "endpoint_not_allowed"
        assert "key chat may not call /v1/" in err["message"] and k["chat"] not in r.text
    r = c.post("/v1/completions", json=COMPLETION, headers=_auth(k["other_model"]))
    err = _error(r, 403)
    assert err["code"] == "model_not_allowed" and "tiny-decoder" in err["message"]
    assert c.post("/v1/completions", json=COMPLETION, headers=_auth(k["this_model"])).is_success
    assert c.get("/v1/models", headers=_auth(k["this_model"])).status_code == 200
    for path, body in (("/v1/completions", COMPLETION), ("/v1/chat/completions", CHAT)):
        assert c.post(path, json=body, headers=_auth(k["every"])).status_code == 200
    # a wrong key is still 401, not 403: scopes are only asked of a valid key
    r = c.post("/v1/completions", json=COMPLETION, headers=_auth(k["chat"] + "x"))
    assert _error(r, 401)["code"] == "invalid_api_key"
    metrics = c.get("/metrics").text
    assert 'tunelab_requests_total{endpoint="/v1/completions",status="403"} 3.0' in metrics


def test_quota_refuses_with_429_once_spent(served_decoder, client_for, tmp_path):
    greedy = {**COMPLETION, "temperature": 0}  # the same tokens every time
    size = client_for(served_decoder).post("/v1/completions", json=greedy).json()["usage"]
    size = size["total_tokens"]
    stored, k = _keys(tmp_path, small={"tokens_per_day": size + 1}, free={})
    c = client_for(served_decoder, keys=stored)
    ledger = c.app.state.tl.keys.ledger
    # a stream without stream_options.include_usage is counted too (by the generator)
    r = c.post("/v1/completions", json={**greedy, "stream": True}, headers=_auth(k["small"]))
    assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
    assert ledger.used("small") == size
    r = c.post("/v1/completions", json=greedy, headers=_auth(k["small"]))  # under: answered
    assert r.status_code == 200 and ledger.used("small") == 2 * size
    r = c.post("/v1/chat/completions", json=CHAT, headers=_auth(k["small"]))
    err = _error(r, 429)
    assert err["code"] == "insufficient_quota" and err["type"] == "insufficient_quota"
    assert "small" in err["message"] and 1 <= int(r.headers["Retry-After"]) <= DAY
    assert ledger.used("small") == 2 * size  # a refused request costs nothing
    assert c.post("/v1/completions", json=greedy, headers=_auth(k["free"])).status_code == 200
    assert ledger.used("free") == size


def test_quota_ledger_days():
    now = [3 * DAY + 100.0]
    ledger = QuotaLedger(clock=lambda: now[0])
    ledger.check("a", 10)
    ledger.charge("a", 7)
    ledger.charge("a", 3)
    assert ledger.used("a") == 10 and ledger.used("b") == 0
    ledger.check("a", 0)  # no quota
    ledger.check("a", 11)
    with pytest.raises(APIError) as e:
        ledger.check("a", 10)
    assert e.value.status == 429 and e.value.headers["Retry-After"] == str(DAY - 100)
    now[0] = 4 * DAY + 1  # the next UTC day starts from zero
    assert ledger.used("a") == 0
    ledger.check("a", 10)


def test_usage_is_read_from_the_tail_of_an_answer():
    t = RequestTokens()
    t.read_usage(b'"x"}], "model": "m", "usage": {"prompt_tokens": 4, "total_tokens": 9}}')
    assert (t.prompt, t.completion, t.total, t.known) == (4, 5, 9, True)
    t = RequestTokens()
    t.read_usage(b'{"data": [1, 2]}')
    assert not t.known and t.total == 0
    t = RequestTokens(prompt=1, completion=2, known=True)  # a generator counted it: kept
    t.read_usage(b'"usage": {"prompt_tokens": 40, "total_tokens": 90}}')
    assert t.total == 3


def _audit(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tunelab.audit"]


def _stream_usage(text: str) -> dict:
    chunks = [json.loads(x[6:]) for x in text.splitlines() if x.startswith("data: {")]
    return next(ch["usage"] for ch in chunks if ch.get("usage"))


def test_audit_line_per_request_is_masked(served_decoder, client_for, tmp_path, caplog):
    stored, k = _keys(tmp_path, alice={"endpoints": "completions,chat"})
    c = client_for(served_decoder, keys=stored)
    wrong = "tl-a-wrong-key-presented-0123456789"
    with caplog.at_level(logging.INFO, logger="tunelab.audit"):
        ok = c.post(
            "/v1/completions", json={**COMPLETION, "prompt": PII}, headers=_auth(k["alice"])
        )
        streamed = c.post(
            "/v1/chat/completions",
            json={**CHAT, "stream": True, "stream_options": {"include_usage": True}},
            headers=_auth(k["alice"]),
        )
        denied = c.post("/v1/embeddings", json={"input": PII}, headers=_auth(k["alice"]))
        refused = c.post("/v1/completions", json={"prompt": PII}, headers=_auth(wrong))
        missing = c.get("/v1/eve.secret@example.com", headers=_auth(k["alice"]))
        c.get("/health"), c.get("/ready"), c.get("/metrics")  # probes: not audited
    codes = [r.status_code for r in (ok, streamed, denied, refused, missing)]
    assert codes == [200, 200, 403, 401, 404]
    lines = _audit(caplog)
    assert len(lines) == 5, lines

    def counts(u: dict) -> str:
        p, t = u["prompt_tokens"], u["total_tokens"]
        return f"prompt_tokens={p} completion_tokens={t - p} total_tokens={t}"

    none = "prompt_tokens=- completion_tokens=- total_tokens=-"
    expected = [
        "key=alice endpoint=/v1/completions model=tiny-decoder status=200 "
        + counts(ok.json()["usage"]),
        "key=alice endpoint=/v1/chat/completions model=tiny-decoder status=200 "
        + counts(_stream_usage(streamed.text)),
        f"key=alice endpoint=/v1/embeddings model=tiny-decoder status=403 {none}",
        f"key=- endpoint=/v1/completions model=tiny-decoder status=401 {none}",
        f"key=alice endpoint=other model=tiny-decoder status=404 {none}",
    ]
    for line, want in zip(lines, expected, strict=True):
        assert re.fullmatch(rf"audit {re.escape(want)} ms=\d+", line), (line, want)
    text = "\n".join(lines)
    for secret in (k["alice"], wrong, "eve.secret", "example.com", "mail"):
        assert secret not in text


def test_audit_tokens_of_an_encoder_answer(tiny_models, client_for, caplog):
    from tunelab.serve import load_served

    c = client_for(load_served(str(tiny_models["encoder"]), "tiny-encoder", dtype="fp32"))
    with caplog.at_level(logging.INFO, logger="tunelab.audit"):
        r = c.post("/v1/embeddings", json={"input": ["goal team", "bank market shares"]})
    assert r.status_code == 200
    total = r.json()["usage"]["total_tokens"]
    (line,) = _audit(caplog)
    assert line.startswith(
        f"audit key=- endpoint=/v1/embeddings model=tiny-encoder status=200 "
        f"prompt_tokens={total} completion_tokens=0 total_tokens={total} ms="
    )
