"""`tunelab_run.json`: what a run folder is. Written and read only here, as one dataclass.

Every verb that opens a run reads this file through `read_marker` / `find_marker`; every
recipe that finishes a run writes it through `write_marker`. Keys a newer tunelab added are
kept in `extra` and written back, so an older reader never drops them.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab import __version__
from tunelab.errors import TunelabError
from tunelab.models.sources import RUN_MARKER_FILE

MARKER_FILE = RUN_MARKER_FILE

_COMMON = {
    "task",
    "family",
    "weights",
    "base_model",
    "gguf_file",
    "base_source",
    "base_hub_id",
    "base_revision",
    "max_length",
}
_TUNED = {"strategy", "strategy_options"}
TASK_FIELDS: dict[str, set[str]] = {
    "classification": _COMMON | _TUNED | {"labels"},
    "causal_lm": _COMMON | _TUNED | {"chat_template"},
    "seq2seq": _COMMON | _TUNED | {"chat_template", "max_target_length"},
    "pretrain": _COMMON | {"objective", "preset", "tokenizer", "vocab_size", "seq_len"},
}
"""The fields each kind of run writes (None included: "does not apply" stays explicit);
fields of other tasks are left out of its file."""


@dataclass
class RunMarker:
    """The typed content of tunelab_run.json (None: the field does not apply to this run)."""

    task: str
    """classification, causal_lm, seq2seq or pretrain."""
    family: str | None = None
    """encoder, decoder or encoder-decoder."""
    weights: str = "full"
    """What the folder holds: full, partial (trained.safetensors), adapter or merged."""
    strategy: str | None = None
    strategy_options: dict[str, Any] = field(default_factory=dict)
    base_model: str | None = None
    """The model the run started from, as the user named it."""
    gguf_file: str | None = None
    base_source: str | None = None
    """Where that model was found on the machine that trained it (a local folder; a hub id
    when it came from the hub)."""
    base_hub_id: str | None = None
    """The base model's portable identity: its hub id (None: a model of that machine only).
    `runs.open.resolve_base` opens the base from base_source if it is still there, else from
    the embedded package of this hub id, else from the hub."""
    base_revision: str | None = None
    """The hub commit of base_hub_id, when known (None: the hub's `main`)."""
    labels: list[str] | None = None
    """Classification: the label names, in id order."""
    max_length: int | None = None
    max_target_length: int | None = None
    chat_template: bool | None = None
    """causal_lm: whether the training pairs were shown in the tokenizer's chat template."""
    objective: str | None = None
    """pretrain: the objective (clm, mlm, nsp, mlm+nsp, rtd), preset and tokenizer below."""
    preset: str | None = None
    tokenizer: str | None = None
    vocab_size: int | None = None
    seq_len: int | None = None
    compression: dict[str, Any] | None = None
    """A compressed run (tunelab compress): the method spec, what it needs to rebuild the model
    (e.g. a quantization scheme, a pruned-heads plan) and the run it came from."""
    tunelab_version: str = __version__
    finished: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys this version does not know (kept, written back)."""

    @property
    def generative(self) -> bool:
        return self.task in ("causal_lm", "seq2seq")

    @property
    def context_length(self) -> int:
        """Tokens per input the run was trained with (512 where the marker does not say)."""
        return self.max_length or 512

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the file: this task's fields, the version stamp, unknown keys."""
        keep = TASK_FIELDS.get(self.task, _COMMON) | {"tunelab_version", "finished"}
        if self.compression is not None:
            keep = keep | {"compression"}
        out = {k: v for k, v in dataclasses.asdict(self).items() if k in keep}
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunMarker:
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values = {k: v for k, v in raw.items() if k in known}
        values.setdefault("task", "classification")
        values["strategy_options"] = values.get("strategy_options") or {}
        return cls(**values, extra={k: v for k, v in raw.items() if k not in known})


def identified(marker: RunMarker, commit: str | None = None) -> RunMarker:
    """`marker` with its base's portable identity filled in (`models.sources.base_identity`;
    `commit`: the hub commit transformers loaded the base at, if it came from the hub) and a
    relative base_source made absolute. A marker that already has an identity is kept."""
    from tunelab.models.sources import base_identity

    if marker.base_model is None or marker.base_hub_id is not None:
        return marker
    source = marker.base_source
    if source and not Path(source).is_absolute() and Path(source).exists():
        source = str(Path(source).resolve())  # a path relative to where it ran means nothing later
    ident = base_identity(marker.base_model, marker.base_source, commit)
    return dataclasses.replace(
        marker, base_source=source, base_hub_id=ident.hub_id, base_revision=ident.revision
    )


def is_run(path: str | Path) -> bool:
    """Whether `path` is a tunelab run folder."""
    return (Path(path).expanduser() / MARKER_FILE).is_file()


def find_marker(path: str | Path) -> RunMarker | None:
    """The marker of `path` when it is a run folder, else None (a model name, a plain folder)."""
    return read_marker(path) if is_run(path) else None


def read_marker(run_dir: str | Path) -> RunMarker:
    """The marker of a run folder, or a one-line error when it is not one (or is corrupt)."""
    path = Path(run_dir).expanduser()
    file = path / MARKER_FILE
    if not file.is_file():
        why = "does not exist" if not path.exists() else f"has no {MARKER_FILE}"
        raise TunelabError(
            f"{path} is not a tunelab run folder ({why}): pass a folder written by tunelab finetune"
        )
    try:
        raw = json.loads(file.read_text())
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        return RunMarker.from_dict(raw)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise TunelabError(
            f"{file} is corrupt ({str(exc).splitlines()[0][:80]}): the run cannot be opened; "
            "restore the folder or rerun it"
        ) from None


def write_marker(folder: Path, marker: RunMarker) -> RunMarker:
    """Stamp the marker with this version and the time, and write it atomically; returns the
    stamped marker."""
    from tunelab.runs.workdir import write_json

    stamped = dataclasses.replace(
        marker, tunelab_version=__version__, finished=time.strftime("%Y-%m-%dT%H:%M:%S")
    )
    write_json(folder / MARKER_FILE, stamped.to_dict())
    return stamped
