"""`tunelab generate --choice / --regex / --json-schema / --json / --grammar` end to end, on a
tiny random Llama saved with a byte-level BPE tokenizer (the constraint does all the work)."""

from __future__ import annotations

import json
import re
import sys

import pytest

from tunelab.cli import main

pytest.importorskip("llguidance")
jsonschema = pytest.importorskip("jsonschema")

PROMPTS = ["the quick", "give me json", "yes or no?", "hello"]


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory):
    from tests.unit.decoding.test_constraints import tiny_bpe_lm

    folder = tmp_path_factory.mktemp("constrained") / "tiny-bpe"
    tiny_bpe_lm(folder, closer_bias=4.0)
    return folder


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _gen(folder, tmp_path, *flags, finished: bool = True) -> list[str]:
    """The texts; all of them finished (not cut at --max-new-tokens) when `finished`."""
    out = tmp_path / "out.jsonl"
    args = ["generate", str(folder), *PROMPTS, "--output", str(out), "--max-new-tokens", "64"]
    assert main([*args, *flags]) == 0
    rows = _rows(out)
    assert len(rows) == len(PROMPTS)
    if finished:
        assert all(r["finish_reason"] != "length" for r in rows), rows
    return [r["text"] for r in rows if r["finish_reason"] != "length"]


def test_each_flag_constrains_every_output(lm_folder, tmp_path):
    texts = _gen(lm_folder, tmp_path, "--choice", "red", "green", "blue")
    assert texts and all(t in ("red", "green", "blue") for t in texts)
    texts = _gen(lm_folder, tmp_path, "--regex", r"[0-9]{3}-[a-z]{2}", "--do-sample", "true")
    assert all(re.fullmatch(r"[0-9]{3}-[a-z]{2}", t) for t in texts)
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 0, "maximum": 99},
            "s": {"type": "string", "maxLength": 5},
        },
        "required": ["n", "s"],
        "additionalProperties": False,
    }
    (tmp_path / "s.json").write_text(json.dumps(schema))
    for t in _gen(lm_folder, tmp_path, "--json-schema", str(tmp_path / "s.json")):
        jsonschema.validate(json.loads(t), schema)
    # free JSON on random weights may still be writing at 64 tokens: judge the finished ones
    texts = _gen(lm_folder, tmp_path, "--json", finished=False)
    assert all(isinstance(json.loads(t), dict) for t in texts)
    (tmp_path / "g.lark").write_text('start: "a" NUM\nNUM: /[0-9]{1,2}/\n')
    texts = _gen(lm_folder, tmp_path, "--grammar", str(tmp_path / "g.lark"), "--num-beams", "2")
    assert all(re.fullmatch(r"a[0-9]{1,2}", t) for t in texts)


def _fails(capsys, *args) -> str:
    assert main(["generate", "no-such-model-needed", "hi", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_bad_constraints_exit_2_naming_the_flag(tmp_path, capsys):
    (tmp_path / "bad.json").write_text('{"type": "object", "not": {"type": "string"}}')
    err = _fails(capsys, "--json-schema", str(tmp_path / "bad.json"))
    assert "--json-schema" in err and '"not"' in err
    (tmp_path / "broken.json").write_text("{nope")
    assert "--json-schema" in _fails(capsys, "--json-schema", str(tmp_path / "broken.json"))
    assert "--json-schema" in _fails(capsys, "--json-schema", str(tmp_path / "missing.json"))
    (tmp_path / "g.lark").write_text("start: undefined_rule\n")
    assert "--grammar" in _fails(capsys, "--grammar", str(tmp_path / "g.lark"))
    assert "--regex" in _fails(capsys, "--regex", "(?<=a)b")
    assert "not allowed with" in _fails(capsys, "--json", "--regex", "a")  # one of them only


def test_missing_llguidance_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "llguidance", None)
    err = _fails(capsys, "--regex", "a+")
    assert "pip install tunelab[constrained]" in err


def test_python_api_takes_the_same_constraints(lm_folder):
    from tunelab import api
    from tunelab.decoding import DecodingOptions
    from tunelab.decoding.constraints import Constraint

    outs = api.generate(str(lm_folder), PROMPTS, constraint=Constraint.choice(["up", "down"]))
    assert [o.text in ("up", "down") for o in outs] == [True] * len(PROMPTS)
    opts = DecodingOptions(max_new_tokens=16, constraint=Constraint.regex("[a-c]{2,4}"))
    pieces = "".join(p for _, p in api.stream(str(lm_folder), PROMPTS[:1], opts))
    assert re.fullmatch("[a-c]{2,4}", pieces)
