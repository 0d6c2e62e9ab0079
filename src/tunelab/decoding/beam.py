"""Beam search, vectorised over a batch of prompts x beams, token-identical to transformers.

The algorithm is transformers' (generation/utils.py `_beam_search`, 5.x): each step keeps the
top 2 x num_beams continuations over all beams of a prompt; those ending in EOS (or at
max_new_tokens) are candidates for the finished set, scored sum(logprobs) /
generated_length ** length_penalty; the best num_beams unfinished ones run on. A prompt is done
when `early_stopping` says so: True, once num_beams hypotheses are finished; False, when the
best running beam at its current length cannot beat the worst finished one; "never", the same
check at the longest possible length when length_penalty > 0. The forward passes are the
engine's (same prefill, cache and masks), through its public `prefill` / `feed` / `reorder`.
Processors (repetition penalty, no-repeat n-gram) act on the log-probabilities, as there, and
so does a constraint (`opts.constraint`): one matcher per beam, masked together each step
(forbidden tokens at -inf, no renormalisation, as transformers' prefix_allowed_tokens_fn),
forked onto the surviving beams when they are reordered; a beam whose constraint is complete
can only take EOS next.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tunelab.decoding import constraints, processors
from tunelab.decoding.engine import Engine
from tunelab.decoding.options import DecodingOptions

NEG = -1.0e9


@dataclass
class Hypothesis:
    tokens: list[int]
    """Generated tokens, EOS included when the hypothesis ended with it."""
    score: float
    ended_with_eos: bool


def _history(prompts: list[list[int]], gen: torch.Tensor, nb: int, step: int) -> torch.Tensor:
    """(batch * beams, time) token history, left-padded with -1."""
    plen = max(len(p) for p in prompts)
    hist = torch.full((len(prompts) * nb, plen + step), -1, dtype=torch.long)
    for i, p in enumerate(prompts):
        hist[i * nb : (i + 1) * nb, plen - len(p) : plen] = torch.tensor(p)
    hist[:, plen:] = gen.reshape(len(prompts) * nb, -1)[:, :step]
    return hist


@torch.inference_mode()
def beam_search(
    model, tokenizer, prompts: list[list[int]], opts: DecodingOptions
) -> list[list[Hypothesis]]:
    """The best `num_return_sequences` hypotheses of every prompt, best first."""
    engine = Engine(model, tokenizer, max_batch=len(prompts) * opts.num_beams)
    eos = torch.tensor(sorted(engine.eos), dtype=torch.long)
    b, nb, steps = len(prompts), opts.num_beams, opts.max_new_tokens
    keep = max(2, 1 + len(eos)) * nb
    window = DecodingOptions(
        max_new_tokens=steps, context_window=opts.context_window, n_keep=opts.n_keep
    )
    contexts = [engine.fit(p, window) for p in prompts]  # each prompt's history, for penalties
    logits = engine.prefill([p for p in prompts for _ in range(nb)], window)  # (b * nb, vocab)
    vocab = logits.shape[-1]
    guide = constraints.Guide(model, tokenizer, engine.eos)
    matchers = [guide.matcher(opts.constraint) for _ in range(b * nb)]

    run_seq = torch.full((b, nb, steps), engine.pad, dtype=torch.long)
    fin_seq = run_seq.clone()
    fin_len = torch.zeros(b, nb, dtype=torch.long)
    run_scores = torch.zeros(b, nb)
    run_scores[:, 1:] = NEG
    fin_scores = torch.full((b, nb), NEG)
    fin_flag = torch.zeros(b, nb, dtype=torch.bool)
    open_heur = torch.ones(b, 1, dtype=torch.bool)
    top_mask = torch.arange(keep) < nb
    offset = torch.arange(b).view(-1, 1) * nb
    es, lp = opts.early_stopping, opts.length_penalty
    for step in range(steps):
        if step:
            logits = engine.feed(run_seq[:, :, step - 1].reshape(-1).tolist())
        logp = torch.log_softmax(logits.float(), dim=-1)  # (b * nb, vocab)
        if opts.repetition_penalty != 1.0 or opts.no_repeat_ngram_size:
            hist = _history(contexts, run_seq, nb, step)
            if opts.repetition_penalty != 1.0:
                logp = processors.repetition_penalty(logp, hist, opts.repetition_penalty)
            if opts.no_repeat_ngram_size:
                logp = processors.no_repeat_ngram(logp, hist, opts.no_repeat_ngram_size)
        logp = guide.mask(logp, matchers)
        flat = (logp.view(b, nb, vocab) + run_scores[:, :, None]).view(b, nb * vocab)
        top_lp, top_idx = torch.topk(flat, keep)  # (b, keep)
        src_beam, tok = top_idx // vocab, top_idx % vocab
        top_seq = run_seq.gather(1, src_beam[:, :, None].expand(-1, -1, steps)).clone()
        top_seq[:, :, step] = tok
        hits = torch.isin(tok, eos) if len(eos) else torch.zeros_like(tok, dtype=torch.bool)
        if step + 1 >= steps:
            hits = torch.ones_like(hits)
        # the best unfinished continuations run on
        run_lp = top_lp + hits.float() * NEG
        nxt = torch.topk(run_lp, nb).indices
        run_seq = top_seq.gather(1, nxt[:, :, None].expand(-1, -1, steps))
        run_scores = run_lp.gather(1, nxt)
        parent = src_beam.gather(1, nxt)
        # finished candidates among the top num_beams join the finished set if good enough
        just = hits & top_mask[None, :]
        cand = top_lp / float(step + 1) ** lp
        cand = cand + (fin_flag.all(-1, keepdim=True) & (es is True)).float() * NEG
        cand = cand + (~open_heur).float() * NEG
        cand = cand + (~just).float() * NEG
        m_seq = torch.cat([fin_seq, top_seq], dim=1)
        m_scores = torch.cat([fin_scores, cand], dim=1)
        m_len = torch.cat([fin_len, torch.full_like(tok, step + 1)], dim=1)
        m_flag = torch.cat([fin_flag, just], dim=1)
        best = torch.topk(m_scores, nb).indices
        fin_seq = m_seq.gather(1, best[:, :, None].expand(-1, -1, steps))
        fin_scores, fin_len, fin_flag = (
            m_scores.gather(1, best),
            m_len.gather(1, best),
            m_flag.gather(1, best),
        )
        engine.reorder((parent + offset).view(-1))
        if opts.constraint is not None:  # dead beams (score -inf) consume nothing
            matchers = guide.fork(matchers, (parent + offset).view(-1).tolist())
            chosen = torch.where(run_scores.isfinite(), run_seq[:, :, step], -1)
            guide.advance(matchers, chosen.view(-1).tolist())
        # can a running beam still beat the worst finished hypothesis?
        length = steps if es == "never" and lp > 0 else step + 1
        best_running = run_scores[:, :1] / float(length) ** lp
        worst = torch.where(fin_flag, fin_scores.min(1, keepdim=True).values, NEG)
        open_heur = open_heur & (best_running > worst).any(-1, keepdim=True)
        more = bool(open_heur.any()) and not (bool(fin_flag.all()) and es is True)
        if not more or bool(hits.all()):
            break
    out = []
    for i in range(b):
        hyps = []
        for j in range(opts.num_return_sequences):
            toks = fin_seq[i, j, : int(fin_len[i, j])].tolist()
            hyps.append(
                Hypothesis(toks, float(fin_scores[i, j]), bool(toks and toks[-1] in engine.eos))
            )
        out.append(hyps)
    return out


__all__ = ["beam_search", "Hypothesis"]
