"""Bad input on every verb: exit code 2, one line on stderr naming what to fix, no traceback,
nothing written. Each case here failed (traceback, wrong exit code or a misleading hint)
before it was fixed, or guards a fix of the hardening issue."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.conftest import toy_examples, write_csv
from tests.integration.conftest import toy_classifier_run
from tunelab.cli import main


@pytest.fixture(scope="module")
def run(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-input")
    return toy_classifier_run(tiny_models["encoder"], root, 60, 2, 1e-4)


@pytest.fixture
def files(tmp_path, run):
    import shutil

    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("text,label\n")
    (tmp_path / "blank.txt").write_text("first\n\nthird\n")
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "out").mkdir()
    write_csv(tmp_path / "toy.csv", toy_examples(12))
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 100)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(run, corrupt)
    (corrupt / "tunelab_run.json").write_text("{not json")
    return tmp_path


def _busy_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


CASES = [
    ("predict {run} x --batch-size 0", "--batch-size must be at least 1"),
    ("predict {run}", "no texts to classify"),
    ("predict {tmp}/nope x", "not a tunelab run folder"),
    ("predict {run} --file {tmp}/blank.txt", "line 2 of"),
    ("predict {run} x --output {tmp}/out", "is a folder"),
    ("predict {run} x --output {tmp}/missing/out.jsonl", "create it first"),
    ("predict {tmp}/broken x", "do not load"),
    ("predict {tmp}/corrupt x", "is corrupt"),
    ("eval {run} --data {tmp}/empty.csv", "holds no rows"),
    ("eval {run} --data {tmp}/header.csv", "holds no rows"),
    ("eval {run} --data {tmp}/toy.csv --batch-size 0", "--batch-size must be at least 1"),
    ("eval {run} --data {tmp}/toy.csv --data.text_column nope", "nope"),
    ("eval {run} --data {tmp}/toy.csv --json {tmp}/out", "is a folder"),
    ("data inspect {tmp}/toy.csv --data.text_column nope", "nope"),
    ("finetune --output {tmp}/a_file --data {tmp}/toy.csv", "pick a writable --output"),
    ("finetune --train.max_steps 0 --data {tmp}/toy.csv", "train.max_steps must be at least 1"),
    ("finetune --strategy nope", "unknown strategy 'nope'"),
    ("serve {run} --port 99999", "--port must be 0-65535"),
    ("compress {run} --methods int3", "unknown compression method 'int3'"),
    ("compress {tmp}/nope", "not a tunelab run folder"),
    ("compress {run} --output {tmp}/a_file", "--output"),
    ("compress {run} --compress.recovery_strategy prompt", "do not fold back"),
    ("compress {run} --compress.recovery_strategy nope", "unknown strategy 'nope'"),
    ("pretrain --train.grad_accum 0", "train.grad_accum must be at least 1"),
    ("pretrain --max-steps 0", "train.max_steps must be at least 1"),
    ("generate {run} hello", "is a classification run"),
    ("score {run} hello", "is a classification run"),
    ("generate {run} hello --output {tmp}/out", "is a folder"),
    ("score {run} hello --output {tmp}/missing/s.jsonl", "create it first"),
]


@pytest.mark.parametrize(
    ("argv", "message"), CASES, ids=[c[0].split(" {")[0] + str(i) for i, c in enumerate(CASES)]
)
def test_bad_input_is_one_line_and_exit_2(argv, message, run, files, capsys):
    before = sorted(p.relative_to(files) for p in files.rglob("*"))
    code = main(argv.format(run=run, tmp=files).split())
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("tunelab: error: "), err
    assert message in err[0]
    assert "Traceback" not in err[0]
    assert sorted(p.relative_to(files) for p in files.rglob("*")) == before  # nothing written


def test_a_port_in_use_is_one_line(run, capsys):
    sock = _busy_port()
    try:
        code = main(["serve", str(run), "--port", str(sock.getsockname()[1])])
    finally:
        sock.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot listen on" in err[0]


def test_a_mistake_is_answered_before_torch_loads(tmp_path):
    probe = (
        "import sys\n"
        "from tunelab.cli import main\n"
        f"code = main(['predict', {str(tmp_path / 'nope')!r}, 'x'])\n"
        "print(code, 'torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", "False", "False"]
