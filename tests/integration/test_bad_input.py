"""Bad input on every verb: exit code 2, one line on stderr naming what to fix, no traceback,
nothing written (the cases run in a temporary working folder, so default outputs such as
runs/ or reports/ count too). Each case here failed (traceback, wrong exit code, a misleading
hint or a file left behind) before it was fixed, or guards a fix of the hardening issue.

{run} is a tiny finished classifier, {gen} a tiny causal_lm run (full weights, so it is also
a plain decoder LM), {enc} and {dec} the tiny encoder and decoder model folders."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from tests.conftest import toy_examples, write_csv
from tests.integration.conftest import toy_classifier_run
from tunelab.cli import main

PAIRS = [{"prompt": f"the match {i}", "response": "goal team win"} for i in range(24)]


@pytest.fixture(scope="module")
def run(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-input")
    return toy_classifier_run(tiny_models["encoder"], root, 60, 2, 1e-4)


@pytest.fixture(scope="module")
def gen(tiny_models, tmp_path_factory):
    """A causal_lm run of the tiny decoder, two steps of full fine-tuning."""
    from tunelab import api

    root = tmp_path_factory.mktemp("bad-input-gen")
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    cfg = api.build_config(
        overrides={
            "task": "causal_lm",
            "model.name": str(tiny_models["decoder"]),
            "data.source": str(pairs),
            "data.max_length": 32,
            "train.max_steps": 2,
            "train.batch_size": 8,
            "train.threads": 1,
            "run.output_dir": str(root / "runs"),
            "run.name": "lm",
        }
    )
    return api.finetune(cfg, quiet=True).run_dir


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
    (tmp_path / "empty.txt").write_text("")
    write_csv(tmp_path / "nolabel.csv", [{"text": r["text"]} for r in toy_examples(12)])
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    (tmp_path / "broken.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b", \n')
    (tmp_path / "garbage.parquet").write_bytes(b"PAR1 this is not parquet")
    (tmp_path / "garbage.gguf").write_bytes(b"not a gguf file at all")
    (tmp_path / "truncated.gguf").write_bytes(b"GGUF\x03\x00\x00\x00garbage")
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "unknown.yaml").write_text("train:\n  lrr: 1\n")
    (tmp_path / "gen.yaml").write_text("task: causal_lm\n")
    (tmp_path / "empty.keys").write_text("")
    (tmp_path / "comments.keys").write_text("# nobody yet\n\n")
    return tmp_path


def _no_server(*args, **kwargs):
    raise AssertionError("the server started: the bad input was not refused")


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
    # what argparse refuses: one line naming the verb's --help, no usage block
    ("frobnicate", "invalid choice: 'frobnicate'"),
    ("finetune --nope 1", "unrecognized arguments: --nope (see tunelab finetune --help)"),
    ("compare --strategies full,freeze --nope", "see tunelab compare --help"),
    ("pretrain --objective nope", "argument --objective: invalid choice: 'nope'"),
    ("score {gen} x --chat-template maybe", "argument --chat-template: invalid choice"),
    ("generate {gen} hello --chat-template on", "unrecognized arguments: --chat-template"),
    ("generate {gen} hello --stop", "argument --stop: expected at least one"),
    ("serve {run} --log-level loud", "argument --log-level: invalid choice: 'loud'"),
    ("eval {run}", "required: --data (see tunelab eval --help)"),
    ("predict {run} x --batch-size many", "argument --batch-size: invalid int value"),
    ("compare-decoding {gen} --out {tmp}/rep", "required: --data"),
    ("models nope", "see tunelab models --help"),
    ("data", "required: ACTION (see tunelab data --help)"),
    # finetune
    ("finetune {tmp}/bad.yaml", "bad.yaml is not valid YAML at line 2"),
    ("finetune {tmp}/nope.yaml", "nope.yaml not found"),
    ("finetune {tmp}/list.yaml", "must hold a mapping of sections"),
    ("finetune {tmp}/unknown.yaml", "unknown option train.lrr"),
    ("finetune --train.lr -1", "train.lr must be positive"),
    ("finetune --train.lr abc", "train.lr expects float, got 'abc'"),
    ("finetune --task nope", "task must be one of classification, causal_lm, seq2seq"),
    ("finetune --train.metric nope --model {enc} --data {tmp}/toy.csv", "--train.metric"),
    ("finetune --train.patience 0", "train.patience must be at least 1"),
    ("finetune --train.threads 0", "train.threads must be at least 1"),
    ("finetune --data.test_size 1.5", "--data.test_size is 1.5"),
    ("finetune --strategy lora --lora.r 0", "--lora.r must be at least 1"),
    ("finetune --strategy lora --lora.alpha 0", "--lora.alpha must be at least 1"),
    ("finetune --strategy prompt --prompt.num_virtual_tokens 0", "--prompt.num_virtual_tokens"),
    ("finetune --data {tmp}/nope.csv", "nope.csv does not exist"),
    ("finetune --model {enc} --data {tmp}/nolabel.csv", "with --data.label_column"),
    ("finetune --model {enc} --data {tmp}/toy.csv --data.text_column label", "both name"),
    (
        "finetune --model {enc} --data {tmp}/garbage.parquet",
        "garbage.parquet is not a readable parquet file",
    ),
    ("finetune --model {enc} --data {tmp}/broken.jsonl", "broken.jsonl line 2 column"),
    ("finetune --model {tmp}/a_file --data {tmp}/toy.csv", "a_file is a file, not a model"),
    ("finetune --task causal_lm --model {dec} --data {tmp}/toy.csv", "--data.prompt_column"),
    ("finetune --task causal_lm --model {enc} --data {tmp}/pairs.jsonl", "needs a decoder"),
    ("finetune --task seq2seq --model {dec} --data {tmp}/pairs.jsonl", "with --task causal_lm"),
    # compare
    ("compare --strategies full --data {tmp}/toy.csv", "a comparison needs at least two"),
    ("compare --strategies full,nope", "unknown strategy 'nope'"),
    ("compare --strategies full,full", "listed twice in --strategies"),
    ("compare {tmp}/bad.yaml --strategies full,freeze", "not valid YAML"),
    ("compare --config {tmp}/nope.yaml --strategies full,freeze", "nope.yaml not found"),
    ("compare {tmp}/gen.yaml --strategies full,freeze", "compares classifiers"),
    ("compare --strategies full,freeze --train.max_steps 0", "train.max_steps must be at least 1"),
    ("compare --strategies full,freeze --data {tmp}/nope.csv", "nope.csv does not exist"),
    ("compare --strategies full,freeze --data {tmp}/nolabel.csv", "--data.label_column"),
    ("compare --strategies full,freeze --data {tmp}/toy.csv --output {tmp}/a_file", "--output"),
    # compress
    ("compress {run} --threads 0", "--compress.threads must be at least 1"),
    ("compress {run} --compress.eval_limit 0", "--compress.eval_limit must be at least 1"),
    ("compress {run} --compress.batch_size 0", "--compress.batch_size must be at least 1"),
    ("compress {run} --distill.temperature 0", "--distill.temperature must be above 0"),
    ("compress {run} --methods prune-150", "--methods prune-150: the percentage"),
    ("compress {run} --methods distill-0", "--methods distill-0: the student layers"),
    ("compress {run} --methods int8-dynamic,int8-dynamic", "listed twice in --methods"),
    ("compress {run} --config {tmp}/bad.yaml", "not valid YAML"),
    # pretrain
    ("pretrain {tmp}/bad.yaml", "not valid YAML"),
    ("pretrain --objective mlm --corpus {tmp}/nope.txt", "corpus {tmp}/nope.txt not found"),
    ("pretrain --objective mlm --corpus {tmp}/empty.txt", "holds no text: pass a --corpus"),
    ("pretrain --objective mlm --corpus {tmp}/garbage.parquet", "garbage.parquet: pass a .txt"),
    ("pretrain --objective mlm --corpus {tmp}/toy.csv --text-column x", "set --text-column"),
    ("pretrain --objective mlm --preset huge", "unknown preset 'huge'"),
    ("pretrain --objective mlm --pretrain.mlm_probability 1.5", "pretrain.mlm_probability"),
    ("pretrain --objective clm --from {enc} --corpus {tmp}/toy.csv", "matching --from"),
    ("pretrain --objective mlm --from {run} --preset tiny", "--preset builds a new model"),
    ("pretrain --objective clm --from {gen} --tokenizer {tmp}/nope", "model {tmp}/nope not found"),
    ("pretrain --objective mlm --corpus {tmp}/toy.csv --output {tmp}/a_file", "--output"),
    # score
    ("score {enc} hello", "is an encoder"),
    ("score {tmp}/nope hello", "model {tmp}/nope not found"),
    ("score {gen}", "nothing to score"),
    ("score {gen} hello --window 0", "--window must be at least 2"),
    ("score {gen} hello --stride 0", "--stride 0 needs a --window"),
    ("score {gen} hello --batch-size 0", "--batch-size must be at least 1"),
    ("score {gen} --data {tmp}/pairs.jsonl --limit 0", "--limit must be at least 1"),
    ("score {gen} hello --whole-file", "--whole-file reads the --file"),
    ("score {gen} --file {tmp}/nope.txt", "--file {tmp}/nope.txt does not exist"),
    ("score {gen} --file {tmp}/empty.txt", "no texts in"),
    ("score {gen} --file {tmp}/toy.csv --text-column nope", "with --text-column"),
    ("score {gen} --data {tmp}/toy.csv", "with --data.prompt_column"),
    # generate
    ("generate {enc} hello", "is an encoder"),
    ("generate {gen}", "no prompts"),
    ("generate {gen} hello --temperature -1", "--temperature must be >= 0"),
    ("generate {gen} hello --top-p 2", "--top-p must be in (0, 1]"),
    ("generate {gen} hello --max-new-tokens 0", "--max-new-tokens must be at least 1"),
    ("generate {gen} hello --num-beams 0", "--num-beams must be at least 1"),
    ("generate {gen} hello --num-beams 2 --do-sample true", "set --do-sample false"),
    ("generate {gen} hello --do-sample maybe", "--do-sample expects bool"),
    ("generate {gen} hello --batch-size 0", "--batch-size must be at least 1"),
    ("generate {gen} hello --system hi", "--system is the system message of --chat"),
    ("generate {gen} --file {tmp}/empty.txt", "no texts in"),
    ("generate {gen} --file {tmp}/broken.jsonl", "broken.jsonl line 2"),
    ("generate {gen} --file {tmp}/toy.csv", "with --prompt-key"),
    # compare-decoding
    ("compare-decoding {run} --data {tmp}/pairs.jsonl", "is a classification run"),
    ("compare-decoding {enc} --data {tmp}/pairs.jsonl", "is an encoder"),
    ("compare-decoding {gen} --data {tmp}/pairs.jsonl --strategies nope", "unknown strategy"),
    ("compare-decoding {gen} --data {tmp}/pairs.jsonl --strategies ,", "no strategies"),
    ("compare-decoding {gen} --data {tmp}/pairs.jsonl --strategies top-p2", "--strategies top-p2"),
    ("compare-decoding {gen} --data {tmp}/pairs.jsonl --max-new-tokens 0", "--max-new-tokens"),
    ("compare-decoding {gen} --data {tmp}/pairs.jsonl --batch-size 0", "--batch-size"),
    ("compare-decoding {gen} --data {tmp}/pairs.jsonl --limit 0", "--limit must be at least 1"),
    ("compare-decoding {gen} --data {tmp}/pairs.jsonl --template nothing", "--template"),
    ("compare-decoding {gen} --data {tmp}/pairs.jsonl --out {tmp}/a_file", "--out"),
    ("compare-decoding {gen} --data {tmp}/nope.jsonl", "nope.jsonl does not exist"),
    ("compare-decoding {gen} --data {tmp}/toy.csv", "with --data.prompt_column"),
    # serve (--port 0: the cases must not depend on port 8000 being free)
    ("serve {run} --port 0 --keys-file {tmp}/empty.keys", "--keys-file {tmp}/empty.keys holds no"),
    ("serve {run} --port 0 --keys-file {tmp}/comments.keys", "holds no keys"),
    ("serve {run} --port 0 --keys-file {tmp}/nope.keys", "pass an existing --keys-file"),
    ("serve {run} --port -1", "--port must be 0-65535"),
    ("serve {run} --port 0 --max-queue 0", "--max-queue must be positive"),
    ("serve {run} --port 0 --request-timeout 0", "--request-timeout must be above 0"),
    ("serve {run} --port 0 --rate-limit -1", "--rate-limit must be 0 or more"),
    ("serve {tmp}/nope --port 0", "is not a model"),
    ("serve {tmp}/out --port 0", "is not a model folder"),
    ("serve {tmp}/corrupt --port 0", "is corrupt"),
    # eval
    ("eval {run} --data {tmp}/nope.csv", "nope.csv does not exist"),
    ("eval {run} --data {tmp}/nolabel.csv", "with --data.label_column"),
    ("eval {run} --data {tmp}/pairs.jsonl", "with --data.text_column"),
    ("eval {run} --data {tmp}/toy.csv --label-column text", "both name column 'text'"),
    ("eval {run} --data {tmp}/garbage.parquet", "garbage.parquet is not a readable parquet file"),
    ("eval {run} --data {tmp}/broken.jsonl", "broken.jsonl line 2"),
    ("eval {run} --data {tmp}/toy.csv --limit 0", "--limit must be at least 1"),
    ("eval {enc} --data {tmp}/toy.csv", "not a tunelab run folder"),
    ("eval {tmp}/corrupt --data {tmp}/toy.csv", "is corrupt"),
    ("eval {gen} --data {tmp}/toy.csv", "with --data.prompt_column"),
    ("eval {gen} --data {tmp}/pairs.jsonl --max-new-tokens 0", "--max-new-tokens must be"),
    ("eval {gen} --data {tmp}/pairs.jsonl --top-p 2", "--top-p must be in (0, 1]"),
    ("eval {gen} --data {tmp}/pairs.jsonl --batch-size 0", "--batch-size must be at least 1"),
    # predict
    ("predict {gen} hello", "is a causal_lm run: this verb needs a classifier"),
    ("predict {enc} hello", "not a tunelab run folder"),
    ("predict {run} x --output {tmp}/p.parquet", "name a .jsonl or .csv file"),
    ("predict {run} --file {tmp}/nope.txt", "--file {tmp}/nope.txt does not exist"),
    ("predict {run} --file {tmp}/empty.txt", "no texts in"),
    ("predict {run} --file {tmp}/toy.csv --text-column nope", "with --text-column"),
    (
        "predict {run} --file {tmp}/garbage.parquet",
        "garbage.parquet is not a readable parquet file",
    ),
    ("predict {run} --file {tmp}/broken.jsonl", "broken.jsonl line 2"),
    # models
    ("models convert {tmp}/nope.gguf", "nope.gguf not found"),
    ("models convert {tmp}/toy.csv", "is not a .gguf file"),
    ("models convert {tmp}/garbage.gguf", "is not a GGUF file"),
    ("models convert {tmp}/truncated.gguf", "cannot read"),
    ("models convert {tmp}/truncated.gguf --out {tmp}/a_file", "--out {tmp}/a_file is a file"),
    # data inspect
    ("data inspect {tmp}/nope.csv", "nope.csv does not exist"),
    ("data inspect {tmp}/empty.csv", "holds no rows"),
    ("data inspect {tmp}/toy.csv --label-column nope", "with --data.label_column"),
    ("data inspect {tmp}/toy.csv --text-column label", "both name column 'label'"),
    ("data inspect {tmp}/garbage.parquet", "garbage.parquet is not a readable parquet file"),
    ("data inspect {tmp}/broken.jsonl", "broken.jsonl line 2"),
    ("data inspect {tmp}/toy.csv --model {tmp}/nope", "model {tmp}/nope not found"),
]


CHEAP = {
    "finetune": "--model {enc} --data {tmp}/toy.csv --train.max_steps 1 --train.threads 1",
    "compare": "--model {enc} --data {tmp}/toy.csv --train.max_steps 1",
    "pretrain": "--corpus {tmp}/toy.csv --max-steps 1",
    "compress": "--methods bf16",
}
"""Flags put before a case's own (which win over them): should a check stop working, the
verb does a tiny run instead of the default model and data, and the test fails fast."""


@pytest.mark.parametrize(
    ("argv", "message"), CASES, ids=[c[0].split(" {")[0] + str(i) for i, c in enumerate(CASES)]
)
def test_bad_input_is_one_line_and_exit_2(
    argv, message, run, gen, tiny_models, files, capsys, monkeypatch
):
    monkeypatch.chdir(files)  # default outputs (runs/, reports/) land here, and count
    monkeypatch.setattr("tunelab.serve.server.make_server", _no_server)
    paths = {"run": run, "gen": gen, "tmp": files}
    paths |= {"enc": tiny_models["encoder"], "dec": tiny_models["decoder"]}
    before = sorted(p.relative_to(files) for p in files.rglob("*"))
    verb, _, rest = argv.partition(" ")
    code = main(f"{verb} {CHEAP.get(verb, '')} {rest}".format(**paths).split())
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("tunelab: error: "), err
    assert message.format(**paths) in err[0], err[0]
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
        "usage = main(['finetune', '--nope'])\n"  # what argparse refuses, too
        "score = main(['score', 'x', 'y', '--window', '1'])\n"
        "print(code, usage, score, 'torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", "2", "2", "False", "False"]
