"""`tunelab keys create|list|revoke|migrate`: API keys with scopes and quotas, kept as hashes.

tunelab keys create --keys-file keys.json --name alice --endpoints chat --tokens-per-day 100000
tunelab keys list --keys-file keys.json
tunelab keys revoke alice --keys-file keys.json
tunelab keys migrate --keys-file keys.txt       # a plain keys file -> hashes, in place

The work is in tunelab.serve.keys (standard library only: no torch, no fastapi).
"""

from __future__ import annotations

import argparse

from tunelab.cli.flags import verb_parser
from tunelab.errors import TunelabError

HELP = "API keys for tunelab serve: create, list, revoke (scopes, quotas; hashed)"
DESCRIPTION = (
    "Manage the keys file that `tunelab serve --keys-file` reads. The file keeps salted "
    "SHA-256 hashes only: a new key is printed once by create and stored nowhere. A key may "
    "be limited to some endpoints and models and to a number of tokens per UTC day. A "
    "running server reads the file when it starts: restart it after create or revoke. "
    "See docs/deploy.md."
)
KEYS_FILE_HELP = "the keys file (JSON; created by the first create)"


def _keys_file(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keys-file", required=True, metavar="FILE", help=KEYS_FILE_HELP)


def add_parser(sub) -> None:
    from tunelab.serve.keys import ENDPOINTS

    p = verb_parser(sub, "keys", HELP, DESCRIPTION)
    ksub = p.add_subparsers(dest="keys_verb", required=True, metavar="ACTION")
    c = ksub.add_parser(
        "create",
        help="make a new key and print it once",
        description="Make a new random key, add its salted hash and scopes to the keys file "
        "and print the key: it is shown this once.",
        allow_abbrev=False,
    )
    _keys_file(c)
    c.add_argument("--name", help="the key's id in logs and audit lines (default: key-XXXXXX)")
    c.add_argument(
        "--endpoints",
        help=f"endpoints it may call, comma-separated: {', '.join(ENDPOINTS)} (default: *, all)",
    )
    c.add_argument(
        "--models",
        help="model names it may use, comma-separated; patterns like smollm2-* (default: *)",
    )
    c.add_argument(
        "--tokens-per-day",
        type=int,
        default=0,
        metavar="N",
        help="prompt + completion tokens it may use per UTC day, per server (default: 0, no quota)",
    )
    ls = ksub.add_parser("list", help="list the keys and their scopes", allow_abbrev=False)
    _keys_file(ls)
    r = ksub.add_parser("revoke", help="revoke a key (kept, marked revoked)", allow_abbrev=False)
    r.add_argument("key_id", metavar="KEY_ID", help="the key's id (its --name)")
    _keys_file(r)
    m = ksub.add_parser(
        "migrate",
        help="hash the keys of a plain keys file, in place",
        description="Replace a plain keys file (KEY or NAME KEY per line) by the hashed format; "
        "the same keys keep working, with every scope and no quota.",
        allow_abbrev=False,
    )
    _keys_file(m)


def run(a: argparse.Namespace) -> None:
    from tunelab.serve import keys

    if a.keys_verb == "create":
        rec, key = keys.create_key(a.keys_file, a.name, a.endpoints, a.models, a.tokens_per_day)
        print(f"created {rec.id} ({rec.scope_text()}) in {a.keys_file}")
        print("the key, shown this once (the file keeps only its hash):")
        print(key)
    elif a.keys_verb == "list":
        rows = keys.list_keys(a.keys_file)
        if not rows:
            print(f"{a.keys_file} holds no keys")
        for rec in rows:
            status = f"revoked {rec.revoked}" if rec.revoked else f"created {rec.created}"
            print(f"{rec.id}\t{status}\t{rec.scope_text()}")
    elif a.keys_verb == "revoke":
        rec = keys.revoke_key(a.keys_file, a.key_id)
        print(f"revoked {rec.id} ({rec.revoked}): restart the server to refuse it")
    elif a.keys_verb == "migrate":
        n = keys.migrate_keys(a.keys_file)
        print(f"hashed the {n} keys of {a.keys_file}: the same keys keep working")
    else:  # argparse allows only the choices above
        raise TunelabError(f"unknown keys action {a.keys_verb}")
