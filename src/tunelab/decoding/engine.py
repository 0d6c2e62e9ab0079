"""The batched decoding engine: prefill and decode steps over a changing set of sequences.

    engine = Engine(model, tokenizer, max_batch=16, seed=0)
    engine.add(Request(prompt_ids, opts))          # -> request id; may be called any time
    while engine.has_work():
        for event in engine.step():                # one new token per active request
            ...                                    # event.request_id, .token, .finished

Each `step()` feeds every active row's pending token through the model as one (batch, 1)
column with a shared KV cache (transformers' DynamicCache; EncoderDecoderCache for T5-style
models, whose encoder runs once per request), then prefills requests waiting to join and
merges their caches in. Rows are left-padded with an attention mask and explicit position ids,
only the last position's logits are computed, and finished rows leave the batch at once (their
cache rows are dropped and all-padding columns cut), so a batch does not pay for its longest
member. Greedy rows take an argmax with no softmax; sampling and penalties go through
`processors`. Sequences that outgrow the context window are shortened by `context.slide` and
re-prefilled. `generate`/`stream` (driver.py) are thin loops over this; the batching server
can drive it the same way, adding and cancelling requests between steps. Beam search (beam.py)
chooses the tokens itself: it drives the same forward passes through `prefill`, `feed` and
`reorder` instead of `add` / `step`.

Speed (SmolLM2-135M fp32, measured in CPU time on the shared 2-core machine, 1 thread):
- greedy rows of models with a plain linear LM head skip the full fp32 head: the base model
  runs, and `head.GreedyHead` finds the exact fp32 argmax through a bf16 screen: 8.8 instead
  of 11.2 ms per step at batch 1, 17.8 instead of 35.0 ms at batch 16 (the head alone);
- kept out after measuring: a KV cache appending into a preallocated buffer instead of
  DynamicCache's torch.cat (7.1-8.9 vs 7.6-8.7 CPU-s for 47 batch-16 steps: no gain at
  these lengths) and the head as W @ h.T instead of h @ W.T (same CPU time).
Other precisions (`--dtype`, applied when the model is opened: `compress.precision`) run the
model's own head; int8 weights make batch 1 3.16x generate() fp32, packed bf16 batch 16 3.27x
(docs/generation.md has the profile, every mode's speed and its quality cost, and the
end-to-end benchmark). Constrained rows get one allowed-token mask for the whole step from
`constraints.Guide`; greedy ones keep the bf16 screen (argmax among the allowed tokens, exact),
which took constrained fp32 decoding from 0.81-0.84x to 0.97-1.0x of the free rate at the
same lengths (bench/constrained_overhead.py); rows asking for logprobs get them from
`logprobs.attach` (raw logits).
"""

from __future__ import annotations

import inspect
import itertools
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from tunelab.decoding import constraints, kv, logprobs, processors
from tunelab.decoding.context import model_window, slide
from tunelab.decoding.head import greedy_head, plain_head_base
from tunelab.decoding.options import DecodingOptions, check_options, is_greedy


@dataclass
class Request:
    prompt_ids: list[int]
    opts: DecodingOptions = field(default_factory=DecodingOptions)
    id: int | None = None  # set by `Engine.add` when left empty


@dataclass
class StepEvent:
    request_id: int
    token: int
    """The new token (the EOS token itself when finish_reason is eos)."""
    finished: bool
    finish_reason: str | None = None
    """eos, length or stop (its constraint is complete: the token is its last) when finished."""
    logprobs: logprobs.TokenLogprob | None = None  # when opts.logprobs asks (logprobs.py)


@dataclass
class _Row:
    req: Request
    context: list[int]
    """Tokens the cache holds for this row (after any sliding), oldest first."""
    history: list[int]
    """Prompt and every generated token (for repetition penalties)."""
    generated: int = 0
    pending: int = -1
    """The newest token: generated, not yet fed to the model."""
    matcher: object | None = None  # the request's constraint state (constraints.Guide)


