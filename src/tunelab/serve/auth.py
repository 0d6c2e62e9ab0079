"""API keys: where they come from and how a request's `Authorization: Bearer KEY` is checked.

Keys come from a keys file (one per line: `KEY` or `NAME KEY`; `#` starts a comment) and from
the TUNELAB_API_KEYS environment variable (comma-separated). Every presented key is compared
with every known key by `hmac.compare_digest` over SHA-256 digests (equal lengths, no early
exit on a match), so the time taken does not tell how much of a key was right or which key
matched. A missing, malformed or unknown key all answer 401, as OpenAI does (the `openai`
client raises AuthenticationError); a key's NAME, never the key, is what logs and rate limits
see.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.serve.errors import APIError

ENV_KEYS = "TUNELAB_API_KEYS"
MIN_KEY_LENGTH = 8


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def read_keys(keys_file: str | None, environ: dict[str, str] | None = None) -> dict[str, str]:
    """name -> key from the keys file and the environment.

    Raises:
        TunelabError: a missing keys file, or a key too short to be a secret.
    """
    environ = os.environ if environ is None else environ
    keys: dict[str, str] = {}
    if keys_file:
        path = Path(keys_file).expanduser()
        if not path.is_file():
            raise TunelabError(f"keys file {path} not found: pass an existing --keys-file")
        for n, line in enumerate(path.read_text().splitlines(), 1):
            parts = line.split("#", 1)[0].split()
            if not parts:
                continue
            if len(parts) > 2:
                raise TunelabError(f"{path} line {n}: write KEY or NAME KEY (no spaces in keys)")
            name, key = (
                (parts[0], parts[1]) if len(parts) == 2 else (f"key-{len(keys) + 1}", parts[0])
            )
            keys[name] = key
    for key in (k.strip() for k in environ.get(ENV_KEYS, "").split(",")):
        if key:
            keys[f"env-{len(keys) + 1}"] = key
    short = [name for name, key in keys.items() if len(key) < MIN_KEY_LENGTH]
    if short:
        raise TunelabError(
            f"API key {short[0]} is shorter than {MIN_KEY_LENGTH} characters: use a long random "
            "key (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return keys


class KeyChecker:
    """Checks Authorization headers against a fixed set of keys."""

    def __init__(self, keys: dict[str, str]) -> None:
        self._digests = [(name, _digest(key)) for name, key in keys.items()]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def identify(self, key: str) -> str | None:
        """The name of `key`, or None; compares against every key whatever matches."""
        presented = _digest(key)
        found = None
        for name, digest in self._digests:
            if hmac.compare_digest(presented, digest):
                found = name
        return found

    def check(self, authorization: str | None) -> str | None:
        """The key name for an Authorization header (None when auth is off).

        Raises:
            APIError: 401 for a missing, malformed or unknown key.
        """
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
    """ASGI middleware guarding every /v1 path: the key (401) and its rate (429) are checked
    before the body is read, so a caller without a key gets nothing parsed on its behalf.

    The caller's key name (its client address when auth is off) lands in request.state.key.
    """

    def __init__(self, app, keys: KeyChecker, limiter, prefix: str = "/v1/") -> None:
        self.app = app
        self.keys = keys
        self.limiter = limiter
        self.prefix = prefix

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization")
        client = (scope.get("client") or ("unknown",))[0]
        try:
            name = self.keys.check(auth.decode("latin-1") if auth is not None else None)
            self.limiter.check(name or f"client {client}")
        except APIError as exc:
            await exc.response()(scope, receive, send)
            return
        scope.setdefault("state", {})["key"] = name or client
        await self.app(scope, receive, send)
