"""The hashed keys file: API keys with scopes and quotas, of which only salted hashes are kept.

    tunelab keys create --keys-file keys.json --name alice --endpoints chat,completions \\
        --models 'smollm2-*' --tokens-per-day 200000      # prints the key once
    tunelab keys list --keys-file keys.json
    tunelab keys revoke alice --keys-file keys.json
    tunelab keys migrate --keys-file keys.txt             # a plain file -> hashes, in place

The file is JSON: a random per-file `salt` and one record per key with its id, the hex
SHA-256 of salt + key, its scopes (endpoint names, model name patterns), its daily token
quota and when it was created or revoked. A plain SHA-256 (not a slow password hash) is
right here: keys are 256-bit random strings made by `create`, so a stolen file cannot be
brute-forced, and the server hashes every request's key once. The salt makes the hashes of
one file useless against another. Old plain files (`KEY` or `NAME KEY` per line) still work
when served (every scope, no quota); `migrate` hashes them. Writes go to a temporary file
renamed over the old one, mode 0600.

Imports only the standard library: `tunelab keys` and `--help` stay light.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import secrets
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tunelab.errors import TunelabError

FORMAT = "tunelab-keys/1"
KEY_PREFIX = "tl-"
ENDPOINTS: dict[str, str] = {
    "completions": "/v1/completions",
    "chat": "/v1/chat/completions",
    "embeddings": "/v1/embeddings",
    "classify": "/v1/classify",
    "score": "/v1/score",
    "models": "/v1/models",
}
"""Scope name -> the /v1 path it opens. Every /v1 route must be here (a test checks)."""
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class StoredKey:
    """One key as the file keeps it: never the key itself."""

    id: str
    """What logs, audit lines, rate limits and quotas name the key by."""
    sha256: str
    """hex SHA-256 of the file's salt followed by the key."""
    salt: str = field(default="", repr=False)
    """The file's salt (hex), copied here when read so a record checks keys on its own."""
    endpoints: list[str] = field(default_factory=lambda: ["*"])
    """Scope names of ENDPOINTS the key may call, or ["*"]: all."""
    models: list[str] = field(default_factory=lambda: ["*"])
    """Model names (fnmatch patterns: smollm2-*) the key may use, or ["*"]: all."""
    tokens_per_day: int = 0
    """Prompt + completion tokens the key may use per UTC day; 0: no quota."""
    created: str = ""
    revoked: str | None = None

    def allows_endpoint(self, path: str) -> bool:
        """Whether the key may call `path`; a path outside ENDPOINTS (a 404) is not refused."""
        if "*" in self.endpoints or path not in ENDPOINTS.values():
            return True
        return any(ENDPOINTS.get(name) == path for name in self.endpoints)

    def allows_model(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.models)

    def scope_text(self) -> str:
        quota = f", {self.tokens_per_day} tokens/day" if self.tokens_per_day else ""
        return f"endpoints {','.join(self.endpoints)}; models {','.join(self.models)}{quota}"


@dataclass
class KeysFile:
    salt: str
    keys: list[StoredKey]


def hash_key(salt: str, key: str) -> str:
    """hex SHA-256 of the salt's bytes followed by the key's UTF-8."""
    return hashlib.sha256(bytes.fromhex(salt) + key.encode()).hexdigest()


def is_hashed(text: str) -> bool:
    """A hashed keys file is a JSON object; a plain one is lines of keys."""
    return text.lstrip().startswith("{")


def parse_endpoints(text: str | None, flag: str = "--endpoints") -> list[str]:
    """`chat,completions` -> ["chat", "completions"]; None or `*` -> ["*"].

    Raises:
        TunelabError: an unknown endpoint name, naming `flag`.
    """
    names = _split(text)
    if names == ["*"]:
        return names
    for name in names:
        if name not in ENDPOINTS:
            raise TunelabError(
                f"{flag}: unknown endpoint {name!r}: choose from {', '.join(ENDPOINTS)} (or *)"
            )
    return sorted(set(names))


def parse_models(text: str | None, flag: str = "--models") -> list[str]:
    """`a,b-*` -> model name patterns; None -> ["*"].

    Raises:
        TunelabError: an empty or spaced pattern, naming `flag`.
    """
    names = _split(text)
    for name in names:
        if not name or any(c.isspace() for c in name):
            raise TunelabError(f"{flag}: model patterns are names without spaces, got {text!r}")
    return names


def _split(text: str | None) -> list[str]:
    if text is None or text.strip() in ("", "*"):
        return ["*"]
    return [part.strip() for part in text.split(",")]


def read_file(path: Path, flag: str = "--keys-file") -> KeysFile:
    """The hashed keys file at `path`.

    Raises:
        TunelabError: a missing file, a plain (unhashed) file, or one that is not a keys file.
    """
    if not path.is_file():
        raise TunelabError(f"{flag} {path} not found: pass an existing keys file")
    text = path.read_text()
    if not is_hashed(text):
        raise TunelabError(
            f"{flag} {path} holds plain keys: hash them first with "
            f"`tunelab keys migrate --keys-file {path}` (the keys keep working)"
        )
    return parse_file(text, path, flag)


