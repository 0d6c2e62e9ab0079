"""generate / stream behaviour on tiny models: batching, seeds, stop strings, streaming, errors."""

from __future__ import annotations

import pytest

from tests.unit.decoding.helpers import prompts, tiny_lm
from tunelab.decoding import DecodingOptions, generate, stream
from tunelab.decoding.options import check_options
from tunelab.decoding.text import TextTracker
from tunelab.errors import TunelabError


@pytest.fixture
def lm(tmp_path):
    return tiny_lm("decoder", tmp_path, seed=0)


def test_batch_size_does_not_change_greedy_output(lm):
    model, tok = lm
    ps = prompts(tok, 5, seed=4)
    one = generate(model, tok, ps, DecodingOptions(max_new_tokens=10), batch_size=1)
    two = generate(model, tok, ps, DecodingOptions(max_new_tokens=10), batch_size=2)
    assert [o.token_ids for o in one] == [o.token_ids for o in two]
    assert [o.prompt_index for o in two] == list(range(5))
    assert [o.prompt_tokens for o in two] == [len(p) for p in ps]


def test_top_k_one_and_tiny_temperature_equal_greedy(lm):
    model, tok = lm
    ps = prompts(tok, 3, seed=5)
    greedy = [o.token_ids for o in generate(model, tok, ps, DecodingOptions(max_new_tokens=8))]
    for kw in (dict(top_k=1), dict(temperature=1e-4), dict(temperature=0.0)):
        opts = DecodingOptions(max_new_tokens=8, do_sample=True, seed=0, **kw)
        assert [o.token_ids for o in generate(model, tok, ps, opts)] == greedy


def test_sampling_is_reproducible_with_seed_and_groups_outputs(lm):
    model, tok = lm
    ps = prompts(tok, 2, seed=6)
    opts = DecodingOptions(max_new_tokens=12, do_sample=True, num_return_sequences=3, seed=7)
    a, b = generate(model, tok, ps, opts), generate(model, tok, ps, opts)
    assert [o.token_ids for o in a] == [o.token_ids for o in b]
    assert [o.prompt_index for o in a] == [0, 0, 0, 1, 1, 1]
    assert len({tuple(o.token_ids) for o in a}) > 2  # draws differ
    c = generate(model, tok, ps, DecodingOptions(**{**opts.__dict__, "seed": 8}))
    assert [o.token_ids for o in c] != [o.token_ids for o in a]


def test_no_repeat_ngram_output_has_no_repeated_ngram(lm):
    model, tok = lm
    (p,) = prompts(tok, 1, seed=7)
    opts = DecodingOptions(max_new_tokens=30, no_repeat_ngram_size=2, do_sample=True, seed=1)
    (out,) = generate(model, tok, [p], opts)
    seq = p + out.token_ids
    grams = list(zip(seq, seq[1:], strict=False))
    assert len(grams) == len(set(grams))


def test_stop_string_cuts_text_and_streams_the_same(lm):
    model, tok = lm
    (p,) = prompts(tok, 1, seed=8)
    opts = DecodingOptions(max_new_tokens=20)
    (full,) = generate(model, tok, [p], opts)
    words = full.text.split()
    assert len(words) > 4
    stop = f"{words[2]} {words[3]}"
    first = full.text.index(stop)
    (cut,) = generate(model, tok, [p], DecodingOptions(max_new_tokens=20, stop=[stop]))
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[:first]
    assert stop not in cut.text
    assert "".join(stream(model, tok, p, DecodingOptions(max_new_tokens=20, stop=[stop]))) == (
        cut.text
    )
    assert "".join(stream(model, tok, p, opts)) == full.text


class ByteTokenizer:
    """Token = one UTF-8 byte, as byte-level BPE can split a character."""

    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="replace")


def test_stream_deltas_hold_back_partial_characters_and_stop_strings():
    text = "héllo 世界 xyzEND tail"
    tracker = TextTracker(ByteTokenizer(), ["END"])
    pieces = []
    for b in text.encode():
        tracker.add(b)
        piece = tracker.delta()
        assert "\ufffd" not in piece
        assert "E" not in piece  # a possible start of END is held until it resolves
        pieces.append(piece)
        if tracker.stopped:
            break
    pieces.append(tracker.delta(final=True))
    assert "".join(pieces) == "héllo 世界 xyz" == tracker.text


@pytest.mark.parametrize(
    "bad",
    [
        dict(top_p=0.0),
        dict(top_p=1.5),
        dict(num_beams=2, num_return_sequences=3),
        dict(num_beams=2, do_sample=True),
        dict(temperature=-1.0),
        dict(max_new_tokens=0),
        dict(num_return_sequences=2),
        dict(min_p=1.0),
        dict(early_stopping="sometimes"),
        dict(stop=[""]),
        dict(context_window=8, n_keep=8),
    ],
)
def test_bad_options_are_one_line_errors(bad):
    with pytest.raises(TunelabError) as err:
        check_options(DecodingOptions(**bad))
    assert "\n" not in str(err.value)


def test_empty_prompt_and_encoder_model_are_refused(lm, tiny_models):
    model, tok = lm
    with pytest.raises(TunelabError, match="empty"):
        generate(model, tok, ["  "], DecodingOptions())
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(tiny_models["encoder"])
    with pytest.raises(TunelabError, match="language-model head|cannot generate"):
        generate(encoder, tok, ["the match"], DecodingOptions())
