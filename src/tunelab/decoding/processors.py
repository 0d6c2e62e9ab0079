"""Logits processors: small vectorised functions over a batch of next-token logits.

Each takes logits of shape (batch, vocab) and returns new logits (never in place). Per-row
parameters may be Python numbers (the same for every row) or tensors of shape (batch, 1), so
requests with different options share one batch. Token histories are (batch, time) int64
tensors right-aligned and left-padded with -1 (a row's prompt and generated tokens).

The order follows transformers: repetition penalty, no-repeat n-gram (both change which token
is likely), then the sampling warpers temperature, top-k, top-p, min-p. `choose` applies them
to a batch of rows with different options and picks each row's next token.
"""

from __future__ import annotations

import torch

from tunelab.decoding.options import DecodingOptions, is_greedy

NEG_INF = float("-inf")
Param = float | torch.Tensor


def seen_mask(history: torch.Tensor, vocab: int) -> torch.Tensor:
    """(batch, vocab) bool: which tokens occur in each row's history (-1 entries ignored)."""
    valid = history >= 0
    counts = torch.zeros(history.shape[0], vocab, dtype=torch.float32, device=history.device)
    counts.scatter_add_(1, history.clamp(min=0), valid.float())
    return counts > 0


def repetition_penalty(logits: torch.Tensor, history: torch.Tensor, penalty: Param) -> torch.Tensor:
    """CTRL's penalty on tokens already seen: positive logits / penalty, negative ones * penalty."""
    seen = seen_mask(history, logits.shape[-1])
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalised, logits)


def no_repeat_ngram(logits: torch.Tensor, history: torch.Tensor, n: int) -> torch.Tensor:
    """Forbid every token that would complete an n-gram already present in the row's history."""
    batch, length = history.shape
    if n < 1 or length < n:
        return logits
    if n == 1:
        return logits.masked_fill(seen_mask(history, logits.shape[-1]), NEG_INF)
    windows = history.unfold(1, n, 1)  # (batch, length - n + 1, n)
    # the n-1 most recent tokens: an earlier window starting with them bans its last token
    prefix = history[:, length - n + 1 :].unsqueeze(1)  # (batch, 1, n - 1)
    match = (windows[:, :, :-1] == prefix).all(-1) & (windows >= 0).all(-1)
    match &= (prefix >= 0).all(-1)
    banned = torch.zeros(batch, logits.shape[-1], dtype=torch.float32, device=logits.device)
    banned.scatter_add_(1, windows[:, :, -1].clamp(min=0), match.float())
    return logits.masked_fill(banned > 0, NEG_INF)


def temperature(logits: torch.Tensor, t: Param) -> torch.Tensor:
    """Divide by the temperature (> 0): below 1 sharpens, above 1 flattens."""
    return logits / t


def top_k(logits: torch.Tensor, k: int | torch.Tensor) -> torch.Tensor:
    """Keep the k highest logits of each row (k 0: keep all). Ties at the k-th value are kept."""
    vocab = logits.shape[-1]
    if isinstance(k, int):
        if k <= 0 or k >= vocab:
            return logits
        kth = torch.topk(logits, k, dim=-1).values[:, -1:]
        return logits.masked_fill(logits < kth, NEG_INF)
    k = k.view(-1, 1)
    kmax = int(k.max())
    if kmax <= 0:
        return logits
    top = torch.topk(logits, min(kmax, vocab), dim=-1).values  # (batch, kmax)
    kth = top.gather(1, (k.clamp(1, top.shape[1]) - 1))
    kth = torch.where(k > 0, kth, torch.full_like(kth, NEG_INF))
    return logits.masked_fill(logits < kth, NEG_INF)


def top_p(logits: torch.Tensor, p: Param) -> torch.Tensor:
    """Nucleus: keep the smallest set of most likely tokens whose probability mass is >= p."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    mass_before = probs.cumsum(-1) - probs  # mass of the strictly more likely tokens
    drop_sorted = mass_before >= p
    drop_sorted[:, 0] = False  # always keep the most likely token
    drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
    return logits.masked_fill(drop, NEG_INF)


def min_p(logits: torch.Tensor, p: Param) -> torch.Tensor:
    """Drop tokens whose probability is below p times the most likely token's."""
    probs = logits.softmax(-1)
    limit = probs.max(-1, keepdim=True).values * p
    return logits.masked_fill(probs < limit, NEG_INF)


def sample(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row drawn from softmax(logits): (batch,) int64."""
    probs = logits.float().softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def _col(opts: list[DecodingOptions], name: str) -> torch.Tensor:
    return torch.tensor([[float(getattr(o, name))] for o in opts])  # (batch, 1)


def choose(
    logits: torch.Tensor,
    opts: list[DecodingOptions],
    histories: list[list[int]],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """The next token of every row, (batch,) int64, under each row's options: the processors
    above in transformers' order, then an argmax (greedy rows) or a draw (sampling rows).
    `histories` are the rows' prompt and generated tokens (for the penalties)."""
    penal = any(o.repetition_penalty != 1.0 or o.no_repeat_ngram_size for o in opts)
    greedy = [is_greedy(o) for o in opts]
    if all(greedy) and not penal:
        return logits.argmax(-1)
    logits = logits.float()
    if penal:
        hist_len = max(len(h) for h in histories)
        hist = torch.full((len(histories), hist_len), -1, dtype=torch.long)
        for i, h in enumerate(histories):
            hist[i, hist_len - len(h) :] = torch.tensor(h)
        hist = hist.to(logits.device)
        if any(o.repetition_penalty != 1.0 for o in opts):
            logits = repetition_penalty(
                logits, hist, _col(opts, "repetition_penalty").to(logits.device)
            )
        for n in {o.no_repeat_ngram_size for o in opts if o.no_repeat_ngram_size}:
            sel = torch.tensor([o.no_repeat_ngram_size == n for o in opts], device=logits.device)
            banned = no_repeat_ngram(logits, hist, n)
            logits = torch.where(sel[:, None], banned, logits)
    best = logits.argmax(-1)
    if all(greedy):
        return best
    dev = logits.device
    temps = _col(opts, "temperature").to(dev)
    warped = temperature(logits, torch.where(temps > 0, temps, torch.ones_like(temps)))
    ks = torch.tensor([o.top_k for o in opts], device=dev)
    if int(ks.max()) > 0:
        warped = top_k(warped, ks)
    if any(o.top_p < 1.0 for o in opts):
        warped = top_p(warped, _col(opts, "top_p").to(dev))
    if any(o.min_p > 0 for o in opts):
        warped = min_p(warped, _col(opts, "min_p").to(dev))
    drawn = sample(warped, generator)
    return torch.where(torch.tensor(greedy, device=dev), best, drawn)