def eos_ids(model, tokenizer) -> set[int]:
    """The token ids that end a sequence: the generation config's, else the tokenizer's."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = getattr(model.config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return set()
    return set(eos) if isinstance(eos, list | tuple) else {int(eos)}


class Engine:
    """A set of active sequences decoded together, one token per row per `step()`."""

    def __init__(
        self,
        model,
        tokenizer,
        max_batch: int = 16,
        seed: int | None = None,
    ) -> None:
        self.model = model
        self.encdec = bool(getattr(model.config, "is_encoder_decoder", False))
        self.max_batch = max_batch
        self.eos = eos_ids(model, tokenizer)
        self.guide = constraints.Guide(model, tokenizer, self.eos)
        pad = getattr(model.config, "pad_token_id", None)
        self.pad = pad if pad is not None else (tokenizer.pad_token_id or 0)
        self.window = None if self.encdec else model_window(model.config)
        start = getattr(model.generation_config, "decoder_start_token_id", None)
        self.start = (
            start if start is not None else getattr(model.config, "decoder_start_token_id", 0)
        )
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.device = next(model.parameters()).device
        self._ids = itertools.count()
        self.waiting: list[_Row] = []
        self.rows: list[_Row] = []
        self.cache = None
        self.mask: torch.Tensor | None = None  # (batch, cache columns + pending) 1 = real
        self.pos: torch.Tensor | None = None  # (batch, 1) position id of the pending token
        self.enc_hidden: torch.Tensor | None = None  # (batch, source, d_model)
        self.enc_mask: torch.Tensor | None = None  # (batch, source)
        self._logits_to_keep = "logits_to_keep" in inspect.signature(model.forward).parameters
        # plain linear LM head: run the base model and apply the head ourselves (bf16 screen)
        self.base = None if self.encdec else plain_head_base(model)
        self.head_weight = model.get_output_embeddings().weight if self.base is not None else None

    # ------------------------------------------------------------------ public interface
    def add(self, request: Request) -> int:
        """Queue a request; it joins the batch at the next step with room. Returns its id."""
        check_options(request.opts)
        if request.id is None:
            request.id = next(self._ids)
        ctx = self.fit(request.prompt_ids, request.opts)
        m = self.guide.matcher(request.opts.constraint)
        self.waiting.append(_Row(request, ctx, list(request.prompt_ids), matcher=m))
        return request.id

    def fit(self, prompt_ids: list[int], opts: DecodingOptions) -> list[int]:
        """The tokens a row starts from: a new list of `prompt_ids`, slid into the context
        window (`opts.context_window`, else the model's) when it is too long."""
        return slide(list(prompt_ids), opts.context_window or self.window, opts.n_keep)

    def cancel(self, request_id: int) -> None:
        """Drop a request (waiting or active), e.g. when a stop string matched."""
        self.waiting = [r for r in self.waiting if r.req.id != request_id]
        keep = [i for i, r in enumerate(self.rows) if r.req.id != request_id]
        if len(keep) != len(self.rows):
            self._keep(keep)

    def has_work(self) -> bool:
        return bool(self.rows or self.waiting)

    @torch.inference_mode()
    def step(self) -> list[StepEvent]:
        """Decode one token for every active row, then admit waiting requests (prefill)."""
        events: list[StepEvent] = []
        self._slide_full_rows()
        if self.rows:
            logits = self._decode()
            events += self._advance(self.rows, logits)
        room = self.max_batch - len(self.rows)
        if room > 0 and self.waiting:
            joining, self.waiting = self.waiting[:room], self.waiting[room:]
            logits = self._prefill(joining)
            events += self._advance(joining, logits)
        done = [i for i, r in enumerate(self.rows) if self._finished(r)]
        if done:
            self._keep([i for i in range(len(self.rows)) if i not in set(done)])
        return events

    # ------------------------------------------------------------------ caller-chosen tokens
    # For callers that pick every token themselves and re-rank rows (beam search): the same
    # prefill, cache and masks as `step`, without its token choice, stopping or sliding.
    @torch.inference_mode()
    def prefill(self, prompts: list[list[int]], opts: DecodingOptions) -> torch.Tensor:
        """Start the batch with one row per prompt, in order, all prefilled now (each slid
        into the window as `fit` says; `opts` gives the window). The engine must be empty.
        Returns the (rows, vocab) logits of every row's first new token."""
        if self.has_work():
            raise RuntimeError("Engine.prefill starts a batch: the engine must be empty")
        for p in prompts:
            self.add(Request(list(p), opts))
        rows, self.waiting = self.waiting, []
        return self._logits(self._prefill(rows))

    @torch.inference_mode()
    def feed(self, tokens: list[int]) -> torch.Tensor:
        """Append `tokens[i]` to row i, for every row, and run them through the model as one
        column. Returns the (rows, vocab) logits of every row's next token."""
        if len(tokens) != len(self.rows):
            raise ValueError(f"feed takes one token per row: {len(tokens)} for {len(self.rows)}")
        for r, t in zip(self.rows, tokens, strict=True):
            r.pending, r.generated = t, r.generated + 1
            r.history.append(t)
        return self._logits(self._decode())

    def reorder(self, index: torch.Tensor) -> None:
        """Row i becomes a copy of row `index[i]` (its cache, mask, position and tokens), for
        every row; `index` is (rows,) int64. Beam search moves its surviving beams onto their
        parents this way. Copies share their request (and id)."""
        idx = index.to(self.device)
        self.cache.reorder_cache(idx)
        self.mask, self.pos = self.mask.index_select(0, idx), self.pos.index_select(0, idx)
        if self.encdec:
            self.enc_hidden = self.enc_hidden.index_select(0, idx)
            self.enc_mask = self.enc_mask.index_select(0, idx)
        self.rows = [
            replace(r, context=list(r.context), history=list(r.history))
            for r in (self.rows[i] for i in idx.tolist())
        ]

    # ------------------------------------------------------------------ model calls
    def _decode(self) -> torch.Tensor:
        """Feed the pending column; (batch, vocab) logits of the next token."""
        b = len(self.rows)
        ids = torch.tensor([[r.pending] for r in self.rows], device=self.device)
        self.mask = torch.cat([self.mask, self.mask.new_ones(b, 1)], dim=1)
        if self.encdec:
            out = self.model(
                encoder_outputs=(self.enc_hidden,),
                attention_mask=self.enc_mask,
                decoder_input_ids=ids,
                decoder_attention_mask=self.mask,
                past_key_values=self.cache,
                use_cache=True,
            )
            last, self.cache = out.logits[:, -1, :], out.past_key_values
        else:
            last, self.cache = self._run_decoder(ids, self.mask, self.pos, self.cache)
        self.pos = self.pos + 1
        for r in self.rows:
            r.context.append(r.pending)
        return last

    def _prefill(self, rows: list[_Row]) -> torch.Tensor:
        """Run new rows' contexts through the model and merge them into the batch."""
        b = len(rows)
        if self.encdec:
            src = max(len(r.context) for r in rows)
            ids = torch.full((b, src), self.pad, dtype=torch.long)
            enc_mask = torch.zeros(b, src, dtype=torch.long)
            for i, r in enumerate(rows):  # encoder inputs right-padded, as T5 tokenizers do
                ids[i, : len(r.context)] = torch.tensor(r.context)
                enc_mask[i, : len(r.context)] = 1
            ids, enc_mask = ids.to(self.device), enc_mask.to(self.device)
            hidden = self.model.get_encoder()(input_ids=ids, attention_mask=enc_mask)[0]
            dec = torch.full((b, 1), self.start, dtype=torch.long, device=self.device)
            mask = torch.ones(b, 1, dtype=torch.long, device=self.device)
            out = self.model(
                encoder_outputs=(hidden,),
                attention_mask=enc_mask,
                decoder_input_ids=dec,
                decoder_attention_mask=mask,
                past_key_values=self._new_cache(rows),
                use_cache=True,
            )
            for r in rows:
                r.context = [self.start]
            pos = torch.ones(b, 1, dtype=torch.long, device=self.device)
            self._merge(rows, out.past_key_values, mask, pos, hidden, enc_mask)
            return out.logits[:, -1, :]
        length = max(len(r.context) for r in rows)
        ids = torch.full((b, length), self.pad, dtype=torch.long)
        mask = torch.zeros(b, length, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, length - len(r.context) :] = torch.tensor(r.context)
            mask[i, length - len(r.context) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        last, cache = self._run_decoder(ids, mask, position_ids, self._new_cache(rows))
        self._merge(rows, cache, mask, mask.sum(-1, keepdim=True))
        return last

    def _run_decoder(self, ids, mask, position_ids, cache):
        """(last position's hidden state or logits, cache) of a decoder-only forward."""
        kw = dict(input_ids=ids, attention_mask=mask, position_ids=position_ids)
        if self.base is not None:
            out = self.base(**kw, past_key_values=cache, use_cache=True)
            return out.last_hidden_state[:, -1, :], out.past_key_values
        if self._logits_to_keep:
            kw["logits_to_keep"] = 1
        out = self.model(**kw, past_key_values=cache, use_cache=True)
        return out.logits[:, -1, :], out.past_key_values

    def _logits(self, last: torch.Tensor) -> torch.Tensor:
        """(batch, vocab) logits from what `_decode` / `_prefill` return."""
        return F.linear(last, self.head_weight) if self.base is not None else last

    # ------------------------------------------------------------------ batch bookkeeping
    def _new_cache(self, rows: list[_Row]):
        from transformers import DynamicCache, EncoderDecoderCache

        if self.encdec:
            return EncoderDecoderCache(DynamicCache(), DynamicCache())
        return DynamicCache()

    def _merge(self, rows, cache, mask, pos, hidden=None, enc_mask=None) -> None:
        if not self.rows:
            self.rows, self.cache, self.mask, self.pos = list(rows), cache, mask, pos
            self.enc_hidden, self.enc_mask = hidden, enc_mask
            return
        self.rows = self.rows + list(rows)
        self.cache = kv.concat_rows(self.cache, cache)
        n = max(self.mask.shape[1], mask.shape[1])
        self.mask = torch.cat([kv.pad_mask_left(self.mask, n), kv.pad_mask_left(mask, n)])
        self.pos = torch.cat([self.pos, pos])
        if self.encdec:
            s = max(self.enc_hidden.shape[1], hidden.shape[1])
            self.enc_hidden = torch.cat(
                [F.pad(h, (0, 0, 0, s - h.shape[1])) for h in (self.enc_hidden, hidden)]
            )
            self.enc_mask = torch.cat(
                [kv.pad_mask_right(self.enc_mask, s), kv.pad_mask_right(enc_mask, s)]
            )

    def _keep(self, keep: list[int]) -> None:
        """Restrict the batch to rows `keep`; cut columns that are padding in all of them."""
        if not keep:
            self.rows, self.cache, self.mask, self.pos = [], None, None, None
            self.enc_hidden = self.enc_mask = None
            return
        idx = torch.tensor(keep, device=self.device)
        self.rows = [self.rows[i] for i in keep]
        self.cache = kv.select_rows(self.cache, idx)
        self.mask = self.mask.index_select(0, idx)
        self.pos = self.pos.index_select(0, idx)
        if self.encdec:
            self.enc_hidden = self.enc_hidden.index_select(0, idx)
            self.enc_mask = self.enc_mask.index_select(0, idx)
            s = int(self.enc_mask.sum(-1).max())
            self.enc_hidden, self.enc_mask = self.enc_hidden[:, :s], self.enc_mask[:, :s]
            self.cache = _trim_cross(self.cache, s)
        lead = int((self.mask.cumsum(-1) == 0).sum(-1).min())
        if lead:
            self.cache = kv.trim_left(self.cache, lead)
            self.mask = self.mask[:, lead:]

    def _slide_full_rows(self) -> None:
        """Rows whose next position would exceed their window go back to prefill, shortened."""
        if self.encdec or not self.rows:
            return
        full = []
        for i, r in enumerate(self.rows):
            window = r.req.opts.context_window or self.window
            if window is not None and len(r.context) + 1 > window:
                full.append(i)
        if not full:
            return
        for i in full:
            r = self.rows[i]
            window = r.req.opts.context_window or self.window
            r.context = slide(r.context + [r.pending], window, r.req.opts.n_keep)
            r.pending = -1
        moved = [self.rows[i] for i in full]
        self._keep([i for i in range(len(self.rows)) if i not in set(full)])
        self.waiting = moved + self.waiting

    def _finished(self, r: _Row) -> bool:
        eos = r.pending in self.eos and not r.req.opts.ignore_eos
        stopped = r.matcher is not None and r.matcher.is_stopped()  # its constraint is complete
        return eos or stopped or r.generated >= r.req.opts.max_new_tokens

    # ------------------------------------------------------------------ token choice
    def _advance(self, rows: list[_Row], last: torch.Tensor) -> list[StepEvent]:
        if self.base is not None and all(plain_greedy(r.req.opts) for r in rows):
            matchers = [r.matcher for r in rows]
            allowed = self.guide.allowed(matchers, self.head_weight.shape[0], last.device)
            tokens = greedy_head(self.head_weight).argmax(last, allowed).tolist()
        else:
            opts, hist = [r.req.opts for r in rows], [r.history for r in rows]
            logits = self.guide.mask(self._logits(last), [r.matcher for r in rows])
            tokens = processors.choose(logits, opts, hist, self.generator).tolist()
        complete = self.guide.advance([r.matcher for r in rows], tokens)
        events = []
        for r, t, c in zip(rows, tokens, complete, strict=True):
            r.pending = t
            r.generated += 1
            r.history.append(t)
            eos = t in self.eos and not r.req.opts.ignore_eos
            fin = eos or c or r.generated >= r.req.opts.max_new_tokens
            reason = ("eos" if eos else "stop" if c else "length") if fin else None
            events.append(StepEvent(r.req.id, t, fin, reason))
        logprobs.attach(events, rows, last, self._logits)
        return events


def plain_greedy(o: DecodingOptions) -> bool:
    """Greedy on the raw logits (a constraint only masks them): GreedyHead's exact argmax."""
    return is_greedy(o) and o.repetition_penalty == 1.0 and not o.no_repeat_ngram_size


def _trim_cross(cache, source: int):
    from transformers import EncoderDecoderCache

    if not isinstance(cache, EncoderDecoderCache):
        return cache
    return kv._map(cache, lambda k, v: (k, v), lambda k, v: (k[:, :, :source], v[:, :, :source]))
