"""Per-token log-probabilities for the requests that ask for them (`DecodingOptions.logprobs`).

    engine.add(Request(ids, DecodingOptions(logprobs=5)))
    for ev in engine.step():
        ev.logprobs    # TokenLogprob(token, logprob, top=[(id, logprob), ...5]) or None

What is reported: the log-softmax of the model's raw logits at that position, before any
processing (repetition penalties, temperature, top-k/p, a constraint's mask), as OpenAI does
and as vLLM does by default (its `logprobs_mode="raw_logprobs"`). So the numbers say what the
model believes, not how the token was drawn: a token a JSON schema forced can have a low
logprob, and a sampled token need not be in the top list.

Cost: nothing for rows that do not ask. For those that do, one log-softmax over the
vocabulary of their rows only (when the engine's greedy fast path skipped the full LM head,
the head runs for those rows alone), and a top-k when k > 0.

`token_text` / `token_bytes` turn token ids into what the OpenAI wire format shows: the
token's text and its UTF-8 bytes (a byte-level BPE token may hold part of a character, whose
text is U+FFFD but whose bytes are exact).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

MAX_TOP = 20
"""Most alternatives per token (OpenAI's top_logprobs limit)."""


@dataclass
class TokenLogprob:
    token: int
    logprob: float
    """log p(token) under the raw model distribution at its position."""
    top: list[tuple[int, float]] = field(default_factory=list)
    """The k most likely tokens there and their logprobs, most likely first."""


def attach(events: list, rows: list, last, to_logits) -> None:
    """Set `events[i].logprobs` for every row i whose options ask for logprobs. `last` is
    what the forward pass returned for `rows` (logits, or hidden states that `to_logits`
    turns into logits); only the asking rows' slices are used."""
    ask = [i for i, r in enumerate(rows) if r.req.opts.logprobs is not None]
    if not ask:
        return
    import torch

    idx = torch.tensor(ask, device=last.device)
    logp = torch.log_softmax(to_logits(last.index_select(0, idx)).float(), dim=-1)
    chosen = torch.tensor([events[i].token for i in ask], device=logp.device)
    picked = logp.gather(1, chosen[:, None]).squeeze(1).tolist()
    k = min(max(rows[i].req.opts.logprobs for i in ask), MAX_TOP, logp.shape[-1])
    top_v, top_i = logp.topk(k, dim=-1) if k else (None, None)
    for j, i in enumerate(ask):
        want = min(rows[i].req.opts.logprobs, k)
        top = []
        if want:
            top = list(zip(top_i[j, :want].tolist(), top_v[j, :want].tolist(), strict=True))
        events[i].logprobs = TokenLogprob(events[i].token, picked[j], top)


@functools.lru_cache(maxsize=1)
def _byte_level() -> dict[str, int]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {ch: b for b, ch in bytes_to_unicode().items()}


_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def token_text(tokenizer, token: int) -> str:
    """The token's text as decoding shows it (special tokens included)."""
    return tokenizer.decode([token], skip_special_tokens=False)


def token_bytes(tokenizer, token: int) -> list[int]:
    """The token's UTF-8 bytes: exact for byte-level BPE pieces and SentencePiece byte
    fallbacks (<0xE2>), else the encoding of its decoded text."""
    piece = tokenizer.convert_ids_to_tokens(token)
    if isinstance(piece, str) and piece:
        m = _BYTE_FALLBACK.fullmatch(piece)
        if m:
            return [int(m.group(1), 16)]
        table = _byte_level()
        text = token_text(tokenizer, token)
        if "\ufffd" in text and all(ch in table for ch in piece):
            return [table[ch] for ch in piece]
        return list(text.encode("utf-8"))
    return list(token_text(tokenizer, token).encode("utf-8"))


__all__ = ["TokenLogprob", "attach", "token_text", "token_bytes", "MAX_TOP"]
