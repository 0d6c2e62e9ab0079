"""/v1/classify, /v1/embeddings and /v1/score: micro-batched model calls (see batching.py).

Each request's inputs are checked here (empty, too long for the model) and then run together
with those of other requests that arrived within the batch window, in the model's worker
thread. Classification truncates inputs to the run's training max_length, as `tunelab
predict` does; embeddings refuse an input longer than the model's context; scoring slides a
window over long texts (tunelab.evaluation.scoring).
"""

from __future__ import annotations

import base64
import math
import struct

import torch
from fastapi import APIRouter, Request

from tunelab.serve.errors import APIError
from tunelab.serve.openapi import (
    ClassifyResponse,
    EmbeddingsResponse,
    ScoreResponse,
    model_responses,
)
from tunelab.serve.schemas import ClassifyRequest, EmbeddingsRequest, ScoreRequest
from tunelab.serve.state import ServeState, unless_disconnected

router = APIRouter()


def _texts(value, what: str = "input") -> list[str]:
    texts = [value] if isinstance(value, str) else list(value)
    if not texts:
        raise APIError(400, f"{what} is empty: send a string or a list of strings", param=what)
    for i, t in enumerate(texts):
        if not t.strip():
            raise APIError(400, f"{what}[{i}] is empty: send some text", param=what)
    return texts


def _state(request: Request) -> ServeState:
    return request.app.state.tl


def _unsupported(body) -> None:
    name = body.unsupported()
    if name:
        raise APIError(400, f"{name} is not supported by tunelab serve: leave it out", param=name)


def _classify_fn(served, max_batch: int):
    from tunelab.tasks.classification import predict_probs

    def run(texts: list[str]) -> list[list[float]]:
        length = served.max_length or served.context or 512
        probs = predict_probs(served.model, served.tokenizer, texts, length, max_batch, False)
        return probs.tolist()

    return run


