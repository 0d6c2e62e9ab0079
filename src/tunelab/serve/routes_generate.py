"""/v1/completions and /v1/chat/completions in the OpenAI wire format, streaming included.

Requests become `DecodingOptions` (temperature 0 or num_beams > 1: no sampling; n is
num_return_sequences), prompts are tokenized and checked against the model's context here,
and the work goes to the app's `Generator` (generation.py). Streaming answers are server-sent
events: `data: {chunk}\\n\\n` per text delta, a final chunk per choice with its finish_reason,
optionally a usage chunk (stream_options.include_usage), then `data: [DONE]`. An error after
the stream started (a deadline) is sent as `data: {"error": {...}}` (the body
`serve.errors.api_error` maps the domain error to), which the openai client raises.

Constraints (response_format, structured_outputs, guided_*), tools and logprobs are read by
serve/structured.py. Logprobs travel with the text deltas (in each streamed chunk). A chat
answer that may be a tool call (tools with tool_choice auto, required or a named function) is
judged once complete, so when streaming it comes as one chunk at the end: `tool_calls` (and
finish_reason tool_calls) if it is a call, else its content.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from tunelab.decoding import DecodingOptions
from tunelab.decoding.options import check_options
from tunelab.serve.errors import APIError, api_error
from tunelab.serve.generation import GenEvent, GenRequest
from tunelab.serve.openapi import ChatCompletion, Completion, model_responses
from tunelab.serve.schemas import ChatRequest, CompletionRequest
from tunelab.serve.state import ServeState, unless_disconnected, until_disconnect
from tunelab.serve.structured import (
    Plan,
    chat_logprobs,
    check_tokenizer,
    completion_logprobs,
    parse_call,
    plan_for,
    template_message,
)

router = APIRouter()


def _options(body, max_tokens: int, plan: Plan, logprobs: int | None) -> DecodingOptions:
    sample = body.temperature > 0 and body.num_beams == 1
    opts = DecodingOptions(
        max_new_tokens=max_tokens,
        do_sample=sample,
        num_beams=body.num_beams,
        length_penalty=body.length_penalty,
        num_return_sequences=body.n,
        temperature=body.temperature if sample else 1.0,
        top_k=body.top_k,
        top_p=body.top_p,
        min_p=body.min_p,
        repetition_penalty=body.repetition_penalty,
        stop=body.stop_list(),
        seed=body.seed,
        constraint=plan.constraint,
        logprobs=logprobs,
    )
    if logprobs is not None and body.num_beams > 1:
        raise APIError(
            400, "logprobs are not reported for beam search (num_beams > 1)", param="logprobs"
        )
    check_options(opts)  # TunelabError -> 400 with its one-line message
    return opts


def _check(st: ServeState, body) -> None:
    name = body.unsupported()
    if name:
        raise APIError(400, f"{name} is not supported by tunelab serve: leave it out", param=name)
    if len(body.stop_list()) > 4 or any(not s for s in body.stop_list()):
        raise APIError(400, "stop takes up to 4 non-empty strings", param="stop")


def _max_tokens(
    st: ServeState, served, asked: int | None, prompts: list[list[int]], default: int | None = None
) -> int:
    """max_tokens checked against the server's limit and the model's context; unset, it is
    `default` (else the most there is room for) within both."""
    limit = st.settings.max_tokens_limit
    longest = max(len(p) for p in prompts)
    room = None
    if served.context and served.family == "decoder":
        room = served.context - longest
    elif served.context and longest > served.context:
        room = 0
    if room is not None and room < 1 or (asked and room is not None and asked > room):
        raise APIError(
            400,
            f"the prompt has {longest} tokens and max_tokens is {asked or 'unset'}: this model's "
            f"context is {served.context} tokens; shorten the prompt or lower max_tokens",
            param="messages" if asked is None else "max_tokens",
            code="context_length_exceeded",
        )
    if asked is None:
        asked = min(limit, default or limit, room if room is not None else limit)
    if asked > limit:
        raise APIError(
            400, f"max_tokens {asked} is over this server's limit of {limit}", param="max_tokens"
        )
    return asked


def _encode(served, prompt) -> list[list[int]]:
    tok = served.tokenizer
    if isinstance(prompt, str):
        prompts: list = [prompt]
    elif prompt and isinstance(prompt[0], int):
        prompts = [prompt]
    else:
        prompts = list(prompt)
    if not prompts:
        raise APIError(400, "prompt is empty: send a string or a list of strings", param="prompt")
    out = []
    vocab = served.model.config.vocab_size
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            if not p.strip():
                raise APIError(400, f"prompt {i} is empty: send some text", param="prompt")
            ids = list(tok(p)["input_ids"])
        else:
            ids = [int(t) for t in p]
            if not ids or any(not 0 <= t < vocab for t in ids):
                raise APIError(
                    400, f"prompt {i}: token ids must be in 0..{vocab - 1}", param="prompt"
                )
        out.append(ids)
    return out


def _chat_text(st: ServeState, served, body: ChatRequest, plan: Plan) -> str:
    tok = served.tokenizer
    if not getattr(tok, "chat_template", None):
        raise APIError(
            400,
            f"{st.model_name}'s tokenizer has no chat template: use /v1/completions with a "
            "plain prompt",
            code="no_chat_template",
        )
    messages = []
    for m in body.messages:
        content = m.content
        if isinstance(content, list):
            content = "".join(p.text or "" for p in content if p.type == "text")
        messages.append(template_message(m, st.inputs(content or "")))
    kw = {"tools": plan.tools} if plan.tools else {}
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kw)


class _Run:
    """One completion request on its way through the generator."""

    def __init__(self, st: ServeState, endpoint: str, chat: bool, prompts, opts, body, plan):
        self.st, self.endpoint, self.chat, self.body = st, endpoint, chat, body
        self.plan: Plan = plan
        self.logprobs = opts.logprobs is not None
        self.prompt_tokens = sum(len(p) for p in prompts)
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.start = time.perf_counter()
        self.first = True
        gen = st.get_generator(st.require(endpoint))
        self.events: AsyncIterator[GenEvent] = gen.submit(
            GenRequest(prompts, opts, st.settings.request_timeout)
        )  # raises QueueFull (429) now, before any response is sent

    def seen(self, ev: GenEvent) -> None:
        if self.first and ev.text:
            self.first = False
            self.st.metrics.ttft.labels(self.endpoint).observe(time.perf_counter() - self.start)

    def usage(self, completion: int) -> dict[str, int]:
        p = self.prompt_tokens
        return {"prompt_tokens": p, "completion_tokens": completion, "total_tokens": p + completion}

    def envelope(self, choices: list, chunk: bool) -> dict:
        kind = ("chat.completion" if self.chat else "text_completion") + (
            ".chunk" if chunk and self.chat else ""
        )
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.st.model_name,
            "choices": choices,
        }

    def _logprobs(self, entries: list[dict] | None) -> dict | None:
        if not self.logprobs:
            return None
        return (chat_logprobs if self.chat else completion_logprobs)(entries or [])

    def _message(self, text: str, reason: str) -> tuple[dict, str]:
        """The chat message of a complete answer (a tool call when it is one), its reason."""
        calls = parse_call(text, self.plan.names, self.plan.parallel) if self.plan.calls else None
        if calls:
            return {"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"
        return {"role": "assistant", "content": text}, reason

    async def collect(self) -> dict:
        texts: dict[int, list[str]] = {}
        lps: dict[int, list[dict]] = {}
        done: dict[int, GenEvent] = {}
        async with _closing(self.events) as events:
            async for ev in events:
                self.seen(ev)
                texts.setdefault(ev.index, []).append(ev.text)
                lps.setdefault(ev.index, []).extend(ev.logprobs or [])
                if ev.finish_reason:
                    done[ev.index] = ev
        choices = []
        for k in sorted(done):
            text, reason = "".join(texts[k]), done[k].finish_reason
            c = {"index": k, "logprobs": self._logprobs(lps[k])}
            if self.chat:
                c["message"], reason = self._message(text, reason)
            else:
                c["text"] = text
            c["finish_reason"] = reason
            choices.append(c)
        out = self.envelope(choices, chunk=False)
        out["usage"] = self.usage(sum(e.tokens for e in done.values()))
        return out

    def _choice(
        self, k: int, text: str | None, reason: str | None, role: bool = False, lps=None
    ) -> dict:
        lp = self._logprobs(lps) if lps else None
        if not self.chat:
            return {"index": k, "text": text or "", "logprobs": lp, "finish_reason": reason}
        delta = {"role": "assistant", "content": ""} if role else {}
        if text:
            delta["content"] = text
        return {"index": k, "delta": delta, "logprobs": lp, "finish_reason": reason}

    def _held(self, held: dict, ev: GenEvent) -> dict | None:
        """A possible tool call is held back until complete: the chunk it becomes, or None."""
        text, lps = held.setdefault(ev.index, ([], []))
        text.append(ev.text)
        lps.extend(ev.logprobs or [])
        if not ev.finish_reason:
            return None
        message, reason = self._message("".join(text), ev.finish_reason)
        c = self._choice(ev.index, message["content"], reason, lps=lps if self.logprobs else None)
        if "tool_calls" in message:
            c["delta"]["tool_calls"] = [{"index": 0, **message["tool_calls"][0]}]
        return c

    async def sse(self, request: Request) -> AsyncIterator[str]:
        def line(obj) -> str:
            return f"data: {json.dumps(obj)}\n\n"

        watch = asyncio.ensure_future(until_disconnect(request))
        completion = 0
        held: dict[int, tuple[list, list]] = {}
        try:
            if self.chat:
                n = self.body.n
                yield line(
                    self.envelope([self._choice(k, None, None, True) for k in range(n)], True)
                )
            async with _closing(self.events) as events:
                async for ev in events:
                    if watch.done():
                        return  # the client left: closing the events cancels the work
                    self.seen(ev)
                    completion += ev.tokens if ev.finish_reason else 0
                    if self.plan.calls:
                        c = self._held(held, ev)
                        if c is not None:
                            yield line(self.envelope([c], True))
                        continue
                    c = self._choice(ev.index, ev.text, ev.finish_reason, lps=ev.logprobs)
                    yield line(self.envelope([c], True))
            opts = self.body.stream_options
            if opts is not None and opts.include_usage:
                usage = self.envelope([], True)
                usage["usage"] = self.usage(completion)
                yield line(usage)
            yield "data: [DONE]\n\n"
        except Exception as exc:
            err = api_error(exc)
            if err is None:
                raise  # a bug: CatchAllMiddleware logs it and ends the response
            yield line(err.body())
        finally:
            watch.cancel()


class _closing:
    """async with: close an async generator when leaving (so its job is cancelled at once)."""

    def __init__(self, agen) -> None:
        self.agen = agen

    async def __aenter__(self):
        return self.agen

    async def __aexit__(self, *exc) -> None:
        await self.agen.aclose()


async def _respond(st: ServeState, request: Request, run: _Run):
    if run.body.stream:
        return StreamingResponse(
            run.sse(request),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return await unless_disconnected(request, run.collect())


@router.post("/v1/completions", responses=model_responses(Completion, "completion", stream=True))
async def completions(body: CompletionRequest, request: Request):
    st: ServeState = request.app.state.tl
    served = st.require("/v1/completions", body.model)
    _check(st, body)
    plan = plan_for(body, chat=False)
    if plan.constraint is not None:  # in a thread: a first matcher can take a while
        await asyncio.to_thread(check_tokenizer, served, plan)
    prompt = st.inputs(body.prompt) if not _is_ids(body.prompt) else body.prompt
    st.log_request(request, prompt)
    prompts = _encode(served, prompt)
    limit = _max_tokens(st, served, body.max_tokens, prompts, default=16)
    opts = _options(body, limit, plan, body.logprobs)
    run = _Run(st, "/v1/completions", False, prompts, opts, body, plan)
    return await _respond(st, request, run)


def _is_ids(prompt) -> bool:
    return isinstance(prompt, list) and bool(prompt) and not isinstance(prompt[0], str)


@router.post(
    "/v1/chat/completions",
    responses=model_responses(ChatCompletion, "chat completion", stream=True),
)
async def chat_completions(body: ChatRequest, request: Request):
    st: ServeState = request.app.state.tl
    served = st.require("/v1/chat/completions", body.model)
    _check(st, body)
    if body.top_logprobs and not body.logprobs:
        raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
    plan = plan_for(body, chat=True)
    if plan.constraint is not None:  # in a thread: a first matcher can take a while
        await asyncio.to_thread(check_tokenizer, served, plan)
    text = _chat_text(st, served, body, plan)
    st.log_request(request, text)
    prompts = [list(served.tokenizer(text, add_special_tokens=False)["input_ids"])]
    asked = body.max_completion_tokens or body.max_tokens
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    opts = _options(body, _max_tokens(st, served, asked, prompts), plan, logprobs)
    run = _Run(st, "/v1/chat/completions", True, prompts, opts, body, plan)
    return await _respond(st, request, run)
