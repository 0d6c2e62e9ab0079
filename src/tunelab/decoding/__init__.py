"""Decoding: greedy, beam search and sampling over a batched KV-cache engine.

    from tunelab.decoding import DecodingOptions, generate, stream, chat_prompt
    outs = generate(model, tok, ["Once upon a time"], DecodingOptions(max_new_tokens=32))
    for delta in stream(model, tok, chat_prompt(tok, "Hi!"), DecodingOptions()):
        print(delta, end="", flush=True)

Modules: options (dataclasses), processors (logits processors), context (the sliding
context window), engine (the step-wise batched engine), beam (beam search), text (stop
strings and UTF-8-safe streaming), driver (generate / stream / chat_prompt), constraints
(choice / regex / JSON / grammar via llguidance), logprobs (per-token logprobs on request).

The package's own import is light (no torch): `tunelab VERB --help` reads DecodingOptions
without loading the engine; the driver's functions load on first use.
"""

from __future__ import annotations

from typing import Any

from tunelab.decoding.options import DecodingOptions, GenerationOutput

_LAZY = {"chat_prompt", "generate", "stream"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from tunelab.decoding import driver

        return getattr(driver, name)
    raise AttributeError(f"module 'tunelab.decoding' has no attribute {name!r}")


__all__ = ["DecodingOptions", "GenerationOutput", "generate", "stream", "chat_prompt"]