@router.post("/v1/classify", responses=model_responses(ClassifyResponse, "labels"))
async def classify(body: ClassifyRequest, request: Request):
    st = _state(request)
    served = st.require("/v1/classify", body.model)
    _unsupported(body)
    texts = st.inputs(_texts(body.input))
    st.log_request(request, texts)
    tokens = sum(len(ids) for ids in served.tokenizer(texts, truncation=False)["input_ids"])
    batcher = st.batcher("classify", _classify_fn(served, st.settings.max_batch_size))
    probs = await unless_disconnected(request, batcher.submit(texts, st.settings.request_timeout))
    data = []
    for i, p in enumerate(probs):
        best = max(range(len(p)), key=p.__getitem__)
        data.append(
            {
                "index": i,
                "label": served.labels[best],
                "score": p[best],
                "probs": dict(zip(served.labels, p, strict=True)),
            }
        )
    return {
        "object": "list",
        "model": st.model_name,
        "data": data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _embed_fn(served, max_batch: int):
    pad = served.tokenizer.pad_token_id or 0

    @torch.inference_mode()
    def run(items: list[list[int]]) -> list[list[float]]:
        out: list[list[float]] = [[] for _ in items]
        device = next(served.encoder.parameters()).device
        order = sorted(range(len(items)), key=lambda i: len(items[i]))  # little padding
        for start in range(0, len(order), max_batch):
            chunk = order[start : start + max_batch]
            width = max(len(items[i]) for i in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, i in enumerate(chunk):
                ids[r, : len(items[i])] = torch.tensor(items[i])
                mask[r, : len(items[i])] = 1
            ids, mask = ids.to(device), mask.to(device)
            hidden = served.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1)  # (batch, hidden)
            for i, vec in zip(chunk, pooled.float().cpu().tolist(), strict=True):
                out[i] = vec
        return out

    return run


def _encode_b64(vec: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()


@router.post("/v1/embeddings", responses=model_responses(EmbeddingsResponse, "embeddings"))
async def embeddings(body: EmbeddingsRequest, request: Request):
    st = _state(request)
    served = st.require("/v1/embeddings", body.model)
    _unsupported(body)
    raw = body.input
    if isinstance(raw, list) and raw and isinstance(raw[0], int):
        items = [list(raw)]
    elif isinstance(raw, list) and raw and isinstance(raw[0], list):
        items = [list(x) for x in raw]
    else:
        texts = st.inputs(_texts(raw))
        st.log_request(request, texts)
        items = [list(x) for x in served.tokenizer(texts, truncation=False)["input_ids"]]
    if not items or any(not x for x in items):
        raise APIError(400, "input is empty: send a string or a list of strings", param="input")
    limit = served.context
    for i, ids in enumerate(items):
        if limit and len(ids) > limit:
            raise APIError(
                400,
                f"input[{i}] has {len(ids)} tokens, over the model's {limit}-token context: "
                "shorten it or split it into parts",
                param="input",
                code="context_length_exceeded",
            )
        vocab = served.encoder.config.vocab_size
        if any(not 0 <= t < vocab for t in ids):
            raise APIError(400, f"input[{i}] has token ids outside 0..{vocab - 1}", param="input")
    batcher = st.batcher("embeddings", _embed_fn(served, st.settings.max_batch_size))
    vectors = await unless_disconnected(request, batcher.submit(items, st.settings.request_timeout))
    data = []
    for i, vec in enumerate(vectors):
        if body.normalize:
            norm = sum(x * x for x in vec) ** 0.5 or 1.0
            vec = [x / norm for x in vec]
        emb = _encode_b64(vec) if body.encoding_format == "base64" else vec
        data.append({"object": "embedding", "index": i, "embedding": emb})
    tokens = sum(len(x) for x in items)
    return {
        "object": "list",
        "model": st.model_name,
        "data": data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _score_fn(served, max_batch: int):
    from tunelab.evaluation.scoring import score

    def run(items: list[tuple[str, str | None]]):
        out: list = [None] * len(items)
        for has_prompt in (False, True):
            idx = [i for i, (_, p) in enumerate(items) if (p is not None) == has_prompt]
            if not idx:
                continue
            texts = [items[i][0] for i in idx]
            prompts = [items[i][1] for i in idx] if has_prompt else None
            results = score(served.model, served.tokenizer, texts, prompts, batch_size=max_batch)
            for i, r in zip(idx, results, strict=True):
                out[i] = r
        return out

    return run


@router.post("/v1/score", responses=model_responses(ScoreResponse, "log-probabilities"))
async def score_texts(body: ScoreRequest, request: Request):
    st = _state(request)
    served = st.require("/v1/score", body.model)
    _unsupported(body)
    texts = st.inputs(_texts(body.input))
    prompts: list[str | None]
    if body.prompt is None:
        prompts = [None] * len(texts)
    elif isinstance(body.prompt, str):
        prompts = [st.inputs(body.prompt)] * len(texts)
    else:
        prompts = st.inputs(list(body.prompt))
        if len(prompts) != len(texts):
            raise APIError(
                400,
                f"{len(prompts)} prompts for {len(texts)} inputs: send one prompt or one per input",
                param="prompt",
            )
    if served.family == "encoder-decoder" and None in prompts:
        raise APIError(
            400,
            "an encoder-decoder scores a target given a source: send prompt (the source)",
            param="prompt",
        )
    st.log_request(request, {"input": texts, "prompt": prompts})
    batcher = st.batcher("score", _score_fn(served, st.settings.max_batch_size))
    results = await unless_disconnected(
        request, batcher.submit(list(zip(texts, prompts, strict=True)), st.settings.request_timeout)
    )
    data = [
        {
            "index": i,
            "logprob": r.logprob,
            "tokens": r.tokens,
            "perplexity": r.perplexity if math.isfinite(r.perplexity) else None,  # nan/inf: null
        }
        for i, r in enumerate(results)
    ]
    tokens = sum(r.tokens for r in results)
    return {
        "object": "list",
        "model": st.model_name,
        "data": data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
