"""Request bodies that are not clean JSON objects: every one answers a one-line OpenAI-shaped
error (422 invalid_json), never FastAPI's 400 "There was an error parsing the body" or a
traceback; valid JSON is accepted whatever Content-Type it came with (curl -d sends
application/x-www-form-urlencoded, some clients text/plain or none)."""

from __future__ import annotations

import json

import pytest

BAD_JSON = {
    "invalid utf-8": b'{"prompt": "caf\xe9 \xff\xfe", "max_tokens": 1}',
    "5000-deep array": b"[" * 5000,
    "5000-deep, closed": b"[" * 5000 + b"]" * 5000,
    "deep inside a field": b'{"prompt": ' + b"[" * 3000 + b"]" * 3000 + b"}",
    "40 deep (over MAX_DEPTH)": b'{"prompt": ' + b"[" * 40 + b"]" * 40 + b"}",
    "truncated": b'{"prompt": "goal", "max_tokens":',
    "NaN": b'{"prompt": "goal", "temperature": NaN}',
    "Infinity": b'{"prompt": "goal", "repetition_penalty": Infinity}',
    "utf-16": json.dumps({"prompt": "goal"}).encode("utf-16"),
    "lone surrogate escape": b'{"prompt": "\\ud800"}',
    "number beyond a double": b'{"prompt": "goal", "temperature": 1e999}',
    "5000-digit integer": b'{"prompt": [' + b"7" * 5000 + b"]}",
    "empty": b"",
}
INTERNALS = ("Traceback", 'File "', "/src/tunelab", "site-packages", ".py", "Error:")


def _invalid_json(r) -> dict:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/json")
    for word in INTERNALS:
        assert word not in r.text, word
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == "invalid_json" and err["type"] == "invalid_request_error"
    assert "\n" not in err["message"] and len(err["message"]) < 300
    return err


@pytest.mark.parametrize("body", BAD_JSON.values(), ids=BAD_JSON.keys())
def test_bodies_that_are_not_json_answer_422_invalid_json(body, served_decoder, client_for):
    c = client_for(served_decoder)
    for path in ("/v1/completions", "/v1/chat/completions", "/v1/score"):
        r = c.post(path, content=body, headers={"content-type": "application/json"})
        _invalid_json(r)
    assert c.get("/health").status_code == 200  # the server is still fine


def test_the_message_says_what_is_wrong(served_decoder, client_for):
    c = client_for(served_decoder)
    json_ct = {"content-type": "application/json"}
    msg = _invalid_json(
        c.post("/v1/completions", content=BAD_JSON["invalid utf-8"], headers=json_ct)
    )
    assert "UTF-8" in msg["message"]
    msg = _invalid_json(c.post("/v1/completions", content=b"[" * 5000, headers=json_ct))
    assert "nest" in msg["message"]
    msg = _invalid_json(c.post("/v1/completions", content=b"", headers=json_ct))
    assert "empty" in msg["message"]


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", None, "application/x-www-form-urlencoded", "text/plain; charset=utf-8"],
)
def test_valid_json_is_accepted_whatever_its_content_type(content_type, served_decoder, client_for):
    c = client_for(served_decoder)
    headers = {"content-type": content_type} if content_type else {}
    body = json.dumps({"prompt": "goal", "max_tokens": 2}).encode()
    r = c.post("/v1/completions", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "text_completion"
    r = c.post("/v1/completions", content=b"\xef\xbb\xbf" + body, headers=headers)  # a BOM
    assert r.status_code == 200, r.text


def test_non_json_sent_as_text_asks_for_application_json(served_decoder, client_for):
    c = client_for(served_decoder)
    r = c.post("/v1/completions", content=b"prompt=goal", headers={"content-type": "text/plain"})
    err = _invalid_json(r)
    assert "Content-Type: application/json" in err["message"]
    assert "text/plain" in err["message"]
    r = c.post("/v1/completions", data={"prompt": "goal"})  # a form, as curl -F / -d sends
    assert "Content-Type: application/json" in _invalid_json(r)["message"]


def test_a_json_value_that_is_no_object_is_a_422_invalid_value(served_decoder, client_for):
    c = client_for(served_decoder)
    for body in (b"[1, 2]", b'"goal"', b"null", b"42"):
        r = c.post("/v1/completions", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["code"] == "invalid_value" and "JSON object" in err["message"]


def test_unknown_paths_and_bodiless_endpoints_are_not_parsed(served_decoder, client_for):
    c = client_for(served_decoder)
    r = c.post("/v1/nothing", content=b"\xff", headers={"content-type": "application/json"})
    assert r.status_code == 404  # the path is wrong, whatever the body
    r = c.request("GET", "/v1/models", content=b"\xff")
    assert r.status_code == 200 and r.json()["object"] == "list"


def test_the_non_object_message_names_what_came(served_decoder, client_for):
    c = client_for(served_decoder)
    for body, kind in (
        (b"[1]", "an array"),
        (b'"x"', "a string"),
        (b"null", "null"),
        (b"4.5", "a number"),
        (b"true", "a boolean"),
    ):
        r = c.post("/v1/classify", content=body)
        assert r.json()["error"]["message"] == f"the request body must be a JSON object, not {kind}"
