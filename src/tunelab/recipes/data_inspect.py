"""`tunelab data inspect SOURCE`: a look at a data set before training: its real columns with
types and a few values, the text and label columns (guessed when not given), label counts and
length percentiles (in tokens too with a model's tokenizer); for instruction / chat data, its
format, conversations and prompt/response lengths (`data.inspect.inspect_source`)."""

from __future__ import annotations

from typing import Any

from tunelab.data.options import DataOptions


def inspect_data(
    source: Any,
    text_column: str | None = None,
    label_column: str | None = None,
    model: str | None = None,
    **options: Any,
) -> str:
    """The inspection report of a data source, as text.

    Args:
        source: A file, folder, hub:NAME, embedded data set, or data in memory (a pandas
            DataFrame, a datasets.Dataset, a list of row dicts).
        text_column: The text column; None guesses it.
        label_column: The label column; None guesses it.
        model: Also count tokens with this model's tokenizer.
        **options: Other data options by name (encoding, label_map, bins, bin_names, format,
            prompt_column, response_column), as `--data.NAME` sets them.

    Raises:
        TunelabError: an unreadable source, an unknown option or column, a missing model.
    """
    from tunelab.config.parse import update_dataclass
    from tunelab.data.inspect import inspect_source

    data = update_dataclass(DataOptions(), options, "data")
    tok = None
    if model:
        from tunelab.models.sources import load_tokenizer, resolve_source

        tok = load_tokenizer(resolve_source(model))
    return inspect_source(source, text_column, label_column, tok, data)
