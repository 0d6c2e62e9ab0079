"""The hashed keys file and `tunelab keys`: only salted hashes are kept, scopes are checked
names, plain files keep working and migrate, bad input is one line with exit code 2."""

from __future__ import annotations

import json

import pytest

from tunelab.cli import main
from tunelab.errors import TunelabError
from tunelab.serve import keys as K
from tunelab.serve.auth import KeyChecker, read_keys


def test_create_keeps_only_a_salted_hash(tmp_path):
    path = tmp_path / "keys.json"
    rec, key = K.create_key(str(path), "alice", "chat,completions", "tiny-*", 500)
    other, key2 = K.create_key(str(path))
    text = path.read_text()
    assert key not in text and key2 not in text and len(key) > 40 and key != key2
    assert key[len(K.KEY_PREFIX) :] not in text  # not even the random part
    data = json.loads(text)
    assert data["format"] == K.FORMAT and len(data["keys"]) == 2
    assert data["keys"][0]["sha256"] == K.hash_key(data["salt"], key)
    assert "salt" not in data["keys"][0]  # the salt is the file's, written once
    assert (path.stat().st_mode & 0o777) == 0o600
    assert rec.endpoints == ["chat", "completions"] and rec.models == ["tiny-*"]
    assert rec.tokens_per_day == 500 and other.id.startswith("key-") and other.endpoints == ["*"]
    # a second file's salt differs: the same key would hash differently there
    _, _ = K.create_key(str(tmp_path / "b.json"))
    assert json.loads((tmp_path / "b.json").read_text())["salt"] != data["salt"]


def test_served_keys_identify_and_revoke(tmp_path):
    path = tmp_path / "keys.json"
    _, alice = K.create_key(str(path), "alice", "chat")
    _, bob = K.create_key(str(path), "bob")
    checker = KeyChecker(read_keys(str(path), {"TUNELAB_API_KEYS": "env-key-12345"}))
    assert checker.identify(alice) == "alice" and checker.identify(bob) == "bob"
    assert checker.identify("env-key-12345") == "env-3"  # the environment's keys: plain
    assert checker.identify(alice + "x") is None and checker.identify(alice[:-1]) is None
    assert checker.record("alice").endpoints == ["chat"] and checker.record("env-3") is None
    K.revoke_key(str(path), "alice")
    checker = KeyChecker(read_keys(str(path), {}))
    assert checker.identify(alice) is None and checker.identify(bob) == "bob"
    assert [k.revoked is not None for k in K.list_keys(str(path))] == [True, False]


def test_scope_checks():
    rec = K.StoredKey("a", "0" * 64, endpoints=["chat"], models=["smollm2-*", "exact"])
    assert rec.allows_endpoint("/v1/chat/completions")
    assert not rec.allows_endpoint("/v1/completions") and not rec.allows_endpoint("/v1/models")
    assert rec.allows_endpoint("/v1/nothing-here")  # no such route: a 404, not a 403
    assert rec.allows_model("smollm2-135m") and rec.allows_model("exact")
    assert not rec.allows_model("exactly") and not rec.allows_model("gpt2")
    everything = K.StoredKey("b", "0" * 64)
    assert everything.allows_endpoint("/v1/embeddings") and everything.allows_model("x")
    assert K.parse_endpoints(None) == ["*"] and K.parse_endpoints(" * ") == ["*"]
    assert K.parse_endpoints("score,chat,chat") == ["chat", "score"]
    with pytest.raises(TunelabError, match="--endpoints: unknown endpoint 'chats'"):
        K.parse_endpoints("chat,chats")
    with pytest.raises(TunelabError, match="--models"):
        K.parse_models("a,,b")


def test_every_v1_route_has_a_scope_name():
    from tunelab.serve import ModelHolder, ServeSettings, create_app

    app = create_app(ServeSettings(), ModelHolder("not-loaded"), KeyChecker({}))
    routes = {p for p in app.openapi()["paths"] if p.startswith("/v1/")}
    assert routes == set(K.ENDPOINTS.values())


def test_plain_files_keep_working_and_migrate(tmp_path, caplog):
    path = tmp_path / "keys.txt"
    path.write_text("# team\nalice alice-secret-1\nbare-secret-key-2\n")
    with caplog.at_level("WARNING", logger="tunelab.serve"):
        plain = read_keys(str(path), {})
    assert plain == {"alice": "alice-secret-1", "key-2": "bare-secret-key-2"}
    assert "tunelab keys migrate" in caplog.text and "alice-secret-1" not in caplog.text
    with pytest.raises(TunelabError, match="holds plain keys: .*tunelab keys migrate"):
        K.create_key(str(path))
    assert K.migrate_keys(str(path)) == 2
    text = path.read_text()
    assert "alice-secret-1" not in text and "bare-secret-key-2" not in text
    checker = KeyChecker(read_keys(str(path), {}))
    assert checker.identify("alice-secret-1") == "alice"
    assert checker.identify("bare-secret-key-2") == "key-2"
    with pytest.raises(TunelabError, match="already hashed"):
        K.migrate_keys(str(path))


@pytest.mark.parametrize(
    "text, why",
    [
        ("{not json", "invalid JSON"),
        ('{"format": "other/1", "salt": "00", "keys": []}', "expected"),
        ('{"format": "tunelab-keys/1", "salt": "xyz", "keys": []}', "salt"),
        (
            '{"format": "tunelab-keys/1", "salt": "' + "a" * 32 + '", "keys": [{"id": "a"}]}',
            "key 1",
        ),
        (
            '{"format": "tunelab-keys/1", "salt": "' + "a" * 32 + '", "keys": [{"id": "a", '
            '"sha256": "' + "b" * 64 + '", "endpoints": ["chat", "nope"]}]}',
            "unknown endpoint 'nope'",
        ),
    ],
)
def test_malformed_keys_files_are_one_line_errors(tmp_path, text, why):
    path = tmp_path / "keys.json"
    path.write_text(text)
    with pytest.raises(TunelabError, match=why) as e:
        read_keys(str(path), {})
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_cli(tmp_path, capsys):
    path = str(tmp_path / "keys.json")
    assert (
        main(["keys", "create", "--keys-file", path, "--name", "alice", "--endpoints", "chat"]) == 0
    )
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert key.startswith(K.KEY_PREFIX) and key not in (tmp_path / "keys.json").read_text()
    assert main(["keys", "list", "--keys-file", path]) == 0
    out = capsys.readouterr().out
    assert "alice" in out and "endpoints chat" in out and key not in out
    assert main(["keys", "revoke", "alice", "--keys-file", path]) == 0
    assert "revoked alice" in capsys.readouterr().out
    bad = [
        (["create", "--keys-file", path, "--endpoints", "chat,files"], "--endpoints"),
        (["create", "--keys-file", path, "--name", "alice"], "--name alice"),
        (["create", "--keys-file", path, "--name", "has space"], "--name"),
        (["create", "--keys-file", path, "--tokens-per-day", "-5"], "--tokens-per-day"),
        (["list", "--keys-file", str(tmp_path / "missing.json")], "--keys-file"),
        (["revoke", "nobody", "--keys-file", path], "nobody"),
        (["migrate", "--keys-file", path], "already hashed"),
        (["list"], "--keys-file"),
    ]
    for argv, named in bad:
        assert main(["keys", *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("tunelab: error:") and named in err and "\n" not in err, err
