"""The sliding context window: never more positions than the window, the prefix kept."""

from __future__ import annotations

import random

import torch

from tests.unit.decoding.helpers import tiny_lm
from tunelab.decoding import DecodingOptions, generate
from tunelab.decoding.context import slide


def test_slide_properties():
    rng = random.Random(0)
    for _ in range(500):
        window = rng.randint(3, 40)
        n_keep = rng.randint(0, window - 2)
        tokens = list(range(rng.randint(0, 100)))
        out = slide(tokens, window, n_keep)
        assert len(out) <= window
        if len(tokens) <= window:
            assert out == tokens
            continue
        assert out[:n_keep] == tokens[:n_keep]
        tail = out[n_keep:]
        assert tail and tail == tokens[len(tokens) - len(tail) :]
        # half of the room is freed, so the next slide is far away
        assert window - len(out) >= (window - n_keep) // 2 - 1


def test_model_never_sees_more_than_the_window(tmp_path):
    model, tok = tiny_lm("decoder", tmp_path, seed=0, eos_boost=0.0)
    seen = []

    def record(module, args, kwargs):
        mask, pos = kwargs["attention_mask"], kwargs["position_ids"]
        seen.append((int(mask.sum(-1).max()), int(pos.max())))

    # the base model runs in every forward (the engine may apply the LM head itself)
    model.model.register_forward_pre_hook(record, with_kwargs=True)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(5, len(tok), (n,), generator=g).tolist() for n in (5, 30)]
    opts = DecodingOptions(max_new_tokens=40, context_window=16, n_keep=4)
    outs = generate(model, tok, prompts, opts, batch_size=2)
    assert [len(o.token_ids) for o in outs] == [40, 40]
    assert [o.finish_reason for o in outs] == ["length", "length"]
    assert seen and max(s[0] for s in seen) <= 16 and max(s[1] for s in seen) < 16
    # the window slid several times (re-prefills) instead of failing
    assert sum(1 for s in seen if s[0] > 1) > 3


def test_prefix_is_kept_when_sliding(tmp_path):
    model, tok = tiny_lm("decoder", tmp_path, seed=0, eos_boost=0.0)
    from tunelab.decoding.engine import Engine, Request

    prompt = list(range(5, 25))
    engine = Engine(model, tok, max_batch=1)
    engine.add(Request(prompt, DecodingOptions(max_new_tokens=30, context_window=10, n_keep=3)))
    steps = 0
    while engine.has_work():
        engine.step()
        steps += 1
        for r in engine.rows:
            assert r.context[:3] == prompt[:3]
            assert len(r.context) <= 10  # the pending token is fed after a slide if needed
    assert steps == 30
