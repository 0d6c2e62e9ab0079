"""Data that is already in memory: a pandas DataFrame, a `datasets.Dataset` (or DatasetDict),
a pyarrow Table, a list of row dicts or a dict of columns.

The readers take these objects wherever they take a path (`load_examples`, `load_pairs`).
A fine-tuning run also records its data in its config.yaml, so the Python API first writes
such an object to a parquet file in tunelab's cache, named by a hash of its content
(`materialize`): the config names a real file, a resumed run reads the same rows, and the same
DataFrame passed twice is written once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from tunelab.data.table import Table, arrow_table, dataset_table
from tunelab.defaults import cache_dir
from tunelab.errors import TunelabError

PATH_FIELDS = ("source", "train_file", "validation_file", "test_file")
"""DataOptions fields that name data (and so may hold an in-memory object)."""


def _instance(obj: Any, module: str, *names: str) -> bool:
    # only a library already imported can have made `obj`: no import just to check
    lib = sys.modules.get(module)
    return lib is not None and any(isinstance(obj, getattr(lib, n, ())) for n in names)


def is_in_memory(obj: Any) -> bool:
    """Whether `obj` is data in memory rather than a path or a name."""
    if isinstance(obj, str | os.PathLike) or obj is None:
        return False
    return (
        isinstance(obj, list | tuple | dict)
        or _instance(obj, "pandas", "DataFrame")
        or _instance(obj, "datasets", "Dataset", "DatasetDict")
        or _instance(obj, "pyarrow", "Table")
    )


def source_name(source: Any) -> str:
    """How messages name a source: its path or name, or what kind of object it is."""
    if is_in_memory(source):
        return f"the {type(source).__name__}"
    return str(source)


def memory_table(obj: Any, split: str | None = None) -> Table:
    """The Table of an in-memory data object (see the module docstring).

    Raises:
        TunelabError: an object of another type, or rows that are not dicts.
    """
    if _instance(obj, "datasets", "Dataset", "DatasetDict"):
        from tunelab.data.hf import pick_split

        return dataset_table(pick_split(obj, split, "the DatasetDict"), "the Dataset", "datasets")
    if _instance(obj, "pandas", "DataFrame"):
        import pyarrow as pa

        frame = obj.rename(columns=str)  # arrow needs string column names
        try:
            table = pa.Table.from_pandas(frame, preserve_index=False)
        except (pa.ArrowException, ValueError, TypeError) as exc:
            raise TunelabError(f"the DataFrame cannot be read as a table: {exc}") from None
        return arrow_table(table, "the DataFrame", "dataframe")
    if _instance(obj, "pyarrow", "Table"):
        return arrow_table(obj, "the arrow Table", "arrow")
    if isinstance(obj, dict) and all(isinstance(v, list | tuple) for v in obj.values()):
        lengths = {len(v) for v in obj.values()}
        if len(lengths) > 1:
            raise TunelabError("the dict of columns has columns of different lengths")
        n = lengths.pop() if lengths else 0
        rows = [{k: v[i] for k, v in obj.items()} for i in range(n)]
        return Table("the dict of columns", "rows", [str(k) for k in obj], records=rows)
    if isinstance(obj, list | tuple) and all(isinstance(r, dict) for r in obj):
        rows = list(obj)
        columns = list(dict.fromkeys(str(k) for r in rows for k in r))
        return Table("the list of rows", "rows", columns, records=rows)
    raise TunelabError(
        f"data of type {type(obj).__name__} is not readable: pass a path, a pandas DataFrame, "
        "a datasets.Dataset, a pyarrow Table, a list of row dicts or a dict of columns"
    )


def to_parquet(obj: Any, folder: Path | None = None) -> Path:
    """Write an in-memory data object to `folder` (default: tunelab's cache, data/) as a
    parquet file named by the hash of its content; the same data gives the same file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = folder or cache_dir() / "data"
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(suffix=".parquet.partial", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if _instance(obj, "datasets", "Dataset"):
            obj.to_parquet(str(tmp))  # keeps ClassLabel names in the schema metadata
        elif _instance(obj, "datasets", "DatasetDict"):
            raise TunelabError(
                "a DatasetDict has several splits: pass one (dd['train']) as data.source, or "
                "each as data.train_file / data.validation_file / data.test_file"
            )
        else:
            table = memory_table(obj)
            try:
                arrow = table.columnar
                if arrow is None:
                    arrow = pa.Table.from_pylist(table.rows())
            except (pa.ArrowException, TypeError) as exc:
                why = " ".join(str(exc).split())[:120]
                raise TunelabError(
                    f"{table.source} cannot be stored as a table ({why}): give each column "
                    "values of one type"
                ) from None
            pq.write_table(arrow, tmp)
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()[:16]
        final = folder / f"{digest}.parquet"
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def materialize(data: Any) -> Any:
    """A copy of a DataOptions whose in-memory data (source, train/validation/test file) is
    replaced by parquet files (`to_parquet`); the same object if there is none."""
    changes = {
        name: str(to_parquet(getattr(data, name)))
        for name in PATH_FIELDS
        if is_in_memory(getattr(data, name))
    }
    return dataclasses.replace(data, **changes) if changes else data


def materialize_overrides(overrides: dict[str, Any] | None) -> dict[str, Any] | None:
    """`section.key` overrides with in-memory data under data.* replaced by parquet paths."""
    if not overrides:
        return overrides
    return {
        key: str(to_parquet(value))
        if key.startswith("data.") and key[5:] in PATH_FIELDS and is_in_memory(value)
        else value
        for key, value in overrides.items()
    }