def parse_file(text: str, path: Path, flag: str = "--keys-file") -> KeysFile:
    """A hashed keys file's text -> KeysFile (each record with the file's salt).

    Raises:
        TunelabError: malformed JSON, another format, a bad record.
    """

    def bad(why: str) -> TunelabError:
        return TunelabError(f"{flag} {path} is not a tunelab keys file: {why}")

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise bad(f"invalid JSON at line {exc.lineno} ({exc.msg})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise bad(f'expected {{"format": "{FORMAT}", ...}}')
    salt = data.get("salt")
    if not isinstance(salt, str) or not re.fullmatch(r"[0-9a-f]{32,}", salt):
        raise bad("its salt is missing or not hex")
    keys = []
    for i, rec in enumerate(data.get("keys") or []):
        try:
            key = StoredKey(**{**rec, "salt": salt})
            ok = _ID.match(key.id) and re.fullmatch(r"[0-9a-f]{64}", key.sha256)
        except TypeError as exc:  # not an object, a field missing or unknown, not a string
            raise bad(f"key {i + 1}: {exc}") from None
        scopes = (key.endpoints, key.models)
        ok = ok and all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in scopes)
        if not ok or type(key.tokens_per_day) is not int or key.tokens_per_day < 0:
            raise bad(f"key {i + 1} has a bad id, sha256, endpoints, models or tokens_per_day")
        parse_endpoints(",".join(key.endpoints), f"{flag} {path} key {key.id}")
        keys.append(key)
    return KeysFile(salt, keys)


def write_file(path: Path, keys: KeysFile) -> None:
    """Write `keys` to `path` atomically (temporary file, then rename), mode 0600."""
    records = [{k: v for k, v in asdict(key).items() if k != "salt"} for key in keys.keys]
    text = json.dumps({"format": FORMAT, "salt": keys.salt, "keys": records}, indent=2) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_plain_keys(path: Path) -> dict[str, str]:
    """name -> key from a plain keys file: `KEY` or `NAME KEY` per line, `#` comments.

    Raises:
        TunelabError: a line of more than two words.
    """
    keys: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        if len(parts) > 2:
            raise TunelabError(f"{path} line {n}: write KEY or NAME KEY (no spaces in keys)")
        name, key = (parts[0], parts[1]) if len(parts) == 2 else (f"key-{len(keys) + 1}", parts[0])
        keys[name] = key
    return keys


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def create_key(
    keys_file: str,
    name: str | None = None,
    endpoints: str | None = None,
    models: str | None = None,
    tokens_per_day: int = 0,
) -> tuple[StoredKey, str]:
    """Add a new random key to `keys_file` (created if missing); returns its record and the
    key, which is shown this once and stored nowhere.

    Raises:
        TunelabError: a bad --name (or one in use), --endpoints, --models or --tokens-per-day;
            a plain or malformed keys file.
    """
    path = Path(keys_file).expanduser()
    current = read_file(path) if path.exists() else KeysFile(secrets.token_hex(16), [])
    if name is not None and not _ID.match(name):
        raise TunelabError(
            f"--name {name!r}: use letters, digits, '.', '_' or '-' (at most 64, no spaces)"
        )
    taken = {k.id for k in current.keys}
    if name in taken:
        raise TunelabError(f"--name {name}: a key of that name is in {path}; pick another")
    if tokens_per_day < 0:
        raise TunelabError(f"--tokens-per-day must be 0 (no quota) or more, got {tokens_per_day}")
    key_id = name
    while key_id is None or key_id in taken:
        key_id = f"key-{secrets.token_hex(3)}"
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = StoredKey(
        id=key_id,
        sha256=hash_key(current.salt, key),
        salt=current.salt,
        endpoints=parse_endpoints(endpoints),
        models=parse_models(models),
        tokens_per_day=tokens_per_day,
        created=_now(),
    )
    current.keys.append(record)
    write_file(path, current)
    return record, key


def list_keys(keys_file: str) -> list[StoredKey]:
    """Every key of a hashed `keys_file`, revoked ones included.

    Raises:
        TunelabError: a missing, plain or malformed keys file.
    """
    return read_file(Path(keys_file).expanduser()).keys


def revoke_key(keys_file: str, key_id: str) -> StoredKey:
    """Mark key `key_id` revoked (kept in the file for the record); a server refuses it once
    restarted.

    Raises:
        TunelabError: no such key, or a missing, plain or malformed keys file.
    """
    path = Path(keys_file).expanduser()
    current = read_file(path)
    match = [k for k in current.keys if k.id == key_id]
    if not match:
        known = ", ".join(k.id for k in current.keys) or "none"
        raise TunelabError(f"KEY_ID {key_id!r} is not in {path} (its keys: {known})")
    if match[0].revoked is None:
        match[0].revoked = _now()
        write_file(path, current)
    return match[0]


def migrate_keys(keys_file: str) -> int:
    """Replace a plain keys file's keys by salted hashes, in place (the same keys keep working,
    with every scope and no quota); returns how many keys it holds.

    Raises:
        TunelabError: a missing or already hashed file, or a malformed plain file.
    """
    path = Path(keys_file).expanduser()
    if not path.is_file():
        raise TunelabError(f"--keys-file {path} not found: pass an existing keys file")
    if is_hashed(path.read_text()):
        raise TunelabError(f"--keys-file {path} is already hashed: nothing to migrate")
    salt = secrets.token_hex(16)
    now = _now()
    records = []
    for name, key in read_plain_keys(path).items():
        if not _ID.match(name):
            raise TunelabError(f"--keys-file {path}: key name {name!r} cannot be a key id")
        records.append(StoredKey(id=name, sha256=hash_key(salt, key), salt=salt, created=now))
    write_file(path, KeysFile(salt, records))
    return len(records)
