"""Fixtures for the server tests: tiny served models (decoder with a chat template, encoder,
classification run) and a TestClient factory."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import toy_examples, write_csv

KEY = "test-key-0123456789"
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}assistant {% endif %}"
)


@pytest.fixture(scope="session")
def chat_decoder(tiny_models, tmp_path_factory):
    """The tiny decoder folder, with a chat template added to its tokenizer."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("chat") / "decoder"
    shutil.copytree(tiny_models["decoder"], folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def classify_run(tiny_models, tmp_path_factory):
    """A classification run folder: the tiny encoder fine-tuned on the toy topics."""
    from tunelab.cli import main

    root = tmp_path_factory.mktemp("serve-run")
    train = write_csv(root / "train.csv", toy_examples(60))
    args = ["finetune", "--model", str(tiny_models["encoder"]), "--data.train_file", str(train)]
    args += ["--data.val_size", "0.2", "--epochs", "2", "--lr", "3e-3"]
    args += ["--train.batch_size", "8", "--output", str(root), "--name", "toy"]
    assert main(args) == 0
    return root / "toy"


@pytest.fixture
def served_decoder(chat_decoder):
    from tunelab.serve import load_served

    return load_served(str(chat_decoder), "tiny-decoder", dtype="fp32")


@pytest.fixture
def client_for():
    """client_for(served, keys={name: key} or None, **settings) -> a started TestClient."""
    from fastapi.testclient import TestClient

    from tunelab.serve import ModelHolder, ServeSettings, create_app
    from tunelab.serve.auth import KeyChecker

    clients = []

    def make(served, keys=None, holder=None, **settings):
        app = create_app(
            ServeSettings(**settings),
            holder or ModelHolder.of(served),
            KeyChecker(keys or {}),
        )
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)
