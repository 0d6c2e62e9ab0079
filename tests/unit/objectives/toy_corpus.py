"""A small synthetic corpus whose sentences say where they come from ("doc 3 sentence 2"),
so tests can check sentence order and document membership from the text alone."""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = [
    "market",
    "team",
    "government",
    "police",
    "city",
    "company",
    "players",
    "report",
    "music",
    "film",
]


def toy_documents(n_docs: int = 40, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for d in range(n_docs):
        sents = []
        for s in range(rng.randint(3, 7)):
            filler = " ".join(rng.choices(WORDS, k=rng.randint(3, 8)))
            sents.append(f"Doc {d} sentence {s} says the {filler}.")
        docs.append(" ".join(sents))
    return docs


def write_jsonl(path: Path, docs: list[str], key: str = "text") -> Path:
    path.write_text("".join(json.dumps({key: d, "id": i}) + "\n" for i, d in enumerate(docs)))
    return path
