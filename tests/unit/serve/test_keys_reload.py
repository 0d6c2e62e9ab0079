"""A server reads its keys file again when it changes: a revoked key is refused, a new one
accepted, without a restart; an all-revoked file keeps authentication on (nothing is let
in), and `tunelab serve` says so in one line instead of "holds no keys"."""

from __future__ import annotations

import os

import pytest

from tunelab.serve.auth import KeyChecker, read_keys
from tunelab.serve.errors import APIError
from tunelab.serve.keys import create_key, revoke_key


def _bearer(key: str) -> str:
    return f"Bearer {key}"


def _touch_later(path) -> None:
    """Move the file's modification time on (the same second may not change it)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def test_revoke_and_create_take_effect_without_a_restart(tmp_path):
    path = tmp_path / "keys.json"
    _, alice = create_key(str(path), "alice")
    now = [0.0]
    checker = KeyChecker(read_keys(str(path), {}), keys_file=str(path), clock=lambda: now[0])
    assert checker.check(_bearer(alice)) == "alice"

    revoke_key(str(path), "alice")
    _, bob = create_key(str(path), "bob")
    _touch_later(path)
    assert checker.check(_bearer(alice)) == "alice"  # looked at most once a second
    now[0] += 1.5
    with pytest.raises(APIError) as refused:
        checker.check(_bearer(alice))
    assert refused.value.status == 401
    assert checker.check(_bearer(bob)) == "bob"

    revoke_key(str(path), "bob")  # every key revoked: still on, nobody gets in
    _touch_later(path)
    now[0] += 1.5
    assert checker.enabled
    with pytest.raises(APIError):
        checker.check(None)
    with pytest.raises(APIError):
        checker.check(_bearer(bob))


def test_a_broken_file_keeps_the_keys_in_use(tmp_path):
    path = tmp_path / "keys.json"
    _, alice = create_key(str(path), "alice")
    now = [0.0]
    checker = KeyChecker(read_keys(str(path), {}), keys_file=str(path), clock=lambda: now[0])
    path.write_text("{ not json")
    now[0] += 2
    assert checker.check(_bearer(alice)) == "alice"


def test_serve_names_an_all_revoked_file(tmp_path, capsys):
    from tunelab.cli import main

    path = tmp_path / "keys.json"
    create_key(str(path), "alice")
    revoke_key(str(path), "alice")
    assert main(["serve", "tiny", "--keys-file", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "every key in it is revoked" in err[0], err
    assert "tunelab keys create" in err[0]
