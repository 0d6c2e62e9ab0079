"""Log-probability and perplexity of texts under a language model (the chain rule over tokens).

    from tunelab.evaluation.scoring import score
    [r] = score(model, tok, ["The cat sat on the mat."])
    r.logprob, r.tokens, r.perplexity            # natural log; perplexity = exp(-logprob/tokens)
    score(model, tok, [" Paris."], prompts=["The capital of France is"])  # completion only

What is scored, exactly:
- Decoders: log p(text) = sum_i log p(t_i | t_<i). Texts are tokenized without the tokenizer's
  special tokens; when the tokenizer has a BOS token it is put in front (unless the sequence
  already starts with it) and the first text token is scored given BOS. Without a BOS token the
  first token has nothing to be conditioned on and is not scored (`tokens` counts it out).
  No EOS is appended or scored.
- Conditional scoring (`prompts`): prompt and completion are tokenized separately and
  concatenated, and only the completion tokens are scored, so
  score(prompt) + score(completion | prompt) == score(prompt + completion) by the chain rule.
- Encoder-decoders: log p(target | source) with `prompts` as the sources (required); the
  encoder reads the source with the tokenizer's special tokens, the decoder starts from the
  model's decoder_start_token_id and every target token (no EOS appended) is scored.
- Long texts: with `window` (or automatically, at the model's max positions, when a sequence
  is longer than that), the strided method of the transformers perplexity guide: windows of
  `window` tokens start every `stride` tokens and each window scores only the tokens no earlier
  window scored, so every token is scored once, with up to window-1 tokens of context.

Batches are right-padded (real tokens never attend to padding and keep their positions), so a
batched score equals the unbatched one up to float rounding; the unit test checks 1e-5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tunelab.errors import TunelabError


@dataclass
class ScoreResult:
    logprob: float
    """Sum of the natural-log probabilities of the scored tokens."""
    tokens: int
    """Number of scored tokens."""
    perplexity: float
    """exp(-logprob / tokens); nan when no token was scored."""
    token_logprobs: list[float] | None = None
    """Per scored token log-probabilities, in order (when asked for)."""


@dataclass
class _Unit:
    """One forward pass worth of one sequence: ids, and the positions [lo, hi) it scores."""

    seq: int
    ids: list[int]
    lo: int
    hi: int
    source: list[int] | None = None  # encoder input (encoder-decoders only)


def perplexity(logprob: float, tokens: int) -> float:
    """exp(-logprob / tokens), nan for zero tokens (and inf rather than an overflow)."""
    if tokens == 0:
        return float("nan")
    x = -logprob / tokens
    return math.exp(x) if x < 700 else float("inf")


def corpus_perplexity(results: list[ScoreResult]) -> float:
    """Token-weighted perplexity of many results: exp(-sum logprob / sum tokens)."""
    return perplexity(sum(r.logprob for r in results), sum(r.tokens for r in results))


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _decoder_units(
    tokenizer, texts, prompts, window: int | None, stride: int | None, max_pos: int | None
) -> list[_Unit]:
    bos = tokenizer.bos_token_id
    units = []
    for i, text in enumerate(texts):
        head = _ids(tokenizer, prompts[i]) if prompts else []
        body = _ids(tokenizer, text)
        if bos is not None and (head or body)[:1] != [bos]:
            head = [bos, *head]
        ids = head + body
        first = max(len(head), 1)  # position 0 has no context: never scored
        win, step = window, stride
        if win is None and max_pos and len(ids) > max_pos:
            win = max_pos  # longer than the model can see: slide rather than fail
        if win is None or len(ids) <= win:
            if len(ids) > first:  # else nothing to score (an empty completion)
                units.append(_Unit(i, ids, first, len(ids)))
            continue
        step = step or max(win // 2, 1)
        prev_end = 0
        for begin in range(0, len(ids), step):
            end = min(begin + win, len(ids))
            lo = max(prev_end, first, begin + 1) - begin
            if end - begin > lo:
                units.append(_Unit(i, ids[begin:end], lo, end - begin))
            prev_end = end
            if end == len(ids):
                break
    return units


def _seq2seq_units(model, tokenizer, texts, prompts) -> list[_Unit]:
    if prompts is None:
        raise TunelabError(
            "an encoder-decoder scores a target given a source: pass the sources as prompts "
            "(tunelab score: --prompt or --data)"
        )
    start = model.config.decoder_start_token_id
    if start is None:
        start = getattr(model.generation_config, "decoder_start_token_id", None)
    if start is None:
        raise TunelabError("the model config has no decoder_start_token_id: set it to score")
    units = []
    for i, text in enumerate(texts):
        target = _ids(tokenizer, text)
        source = list(tokenizer(prompts[i])["input_ids"])
        if target:
            units.append(_Unit(i, [start, *target], 1, len(target) + 1, source))
    return units


def _pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask, both (batch, longest)."""
    n = max(len(r) for r in rows)
    ids = torch.full((len(rows), n), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for j, r in enumerate(rows):
        ids[j, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[j, : len(r)] = 1
    return ids, mask


def _forward_logprobs(model, batch: list[_Unit], pad: int) -> torch.Tensor:
    """(batch, longest-1) log p(ids[:, p+1] | ids[:, :p+1]) for every position."""
    ids, mask = _pad([u.ids for u in batch], pad)
    if batch[0].source is not None:
        src, src_mask = _pad([u.source for u in batch], pad)
        out = model(
            input_ids=src,
            attention_mask=src_mask,
            decoder_input_ids=ids,
            decoder_attention_mask=mask,
        )
    else:
        out = model(input_ids=ids, attention_mask=mask)
    logits = out.logits[:, :-1].float()  # (batch, seq-1, vocab)
    target = ids[:, 1:].unsqueeze(-1)  # (batch, seq-1, 1)
    return (logits.gather(-1, target).squeeze(-1) - logits.logsumexp(-1)).cpu()


def score(
    model,
    tokenizer,
    texts: list[str],
    prompts: list[str] | None = None,
    batch_size: int = 8,
    window: int | None = None,
    stride: int | None = None,
    token_logprobs: bool = False,
    show_progress: bool = False,
) -> list[ScoreResult]:
    """Log-probability, scored token count and perplexity of every text, in input order.

    Args:
        model: a causal LM or a seq2seq LM (transformers), in eval mode.
        tokenizer: its tokenizer.
        texts: the texts (completions, targets) to score.
        prompts: one per text: scored-on context (decoders) or source (encoder-decoders).
        batch_size: sequences (or windows) per forward pass.
        window: decoders only: tokens per window for sliding-window scoring (see module doc).
        stride: tokens between window starts (default window // 2); must be below window.
        token_logprobs: also return every scored token's log-probability.
        show_progress: a tqdm bar over batches.

    Raises:
        TunelabError: mismatched prompts, bad window/stride, encoder-decoder without sources.
    """
    if prompts is not None and len(prompts) != len(texts):
        raise TunelabError(f"{len(prompts)} prompts for {len(texts)} texts: pass one per text")
    if batch_size < 1:
        raise TunelabError(f"batch_size must be at least 1, got {batch_size}")
    if window is not None and window < 2:
        raise TunelabError(f"window must be at least 2 tokens, got {window}")
    if stride is not None and (stride < 1 or window is None or stride >= window):
        raise TunelabError(
            f"stride ({stride}) needs a window and must be between 1 and window - 1 so every "
            "token is scored once"
        )
    seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    if seq2seq:
        if window is not None:
            raise TunelabError("sliding windows apply to decoders: drop window for this model")
        units = _seq2seq_units(model, tokenizer, texts, prompts)
    else:
        max_pos = getattr(model.config, "max_position_embeddings", None)
        if window is not None and max_pos and window > max_pos:
            raise TunelabError(f"window {window} exceeds the model's {max_pos} positions")
        units = _decoder_units(tokenizer, texts, prompts, window, stride, max_pos)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # longest first: fewer pad tokens per batch, and an out-of-memory shows up at once
    order = sorted(range(len(units)), key=lambda k: -len(units[k].ids))
    per_seq: list[list[torch.Tensor]] = [[] for _ in texts]
    pieces: dict[int, torch.Tensor] = {}
    batches = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    if show_progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="scoring", unit="batch")
    with torch.inference_mode():
        for chunk in batches:
            lp = _forward_logprobs(model, [units[k] for k in chunk], pad)
            for row, k in enumerate(chunk):
                u = units[k]
                pieces[k] = lp[row, u.lo - 1 : u.hi - 1]
    for k, u in enumerate(units):  # units are in sequence and window order
        per_seq[u.seq].append(pieces[k])
    results = []
    for parts in per_seq:
        tok_lp = torch.cat(parts) if parts else torch.zeros(0)
        total, n = float(tok_lp.double().sum()), int(tok_lp.numel())
        results.append(
            ScoreResult(total, n, perplexity(total, n), tok_lp.tolist() if token_logprobs else None)
        )
    return results
