"""Decoding: greedy, beam search and sampling over a batched KV-cache engine.

    from tunelab.decoding import DecodingOptions, generate, stream, chat_prompt
    outs = generate(model, tok, ["Once upon a time"], DecodingOptions(max_new_tokens=32))
    for delta in stream(model, tok, chat_prompt(tok, "Hi!"), DecodingOptions()):
        print(delta, end="", flush=True)

Modules: options (dataclasses), processors (logits processors), context (the sliding
context window), engine (the step-wise batched engine), beam (beam search), text (stop
strings and UTF-8-safe streaming), driver (generate / stream / chat_prompt).
"""

from tunelab.decoding.driver import chat_prompt, generate, stream
from tunelab.decoding.options import DecodingOptions, GenerationOutput

__all__ = ["DecodingOptions", "GenerationOutput", "generate", "stream", "chat_prompt"]
