"""`tunelab serve` refuses bad input in one line (exit 2) before it binds anything."""

from __future__ import annotations

import pytest

from tunelab.cli import main
from tunelab.serve.server import _is_loopback


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("tunelab: error: ") and "\n" not in err and "Traceback" not in err
    return err


# --port 0 (any free port) so that a server already on 8000 does not answer first: these
# inputs are refused before anything binds


def test_missing_model(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nope"), "--port", "0"]) == 2
    assert "not a model" in _err(capsys)


def test_bad_keys(tiny_models, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TUNELAB_API_KEYS", raising=False)
    args = ["serve", str(tiny_models["decoder"]), "--port", "0"]
    assert main([*args, "--keys-file", str(tmp_path / "k")]) == 2
    assert "keys file" in _err(capsys)
    monkeypatch.setenv("TUNELAB_API_KEYS", "short")
    assert main(args) == 2
    assert "shorter than 8" in _err(capsys)


def test_bad_numbers(tiny_models, capsys):
    assert main(["serve", str(tiny_models["decoder"]), "--max-queue", "0"]) == 2
    assert "--max-queue must be positive" in _err(capsys)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("192.168.1.5", False),
        ("example.com", False),
    ],
)
def test_loopback(host, loopback):
    assert _is_loopback(host) is loopback
