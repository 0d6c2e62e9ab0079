"""One shape for every data source once read: a `Table` of rows with the columns as they are
in the source (not renamed), before tunelab picks its text/label or prompt/response out of them.

Files parsed by tunelab hold their rows as dicts; parquet files, `datasets` data sets and
DataFrames stay columnar (a pyarrow table or a `datasets.Dataset`) and are turned into rows
only for the columns asked for, so a large unused column (audio, images, embeddings) is never
copied. Integer columns with class names (a `ClassLabel`, also as stored in a parquet file
written by `datasets`) give their names; -1 or a missing value gives None.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Table:
    """The rows of one data source."""

    source: str
    """How messages name the source (a path, hub:NAME, "DataFrame" ...)."""
    kind: str
    """csv, tsv, jsonl, json, parquet, fasttext, tab-lines, lines, datasets, hub, dataframe,
    rows or class-folders."""
    columns: list[str]
    types: dict[str, str] = field(default_factory=dict)
    """Column -> type as the source declares it (columnar sources); empty for text files,
    whose types are read off the values."""
    records: list[dict[str, Any]] | None = None
    columnar: Any = None
    """A pyarrow Table or a datasets.Dataset, when `records` is None."""
    class_names: dict[str, list[str]] = field(default_factory=dict)
    """Column -> class names of an integer label column (ClassLabel)."""
    fixed: bool = False
    """Columns made by tunelab from a line format (text, label): the column options do not
    apply to them."""
    note: str = ""
    """Something the reader decided that the user should hear of (e.g. labels dropped)."""

    def __len__(self) -> int:
        if self.records is not None:
            return len(self.records)
        return self.columnar.num_rows

    def rows(self, columns: list[str] | None = None) -> list[dict[str, Any]]:
        """Every row, as dicts of the given columns (all by default)."""
        if self.records is not None:
            if columns is None:
                return self.records
            return [{c: r.get(c) for c in columns} for r in self.records]
        return self._columnar_rows(columns, None)

    def head(self, n: int) -> list[dict[str, Any]]:
        """The first `n` rows, every column."""
        if self.records is not None:
            return self.records[:n]
        return self._columnar_rows(None, n)

    def _columnar_rows(self, columns: list[str] | None, n: int | None) -> list[dict[str, Any]]:
        data = self.columnar
        wanted = list(dict.fromkeys(columns)) if columns is not None else None
        if hasattr(data, "select_columns"):  # datasets.Dataset
            if wanted is not None:
                data = data.select_columns(wanted)
            if n is not None:
                data = data.select(range(min(n, data.num_rows)))
            rows = data.to_list()
        else:  # pyarrow.Table
            if wanted is not None:
                data = data.select(wanted)
            if n is not None:
                data = data.slice(0, n)
            rows = data.to_pylist()
        for column, names in self.class_names.items():
            if wanted is not None and column not in wanted:
                continue
            for row in rows:
                value = row.get(column)
                # -1 marks an unlabelled row (e.g. hidden test labels): None, dropped later
                ok = isinstance(value, int) and 0 <= value < len(names)
                row[column] = names[value] if ok else None
        return rows


def short_type(arrow_type: Any) -> str:
    """A short name for a pyarrow type: str, int, float, bool, list, dict, category..."""
    import pyarrow as pa

    t = pa.types
    checks = (
        (t.is_string, "str"),
        (t.is_large_string, "str"),
        (t.is_boolean, "bool"),
        (t.is_integer, "int"),
        (t.is_floating, "float"),
        (t.is_decimal, "float"),
        (t.is_list, "list"),
        (t.is_large_list, "list"),
        (t.is_struct, "dict"),
        (t.is_dictionary, "category"),
        (t.is_temporal, "date/time"),
        (t.is_null, "empty"),
    )
    for check, name in checks:
        if check(arrow_type):
            return name
    return str(arrow_type)


def arrow_table(table: Any, source: str, kind: str) -> Table:
    """A Table over a pyarrow Table (parquet, DataFrame), with the class names that `datasets`
    stores in the schema metadata."""
    names = _hf_class_names(table.schema.metadata or {})
    types = {f.name: short_type(f.type) for f in table.schema} | _class_types(names)
    return Table(source, kind, list(table.column_names), types, columnar=table, class_names=names)


def dataset_table(dataset: Any, source: str, kind: str) -> Table:
    """A Table over a datasets.Dataset, mapping ClassLabel columns to their names."""
    import datasets

    names = {
        c: list(f.names) for c, f in dataset.features.items() if isinstance(f, datasets.ClassLabel)
    }
    schema = dataset.features.arrow_schema
    types = {f.name: short_type(f.type) for f in schema} | _class_types(names)
    return Table(
        source, kind, list(dataset.column_names), types, columnar=dataset, class_names=names
    )


def _class_types(names: dict[str, list[str]]) -> dict[str, str]:
    """'class (neg, pos)' for each class-label column."""
    return {
        c: f"class ({', '.join(n[:6])}{', ...' if len(n) > 6 else ''})" for c, n in names.items()
    }


def _hf_class_names(metadata: dict[bytes, bytes]) -> dict[str, list[str]]:
    """ClassLabel names from the `huggingface` schema metadata that `datasets` writes."""
    raw = metadata.get(b"huggingface")
    if not raw:
        return {}
    try:
        features = json.loads(raw).get("info", {}).get("features", {})
    except (ValueError, AttributeError):
        return {}
    return {
        column: [str(n) for n in spec["names"]]
        for column, spec in (features.items() if isinstance(features, dict) else ())
        if isinstance(spec, dict) and spec.get("_type") == "ClassLabel" and "names" in spec
    }
