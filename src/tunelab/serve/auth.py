"""API keys: where they come from, how a request's `Authorization: Bearer KEY` is checked, and
what a key may do (scopes and quotas).

Keys come from a keys file and from the TUNELAB_API_KEYS environment variable
(comma-separated). The keys file is either hashed (JSON, made by `tunelab keys create`:
serve/keys.py; salted SHA-256 hashes, each key with its scopes and daily token quota) or
plain (one per line: `KEY` or `NAME KEY`; `#` starts a comment; every scope, no quota; a
warning says to run `tunelab keys migrate`). Every presented key is compared with every
known key by `hmac.compare_digest` over SHA-256 digests (equal lengths, no early exit on a
match), so the time taken does not tell how much of a key was right or which key matched.
A missing, malformed or unknown (or revoked) key all answer 401, as OpenAI does (the
`openai` client raises AuthenticationError); a valid key outside its scopes answers 403
(permission_error), and one whose tokens of the day are spent 429 (insufficient_quota). A
key's NAME (its id), never the key, is what logs, audit lines and rate limits see. A
KeyChecker given its keys file reads it again when it changes (`tunelab keys revoke` works
without a restart).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.serve.errors import APIError
from tunelab.serve.keys import StoredKey, is_hashed, parse_file, read_plain_keys
from tunelab.serve.quota import QuotaLedger

log = logging.getLogger("tunelab.serve")

ENV_KEYS = "TUNELAB_API_KEYS"
MIN_KEY_LENGTH = 8
RELOAD_S = 1.0  # how often a request may look at the keys file's modification time


def _stamp(keys_file: str | None) -> tuple[int, int] | None:
    """(modification time in ns, size) of the keys file; None when missing or not given."""
    if keys_file is None:
        return None
    try:
        st = Path(keys_file).expanduser().stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@functools.cache  # once per file and process: `tunelab serve` reads the file twice
def _warn_plain(path: str) -> None:
    log.warning(
        "%s holds plain keys: hash them with `tunelab keys migrate --keys-file %s` (the same "
        "keys keep working)",
        path,
        path,
    )


def read_keys(
    keys_file: str | None, environ: dict[str, str] | None = None
) -> dict[str, str | StoredKey]:
    """name -> key (plain keys: the file's lines, the environment's) or its StoredKey (a
    hashed file's keys that are not revoked).

    Raises:
        TunelabError: a missing or malformed keys file, or a plain key too short to be a secret.
    """
    environ = os.environ if environ is None else environ
    keys: dict[str, str | StoredKey] = {}
    if keys_file:
        path = Path(keys_file).expanduser()
        if not path.is_file():
            raise TunelabError(f"keys file {path} not found: pass an existing --keys-file")
        text = path.read_text()
        if is_hashed(text):
            keys.update((k.id, k) for k in parse_file(text, path).keys if k.revoked is None)
        else:
            keys.update(read_plain_keys(path))
            if keys:
                _warn_plain(str(path))
    for key in (k.strip() for k in environ.get(ENV_KEYS, "").split(",")):
        if key:
            keys[f"env-{len(keys) + 1}"] = key
    short = [n for n, k in keys.items() if isinstance(k, str) and len(k) < MIN_KEY_LENGTH]
    if short:
        raise TunelabError(
            f"API key {short[0]} is shorter than {MIN_KEY_LENGTH} characters: use a long random "
            "key (e.g. tunelab keys create, or python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')"
        )
    return keys


class KeyChecker:
    """Checks Authorization headers against a fixed set of keys: plain ones, and hashed ones
    (StoredKey, with scopes and a quota; see serve/keys.py). `ledger` counts the tokens each
    key used today."""

    def __init__(
        self,
        keys: Mapping[str, str | StoredKey],
        ledger: QuotaLedger | None = None,
        keys_file: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        """`keys_file`: the file `keys` were read from, watched: when its modification time
        or size changes (looked at once a second at most, by the requests themselves), it is
        read again, so `tunelab keys create` / `revoke` take effect without a restart. While
        a keys file is given authentication stays on, even once every key is revoked."""
        self._load(keys)
        self.ledger = ledger or QuotaLedger()
        self.keys_file = keys_file
        self._clock = clock
        self._looked = clock()
        self._stamp = _stamp(keys_file)

    def _load(self, keys: Mapping[str, str | StoredKey]) -> None:
        digests: list[tuple[str, str, bytes]] = []  # (name, salt hex or "", digest)
        records: dict[str, StoredKey] = {}
        for name, key in keys.items():
            if isinstance(key, StoredKey):
                digests.append((name, key.salt, bytes.fromhex(key.sha256)))
                records[name] = key
            else:
                digests.append((name, "", _digest(key)))
        self._digests, self._records = digests, records  # swapped whole: readers see one set

    def refresh(self) -> None:
        """Read the keys file again if it changed since it was last read (a bad file keeps
        the keys in use and logs why)."""
        if self.keys_file is None or self._clock() - self._looked < RELOAD_S:
            return
        self._looked = self._clock()
        stamp = _stamp(self.keys_file)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._load(read_keys(self.keys_file))
        except TunelabError as exc:
            log.warning("keys file changed but cannot be read, keeping the keys in use: %s", exc)
            return
        log.info("keys file %s changed: %d keys in use", self.keys_file, len(self._digests))

    @property
    def enabled(self) -> bool:
        return bool(self._digests) or self.keys_file is not None

    def identify(self, key: str) -> str | None:
        """The name of `key`, or None; compares against every key whatever matches."""
        presented: dict[str, bytes] = {}  # salt -> the key's digest with it (one per file)
        found = None
        for name, salt, digest in self._digests:
            if salt not in presented:
                data = bytes.fromhex(salt) + key.encode()
                presented[salt] = hashlib.sha256(data).digest()
            if hmac.compare_digest(presented[salt], digest):
                found = name
        return found

    def record(self, name: str) -> StoredKey | None:
        """The scopes and quota of key `name`; None for a plain key (every scope, no quota)."""
        return self._records.get(name)

    def authorize(self, name: str, path: str, model: str | None) -> None:
        """Whether key `name` may call `path` on `model` now.

        Raises:
            APIError: 403 outside the key's endpoints or models, 429 once its quota is spent.
        """
        rec = self._records.get(name)
        if rec is None:
            return
        self._scopes(name, rec, path, model)
        self.ledger.check(name, rec.tokens_per_day)

    async def aauthorize(self, name: str, path: str, model: str | None) -> None:
        """`authorize`, asking the quota ledger's shared store when it has one."""
        rec = self._records.get(name)
        if rec is None:
            return
        self._scopes(name, rec, path, model)
        await self.ledger.acheck(name, rec.tokens_per_day)

    @staticmethod
    def _scopes(name: str, rec: StoredKey, path: str, model: str | None) -> None:
        if not rec.allows_endpoint(path):
            raise APIError(
                403,
                f"key {name} may not call {path}: it may call {', '.join(rec.endpoints)}",
                code="endpoint_not_allowed",
            )
        if model is not None and not rec.allows_model(model):
            raise APIError(
                403,
                f"key {name} may not use model {model}: it may use {', '.join(rec.models)}",
                code="model_not_allowed",
            )

    def check(self, authorization: str | None) -> str | None:
        """The key name for an Authorization header (None when auth is off).

        Raises:
            APIError: 401 for a missing, malformed or unknown key.
        """
        self.refresh()
        if not self.enabled:
            return None
        headers = {"WWW-Authenticate": "Bearer"}
        if not authorization:
            raise APIError(
                401,
                "missing API key: send the header Authorization: Bearer YOUR_KEY",
                code="missing_api_key",
                headers=headers,
            )
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise APIError(
                401,
                "malformed Authorization header: expected Authorization: Bearer YOUR_KEY",
                code="invalid_api_key",
                headers=headers,
            )
        name = self.identify(token.strip())
        if name is None:
            raise APIError(
                401, "incorrect API key provided", code="invalid_api_key", headers=headers
            )
        return name


class AuthMiddleware:
    """ASGI middleware guarding every /v1 path: the key (401), its scopes (403: the path, and
    `model_name()`, the model this server serves), its quota and rate (429) are checked before
    the body is read, so a caller without a key gets nothing parsed on its behalf.

    The caller's key name (its client address when auth is off) lands in request.state.key,
    and the key name alone (None when auth is off) in request.state.key_id.
    """

    def __init__(
        self,
        app,
        keys: KeyChecker,
        limiter,
        prefix: str = "/v1/",
        model_name: Callable[[], str] | None = None,
    ) -> None:
        self.app = app
        self.keys = keys
        self.limiter = limiter
        self.prefix = prefix
        self.model_name = model_name

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization")
        client = (scope.get("client") or ("unknown",))[0]
        state = scope.setdefault("state", {})
        try:
            name = self.keys.check(auth.decode("latin-1") if auth is not None else None)
            state["key_id"] = name
            if name is not None:
                model = self.model_name() if self.model_name is not None else None
                await self.keys.aauthorize(name, scope["path"], model)
            await self.limiter.acheck(name or f"client {client}")
        except APIError as exc:
            await exc.response()(scope, receive, send)
            return
        state["key"] = name or client
        await self.app(scope, receive, send)
