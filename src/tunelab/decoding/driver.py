"""generate / stream / chat_prompt: thin drivers over the engine (and beam search).

`generate` queues every prompt (num_return_sequences copies when sampling) in one `Engine`
with up to `batch_size` rows decoding at once; a row that finishes leaves the batch and the
next waiting prompt joins. Stop strings are checked on each row's decoded text (`TextTracker`)
and end that row at once. `stream` drives the same engine for one prompt and yields the text
as it becomes safe to print.
"""

from __future__ import annotations

from collections.abc import Iterator

from tunelab.decoding.engine import Engine, Request
from tunelab.decoding.options import DecodingOptions, GenerationOutput, check_options
from tunelab.decoding.text import TextTracker
from tunelab.errors import TunelabError


def chat_prompt(tokenizer, user_text: str, system: str | None = None) -> str:
    """`user_text` (and an optional system message) in the tokenizer's chat template, ending
    with the assistant's turn so the model answers."""
    if not getattr(tokenizer, "chat_template", None):
        raise TunelabError("this tokenizer has no chat template: pass a plain prompt (no --chat)")
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user_text}
    ]
    return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def encode_prompts(tokenizer, prompts: list[str] | list[list[int]]) -> list[list[int]]:
    """Token ids of every prompt (strings are tokenized with the tokenizer's special tokens)."""
    out = []
    for i, p in enumerate(prompts):
        ids = list(tokenizer(p)["input_ids"]) if isinstance(p, str) else [int(t) for t in p]
        if not ids or (isinstance(p, str) and not p.strip()):
            raise TunelabError(f"prompt {i} is empty: give every prompt some text")
        out.append(ids)
    return out


def _check_model(model) -> None:
    if not hasattr(model, "generation_config") or not hasattr(model, "get_output_embeddings"):
        raise TunelabError("this model cannot generate: load it with tunelab.runs.open.open_lm")
    if model.get_output_embeddings() is None:
        raise TunelabError(
            "this model has no language-model head (an encoder?): use a decoder or "
            "encoder-decoder model loaded with tunelab.runs.open.open_lm"
        )


def generate(
    model,
    tokenizer,
    prompts: list[str] | list[list[int]],
    opts: DecodingOptions,
    batch_size: int = 16,
    show_progress: bool = False,
) -> list[GenerationOutput]:
    """Continuations of every prompt; prompt i's num_return_sequences outputs are contiguous.

    Raises:
        TunelabError: an empty prompt, a bad option or combination, or a model without an LM head.
    """
    check_options(opts)
    _check_model(model)
    if batch_size < 1:
        raise TunelabError(f"batch_size must be at least 1, got {batch_size}")
    ids = encode_prompts(tokenizer, prompts)
    if opts.num_beams > 1:
        return _generate_beam(model, tokenizer, ids, opts, batch_size, show_progress)
    n = opts.num_return_sequences
    engine = Engine(model, tokenizer, max_batch=batch_size, seed=opts.seed)
    slots: dict[int, tuple[int, TextTracker | None]] = {}
    done: dict[int, GenerationOutput] = {}
    for i, p in enumerate(ids):
        for j in range(n):
            rid = engine.add(Request(p, opts))
            slots[rid] = (i * n + j, TextTracker(tokenizer, opts.stop) if opts.stop else None)
    tokens: dict[int, list[int]] = {rid: [] for rid in slots}
    bar = _progress(len(slots), show_progress)
    while engine.has_work():
        for ev in engine.step():
            reason = ev.finish_reason
            if reason != "eos":
                tokens[ev.request_id].append(ev.token)
            tracker = slots[ev.request_id][1]
            if tracker is not None and reason != "eos":
                tracker.add(ev.token)
                if tracker.stopped and not ev.finished:
                    engine.cancel(ev.request_id)
                    reason = "stop"
                elif tracker.stopped:
                    reason = "stop"
            if reason is None:
                continue
            toks = tokens[ev.request_id]
            text = tracker.text if tracker else tokenizer.decode(toks, skip_special_tokens=True)
            index = slots[ev.request_id][0]
            done[index] = GenerationOutput(text, toks, reason, len(ids[index // n]), index // n)
            if bar:
                bar.update(1)
    if bar:
        bar.close()
    return [done[k] for k in range(len(done))]


def _generate_beam(model, tokenizer, ids, opts, batch_size, show_progress):
    from tunelab.decoding.beam import beam_search

    per_batch = max(1, batch_size // opts.num_beams)
    out = []
    bar = _progress(len(ids), show_progress)
    for start in range(0, len(ids), per_batch):
        chunk = ids[start : start + per_batch]
        for k, hyps in enumerate(beam_search(model, tokenizer, chunk, opts)):
            for h in hyps:
                toks = h.tokens[:-1] if h.ended_with_eos else h.tokens
                text = tokenizer.decode(toks, skip_special_tokens=True)
                reason = "eos" if h.ended_with_eos else "length"
                cut = [i for i in (text.find(s) for s in opts.stop) if i >= 0]
                if cut:
                    text, reason = text[: min(cut)], "stop"
                out.append(GenerationOutput(text, toks, reason, len(chunk[k]), start + k))
            if bar:
                bar.update(1)
    if bar:
        bar.close()
    return out


def _progress(total: int, show: bool):
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="generating", unit="seq")


def stream(model, tokenizer, prompt: str | list[int], opts: DecodingOptions) -> Iterator[str]:
    """Text deltas as tokens are produced (beam search yields once, at the end)."""
    check_options(opts)
    _check_model(model)
    if opts.num_beams > 1 or opts.num_return_sequences > 1:
        outs = generate(model, tokenizer, [prompt], opts)
        yield outs[0].text
        return
    (ids,) = encode_prompts(tokenizer, [prompt])
    engine = Engine(model, tokenizer, max_batch=1, seed=opts.seed)
    engine.add(Request(ids, opts))
    tracker = TextTracker(tokenizer, opts.stop)
    while engine.has_work():
        for ev in engine.step():
            if ev.finish_reason != "eos":
                tracker.add(ev.token)
            if tracker.stopped or ev.finished:
                engine.cancel(ev.request_id)
                piece = tracker.delta(final=True)
            else:
                piece = tracker.delta()
            if piece:
                yield piece
