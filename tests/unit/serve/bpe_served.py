"""A tiny served decoder with a byte-level BPE tokenizer (llguidance needs one) and a chat
template, for the constrained-output, logprobs and tools tests: the random Llama of the
decoding constraint tests, with a head bias towards JSON closers and EOS so that free JSON
ends."""

from __future__ import annotations

from tests.unit.serve.conftest import CHAT_TEMPLATE


def bpe_served(closer_bias: float = 4.0, seed: int = 0, name: str = "tiny-bpe"):
    from tests.unit.decoding.test_constraints import tiny_bpe_lm
    from tunelab.serve.loading import Served

    model, tok = tiny_bpe_lm(seed=seed, closer_bias=closer_bias)
    tok.chat_template = CHAT_TEMPLATE
    return Served(name, "generate", "decoder", model, tok, model.config.max_position_embeddings)
