"""/v1/classify, /v1/embeddings and /v1/score against the library functions they wrap."""

from __future__ import annotations

import base64
import math
import struct

import pytest
import torch


@pytest.fixture
def served_run(classify_run):
    from tunelab.serve import load_served

    return load_served(str(classify_run), dtype="fp32")


def test_classify_matches_predict(classify_run, served_run, client_for):
    from tunelab import api

    texts = ["goal match team coach", "bank shares profit", "phone chip software"]
    c = client_for(served_run)
    r = c.post("/v1/classify", json={"input": texts})
    assert r.status_code == 200, r.text
    body = r.json()
    want = api.predict(classify_run, texts, quiet=True, dtype="fp32")
    assert [d["label"] for d in body["data"]] == [w["label"] for w in want]
    for d, w in zip(body["data"], want, strict=True):
        assert sum(d["probs"].values()) == pytest.approx(1, abs=1e-5)
        for label, p in w["probs"].items():
            assert d["probs"][label] == pytest.approx(p, abs=1e-5)
    one = c.post("/v1/classify", json={"input": texts[0]}).json()["data"]
    assert len(one) == 1 and one[0]["label"] == want[0]["label"]
    assert body["usage"]["prompt_tokens"] == sum(len(t.split()) + 2 for t in texts)


def test_classify_run_serves_embeddings_from_its_encoder(served_run, client_for):
    c = client_for(served_run)
    assert c.post("/v1/embeddings", json={"input": "goal"}).status_code == 200
    r = c.post("/v1/completions", json={"prompt": "goal"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_endpoint"
    assert "/v1/classify" in r.json()["error"]["message"]


def test_embeddings_are_normalized_mean_pools(tiny_models, client_for):
    from transformers import AutoModel, AutoTokenizer

    from tunelab.serve import load_served

    served = load_served(str(tiny_models["encoder"]), dtype="fp32")
    c = client_for(served)
    texts = ["goal match", "bank market price shares tax"]
    r = c.post("/v1/embeddings", json={"input": texts, "normalize": False})
    assert r.status_code == 200, r.text
    got = [d["embedding"] for d in r.json()["data"]]
    model = AutoModel.from_pretrained(tiny_models["encoder"]).eval()
    tok = AutoTokenizer.from_pretrained(tiny_models["encoder"])
    for text, vec in zip(texts, got, strict=True):  # one at a time: no padding at all
        with torch.no_grad():
            h = model(**tok(text, return_tensors="pt")).last_hidden_state[0]
        assert vec == pytest.approx(h.mean(0).tolist(), abs=1e-5)
    norm = c.post("/v1/embeddings", json={"input": texts}).json()["data"]
    for raw, unit in zip(got, norm, strict=True):
        length = math.sqrt(sum(x * x for x in raw))
        assert unit["embedding"] == pytest.approx([x / length for x in raw], abs=1e-5)
    b64 = c.post("/v1/embeddings", json={"input": texts, "encoding_format": "base64"}).json()
    floats = base64.b64decode(b64["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(floats) // 4}f", floats)
    assert list(decoded) == pytest.approx(norm[0]["embedding"], abs=1e-6)


def test_embeddings_refuse_inputs_over_the_context(tiny_models, client_for):
    from tunelab.serve import load_served

    c = client_for(load_served(str(tiny_models["encoder"]), dtype="fp32"))
    r = c.post("/v1/embeddings", json={"input": ["goal " * 200]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    r = c.post("/v1/embeddings", json={"input": "goal", "dimensions": 8})
    assert r.status_code == 400 and r.json()["error"]["param"] == "dimensions"


def test_score_matches_tunelab_scoring(served_decoder, client_for):
    from tunelab.evaluation.scoring import score

    c = client_for(served_decoder)
    texts = ["the goal of the match", "bank bank bank"]
    r = c.post("/v1/score", json={"input": texts})
    assert r.status_code == 200, r.text
    want = score(served_decoder.model, served_decoder.tokenizer, texts)
    for d, w in zip(r.json()["data"], want, strict=True):
        assert d["logprob"] == pytest.approx(w.logprob, abs=1e-4)
        assert d["tokens"] == w.tokens
    cond = c.post("/v1/score", json={"input": [" goal"], "prompt": "the match"}).json()["data"]
    [w] = score(served_decoder.model, served_decoder.tokenizer, [" goal"], prompts=["the match"])
    assert cond[0]["logprob"] == pytest.approx(w.logprob, abs=1e-4)
    r = c.post("/v1/score", json={"input": ["a", "b"], "prompt": ["x", "y", "z"]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"


def test_requests_arriving_together_share_a_batch(served_run, client_for):
    """Concurrent classify requests run as one batch: fewer model calls than requests."""
    import concurrent.futures

    c = client_for(served_run, batch_window_ms=300)
    calls = []
    model = served_run.model
    original = model.forward

    def counting(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    model.forward = counting
    texts = ["goal team", "bank tax", "phone app", "coach cup"]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(c.post, "/v1/classify", json={"input": t}) for t in texts]
        results = [f.result() for f in futures]
    assert all(r.status_code == 200 for r in results)
    assert sum(calls) == 4 and len(calls) < 4, calls


def test_embeddings_of_mixed_lengths_keep_their_order(tiny_models, client_for):
    """Inputs are batched shortest first (little padding); answers come back in input order."""
    from tunelab.serve import load_served

    c = client_for(load_served(str(tiny_models["encoder"]), dtype="fp32"), max_batch_size=2)
    texts = ["a much longer input about sport and goals and teams", "short", "middle one here"]
    both = c.post("/v1/embeddings", json={"input": texts}).json()["data"]
    for i, text in enumerate(texts):
        one = c.post("/v1/embeddings", json={"input": text}).json()["data"][0]["embedding"]
        assert both[i]["index"] == i
        assert both[i]["embedding"] == pytest.approx(one, abs=1e-5)
