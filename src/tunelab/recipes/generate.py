"""`tunelab generate`: continue prompts with a decoder or seq2seq LM (a model or a run)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from tunelab.errors import TunelabError


def _check(prompts: list[str]) -> None:
    """Refuse no prompts or an empty one before the model is loaded."""
    if not prompts:
        raise TunelabError("no prompts: pass PROMPT arguments or --file prompts.txt")
    for i, p in enumerate(prompts):
        if not p.strip():
            raise TunelabError(f"prompt {i} is empty: give every prompt some text")


def _prepare(model_or_run, prompts, options, chat, system, dtype, device, constraint=None):
    """(loaded model, what it reads for each prompt, decoding options)."""
    from tunelab.models.precision import check

    _check(prompts)  # before torch and transformers load (seconds)
    check(dtype, device)
    from tunelab.decoding import DecodingOptions, chat_prompt
    from tunelab.decoding.constraints import check as check_constraint
    from tunelab.runs.open import open_lm

    options = options or DecodingOptions()
    if constraint is not None:
        options = replace(options, constraint=constraint)
    if options.constraint is not None:
        check_constraint(options.constraint)  # a bad schema fails before the model loads
    loaded, _ = open_lm(model_or_run, dtype, device)
    tok = loaded.tokenizer
    inputs = [chat_prompt(tok, p, system) for p in prompts] if chat else prompts
    return loaded, inputs, options


def generate(
    model_or_run: str,
    prompts: list[str],
    options: Any = None,
    chat: bool = False,
    system: str | None = None,
    batch_size: int = 16,
    progress: bool = False,
    dtype: str = "auto",
    device: str = "auto",
    constraint: Any = None,
) -> list[Any]:
    """Continuations of `prompts` (GenerationOutput each: text, token ids, finish reason),
    decoded in batches with a KV cache; `chat` wraps each prompt in the chat template. The
    model runs on `device` in `dtype` (`models.precision`; "fp32" is token-identical to
    transformers' generate()). `constraint` (a `decoding.constraints.Constraint`, or
    `options.constraint`) makes every output one of a choice, a regex match, JSON under a
    schema, any JSON object or a sentence of a Lark grammar.

    Raises:
        TunelabError: no or empty prompts, a bad batch size, a model that cannot generate,
            a constraint that cannot be enforced (or no llguidance installed).
    """
    from tunelab.decoding import generate as decode

    if batch_size < 1:
        raise TunelabError(f"--batch-size must be at least 1, got {batch_size}")
    loaded, inputs, opts = _prepare(
        model_or_run, prompts, options, chat, system, dtype, device, constraint
    )
    return decode(
        loaded.model, loaded.tokenizer, inputs, opts, batch_size=batch_size, show_progress=progress
    )


def stream(
    model_or_run: str,
    prompts: list[str],
    options: Any = None,
    chat: bool = False,
    system: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    constraint: Any = None,
) -> Iterator[tuple[int, str]]:
    """(prompt index, text piece) as the tokens of each prompt's continuation are decoded;
    each prompt starts with an empty piece. `constraint` as in `generate`."""
    from tunelab.decoding import stream as decode_stream

    loaded, inputs, opts = _prepare(
        model_or_run, prompts, options, chat, system, dtype, device, constraint
    )
    for i, text in enumerate(inputs):
        yield i, ""  # a prompt starts (its continuation may be empty)
        for piece in decode_stream(loaded.model, loaded.tokenizer, text, opts):
            yield i, piece
