"""The engine as the batching server drives it: requests join and leave between steps."""

from __future__ import annotations

import pytest
import torch

from tests.unit.decoding.helpers import prompts, tiny_lm
from tunelab.decoding import DecodingOptions, generate
from tunelab.decoding.engine import Engine, Request


@pytest.mark.parametrize("family", ["decoder", "encoder-decoder"])
def test_requests_joining_mid_flight_get_the_same_tokens_as_alone(family, tmp_path):
    model, tok = tiny_lm(family, tmp_path, seed=3)
    ps = prompts(tok, 4, seed=3)
    lengths = [12, 5, 9, 12]
    alone = [
        generate(model, tok, [p], DecodingOptions(max_new_tokens=n))[0].token_ids
        for p, n in zip(ps, lengths, strict=True)
    ]
    engine = Engine(model, tok, max_batch=3)

    def add(i: int) -> int:
        return engine.add(Request(ps[i], DecodingOptions(max_new_tokens=lengths[i])))

    got: dict[int, list[int]] = {}
    ids = [add(0)]
    sizes = []
    for step in range(40):
        if step == 2:  # two more join while the first is decoding
            ids += [
                engine.add(Request(ps[i], DecodingOptions(max_new_tokens=lengths[i])))
                for i in (1, 2)
            ]
        if step == 4:  # a fourth waits for a free row
            ids.append(add(3))
        for ev in engine.step():
            if ev.finish_reason != "eos":
                got.setdefault(ev.request_id, []).append(ev.token)
            else:
                got.setdefault(ev.request_id, [])
        sizes.append(len(engine.rows))
        if not engine.has_work():
            break
    assert [got[i] for i in ids] == alone
    assert max(sizes) == 3 and sizes[-1] == 0


def test_cancel_removes_a_request(tmp_path):
    model, tok = tiny_lm("decoder", tmp_path, seed=0, eos_boost=0.0)
    ps = prompts(tok, 2, seed=0)
    engine = Engine(model, tok, max_batch=2)
    a = engine.add(Request(ps[0], DecodingOptions(max_new_tokens=10)))
    b = engine.add(Request(ps[1], DecodingOptions(max_new_tokens=10)))
    engine.step()
    engine.cancel(a)
    seen = [ev.request_id for _ in range(3) for ev in engine.step()]
    assert seen == [b, b, b] and len(engine.rows) == 1


@pytest.mark.parametrize("family", ["decoder", "encoder-decoder"])
def test_prefill_feed_reorder_drive_the_batch_as_beam_search_does(family, tmp_path):
    model, tok = tiny_lm(family, tmp_path, seed=1)
    ps = prompts(tok, 2, seed=1)  # different lengths: the rows are padded differently
    opts = DecodingOptions(max_new_tokens=4)
    ref = Engine(model, tok, max_batch=2)
    first = ref.prefill(ps, opts)  # (rows, vocab)
    expected = ref.feed([7, 9])
    assert first.shape == expected.shape == (2, model.config.vocab_size)

    engine = Engine(model, tok, max_batch=2)
    torch.testing.assert_close(engine.prefill(ps, opts), first)
    engine.reorder(torch.tensor([1, 1]))  # row 0 becomes a copy of row 1
    got = engine.feed([9, 9])
    torch.testing.assert_close(got[0], expected[1])
    torch.testing.assert_close(got[1], expected[1])
    assert engine.fit(ps[1], opts) == ps[1]  # fits the window: unchanged
    with pytest.raises(ValueError, match="one token per row"):
        engine.feed([1])
    with pytest.raises(RuntimeError, match="must be empty"):
        engine.prefill(ps, opts)
