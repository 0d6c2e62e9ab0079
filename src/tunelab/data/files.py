"""Read one data file into a `Table`: csv, tsv, jsonl, json, parquet and text lines.

The extension decides for .csv / .tsv / .jsonl / .json / .parquet. Any other file is looked
at: a parquet file is known by its magic bytes whatever its name; fastText lines
(`__label__X text`) are known by their content whatever the extension; a .txt / .cor / .text
file (or one without an extension) is fastText, `label<TAB>text` or plain lines
(`data.lines`). Text files are decoded with the given encoding (utf-8 by default, a BOM
tolerated); bytes that do not decode are a one-line error naming the encoding flag.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from pathlib import Path
from typing import Any

from tunelab.data.lines import read_lines, sniff
from tunelab.data.table import Table, arrow_table
from tunelab.errors import TunelabError

TABLE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json"}
PARQUET_SUFFIXES = (".parquet", ".pq")
LINE_SUFFIXES = (".txt", ".cor", ".text", "")
KINDS = ".csv, .tsv, .jsonl, .json, .parquet or .txt (fastText or label<TAB>text lines)"
_SNIFF_BYTES = 1 << 16

# Texts such as full news articles exceed the csv module's default 128 KiB field limit.
csv.field_size_limit(2**31 - 1)


def decode(
    path: Path, encoding: str = "utf-8", flag: str | None = "--data.encoding", strict=True
) -> str:
    """The text of `path` in `encoding` (utf-8 also strips a BOM); `strict` turns bad bytes
    into a TunelabError naming `flag` (None: the verb has no such flag: re-save as UTF-8)."""
    codec = _codec(encoding, flag)
    try:
        return path.read_text(encoding=codec, errors="strict" if strict else "replace")
    except UnicodeDecodeError as exc:
        shown = "UTF-8" if codec == "utf-8-sig" else encoding
        bad = exc.object[exc.start : exc.start + 1].hex()
        fix = (
            f"pass the file's encoding with {flag} (e.g. latin-1 or cp1252)"
            if flag
            else "re-save it with UTF-8 encoding"
        )
        raise TunelabError(
            f"{path} is not valid {shown} (byte {exc.start}: 0x{bad}); {fix}"
        ) from None


def _codec(encoding: str, flag: str | None) -> str:
    try:
        name = codecs.lookup(encoding).name
    except (LookupError, TypeError):
        raise TunelabError(
            f"unknown encoding {encoding!r}: set {flag or '--data.encoding'} to a codec name "
            "such as utf-8, latin-1 or cp1252"
        ) from None
    return "utf-8-sig" if name == "utf-8" else name


def file_kind(path: Path, encoding: str = "utf-8", flag: str | None = "--data.encoding") -> str:
    """csv, tsv, jsonl, json, parquet, fasttext, tab-lines or lines; else a one-line error."""
    suffix = path.suffix.lower()
    if suffix in TABLE_SUFFIXES:
        return TABLE_SUFFIXES[suffix]
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    with path.open("rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    if head[:4] == b"PAR1":
        return "parquet"
    lines = head.decode(_codec(encoding, flag), errors="replace").split("\n")
    if len(head) == _SNIFF_BYTES:
        lines = lines[:-1]  # a sample: its last line may be cut (a bad byte there is no error)
    kind = sniff(lines)
    if suffix in LINE_SUFFIXES or kind == "fasttext":
        return kind
    raise TunelabError(f"{path}: unsupported file type '{suffix or path.name}'; use {KINDS}")


def read_file(path: Path, encoding: str = "utf-8", flag: str | None = "--data.encoding") -> Table:
    """The Table of a data file (kind from `file_kind`)."""
    kind = file_kind(path, encoding, flag)
    if kind == "parquet":
        return read_parquet(path)
    content = decode(path, encoding, flag)
    if kind in ("fasttext", "tab-lines", "lines"):
        return read_lines(content, str(path), kind)
    if kind in ("csv", "tsv"):
        # No sniffing: the extension decides the delimiter. newline="" keeps quoted newlines.
        reader = csv.DictReader(io.StringIO(content, newline=""), delimiter=",\t"[kind == "tsv"])
        rows = list(reader)
        columns = [name for name in reader.fieldnames or [] if name]
        return Table(str(path), kind, columns, records=rows)
    if kind == "jsonl":
        # split("\n"), not splitlines(): JSON strings may hold a raw U+2028 line separator.
        lines = enumerate(content.split("\n"), start=1)
        rows = [parse_json(line, path, n) for n, line in lines if line.strip()]
        if not all(isinstance(row, dict) for row in rows):
            raise TunelabError(f"{path}: every line must be a JSON object {{...}}; fix the file")
    else:
        rows = parse_json(content, path)
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise TunelabError(
                f"{path} must hold a JSON list of objects [{{...}}, ...]; "
                "for one object per line use a .jsonl file"
            )
    # JSON rows may differ in keys; a column counts as present if any row has it.
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return Table(str(path), kind, columns, records=rows)


def parse_json(text: str, path: Path, line: int | None = None) -> Any:
    """Parse JSON; ``line`` is the file line of a .jsonl record (errors then cite that line)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"{path} line {line or exc.lineno} column {exc.colno}"
        raise TunelabError(f"{where} is not valid JSON ({exc.msg}); fix or remove it") from exc


def read_parquet(path: Path) -> Table:
    """A parquet file (as pandas, pyarrow, polars, Spark or `datasets` write them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        why = " ".join(str(exc).split())
        why = why.split("': ", 1)[-1]  # pyarrow repeats the path: "... source '<path>': why"
        why = why if len(why) <= 100 else why[:99].rsplit(" ", 1)[0] + "…"
        raise TunelabError(
            f"{path} is not a readable parquet file ({why}); re-write it, e.g. with pandas' "
            "DataFrame.to_parquet"
        ) from None
    return arrow_table(table, str(path), "parquet")
