"""The CLI: every verb documents its options; every user mistake is one line and exit code 2."""

from __future__ import annotations

import dataclasses

import pytest

from tests.conftest import toy_examples, write_csv
from tunelab.cli import build_parser, main
from tunelab.config.finetune import SECTIONS
from tunelab.strategies import STRATEGIES


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


def test_finetune_help_lists_every_option(capsys):
    text = _help(capsys, "finetune")
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert f"--{section}.{f.name}" in text
    for name, strat in STRATEGIES.items():
        for f in dataclasses.fields(strat.options):
            assert f"--{name}.{f.name}" in text
    assert "Peak learning rate" in text  # docstrings become the help text


@pytest.mark.parametrize(
    "verb", [("eval",), ("predict",), ("models",), ("models", "convert"), ("data", "inspect")]
)
def test_every_verb_has_help(capsys, verb):
    text = _help(capsys, *verb)
    assert "usage: tunelab" in text


def test_parser_knows_all_verbs():
    sub = next(a for a in build_parser()._actions if a.dest == "verb")
    assert {"finetune", "eval", "predict", "models", "data"} <= set(sub.choices)


def _rows(label_of=lambda i: ["a", "b"][i % 2], n=10):
    return [{"text": f"example number {i}", "label": label_of(i)} for i in range(n)]


@pytest.fixture
def bad_inputs(tmp_path):
    one_class = write_csv(tmp_path / "one.csv", _rows(lambda i: "a"))
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    good = write_csv(tmp_path / "good.csv", toy_examples(30))
    return {"one_class": one_class, "empty": empty, "good": good}


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["finetune", "--data", "/no/such/file.csv"], ["/no/such/file.csv"]),
        (["finetune", "--data", "{good}", "--data.label_column", "topic"], ["topic", "label"]),
        (["finetune", "--data", "{one_class}"], ["one class"]),
        (["finetune", "--data", "{empty}"], ["holds no rows"]),
        (["finetune", "--data", "{good}", "--strategy", "magic"], ["unknown strategy"]),
        (["finetune", "--data", "{good}", "--train.schedule", "wavy"], ["unknown schedule"]),
        (["finetune", "--data", "{good}", "--model", "someone/some-model"], ["offline"]),
        (["finetune", "missing.yaml"], ["missing.yaml"]),
        (["eval", "{tmp}", "--data", "{good}"], ["not a tunelab run folder"]),
        (["predict", "{tmp}/nowhere", "some text"], ["not a tunelab run folder"]),
        (["data", "inspect", "/no/such/dir"], ["/no/such/dir"]),
        (["models", "convert", "/no/such.gguf"], ["not found"]),
    ],
)
def test_user_mistakes_are_one_line_exit_2(capsys, monkeypatch, tmp_path, bad_inputs, argv, words):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "runs"
    paths = {**{k: str(v) for k, v in bad_inputs.items()}, "tmp": str(tmp_path)}
    argv = [a.format(**paths) for a in argv]
    if argv[0] == "finetune":
        argv += ["--output", str(out)]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tunelab: error: "), err
    for w in words:
        assert w in lines[0]
    # nothing half-written: no run folder, finished or partial
    assert not out.exists() or not any(out.iterdir())
