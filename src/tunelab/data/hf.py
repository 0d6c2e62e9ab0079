"""Sources read through 🤗 datasets: folders written by `save_to_disk` and `hub:NAME`.

Both give a `Table` over the `datasets.Dataset` (columns copied only when asked for), for
classification and generative data alike. A `DatasetDict` (a saved folder with splits, or a
hub data set) gives its `split`, "train" by default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tunelab.data.table import Table, dataset_table
from tunelab.errors import TunelabError

OFFLINE_VALUES = {"1", "true", "yes", "on"}
SAVED_MARKERS = ("dataset_dict.json", "dataset_info.json", "state.json")
"""Files that `datasets`' save_to_disk writes (DatasetDict, then Dataset)."""


def is_saved_dataset(path: Path) -> bool:
    """Whether `path` is a folder written by `datasets`' save_to_disk."""
    return path.is_dir() and any((path / marker).is_file() for marker in SAVED_MARKERS)


def pick_split(loaded: Any, split: str | None, where: str) -> Any:
    """The `split` of a DatasetDict (train by default); a Dataset as it is."""
    import datasets

    if not isinstance(loaded, datasets.DatasetDict):
        return loaded
    wanted = split or "train"
    if wanted not in loaded:
        raise TunelabError(
            f"split '{wanted}' not in {where} (splits: {', '.join(loaded)}); "
            f"point the source at {where}/<split> to use another one"
        )
    return loaded[wanted]


def read_saved(path: Path, split: str | None = None) -> Table:
    """A folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    import datasets  # imported here: it is slow to import and only some sources need it

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as exc:
        why = " ".join(str(exc).split())[:160]
        raise TunelabError(f"{path} is not a readable datasets folder ({why})") from None
    return dataset_table(pick_split(loaded, split, str(path)), str(path), "datasets")


def read_hub(name: str, split: str | None = None) -> Table:
    """`hub:NAME` (online only): the data set's `split`, train by default."""
    unreachable = (
        f"the Hugging Face hub is unreachable, so hub:{name} cannot be loaded; "
        "pass a local file/folder or the embedded bbc-news instead"
    )
    # Checked here because `datasets` reads these variables only once, at import time.
    offline = (os.environ.get(v, "").lower() for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    if any(value in OFFLINE_VALUES for value in offline):
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
    return dataset_table(pick_split(loaded, split, f"hub:{name}"), f"hub:{name}", "hub")
