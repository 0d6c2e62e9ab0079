"""The work folder of a run: `OUTPUT/.NAME.partial/` while it trains, renamed to `OUTPUT/NAME/`
only when complete, so an interrupted run never looks finished and `--resume` knows where to
continue. Also the one atomic writer (temp file, then rename) for every file tunelab writes.

In a many-process run (torchrun) only rank 0 calls `open_workdir`, `discard_if_fresh` and
`finish_workdir`; the other ranks learn the paths from `run_paths` with the name rank 0 chose.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tunelab.errors import TunelabError

CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoint"
LEFTOVERS = (CHECKPOINT_DIR, "best.safetensors")
"""Work files a finished run does not keep."""
_CREATED: dict[Path, list[Path]] = {}
"""Work folder -> the output folders open_workdir had to create for it (deepest first), which
discard_if_fresh removes again when they are left empty."""


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically: a killed writer leaves the old file or none."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    """`obj` as indented JSON, atomically."""
    write_text(path, json.dumps(obj, indent=2) + "\n")


def write_yaml(path: Path, obj: Any) -> None:
    """`obj` as YAML in the order given, atomically."""
    write_text(path, yaml.safe_dump(obj, sort_keys=False))


def partial_dir(output_dir: Path, name: str) -> Path:
    return Path(output_dir) / f".{name}.partial"


def newest_partial(output_dir: Path) -> str:
    """Name of the most recently touched unfinished run in `output_dir`."""
    found = sorted(Path(output_dir).glob(".*.partial"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise TunelabError(f"no unfinished run in {output_dir} to resume: start a new run")
    return found[-1].name[1 : -len(".partial")]


def saved_config(output_dir: Path, name: str | None) -> tuple[str, dict[str, Any]]:
    """(name, its saved config.yaml) of the unfinished run to resume (`name`, or the newest).

    Raises:
        TunelabError: there is no such unfinished run.
    """
    out = Path(output_dir)
    name = name or newest_partial(out)
    file = partial_dir(out, name) / CONFIG_FILE
    if not file.is_file():
        raise TunelabError(f"no unfinished run {name!r} in {out} to resume: drop --resume")
    return name, yaml.safe_load(file.read_text()) or {}


def run_paths(output_dir: Path, name: str) -> tuple[Path, Path]:
    """(final run folder, its `.partial` work folder) of run `name`, creating nothing: what
    the ranks other than 0 of a many-process run use (rank 0 alone creates and writes them)."""
    out = Path(output_dir)
    return out / name, partial_dir(out, name)


def open_workdir(
    output_dir: Path, name: str, resume: bool, config: dict[str, Any]
) -> tuple[Path, Path]:
    """(final run folder, its `.partial` work folder, created with config.yaml in it).

    Raises:
        TunelabError: the run folder exists, or an unfinished one of that name (not resuming).
    """
    out = Path(output_dir)
    final, work = run_paths(out, name)
    if final.exists():
        raise TunelabError(f"run folder {final} already exists: pick another --run.name")
    if work.exists() and not resume:
        raise TunelabError(
            f"an unfinished run {name!r} is in {out}: continue it with --resume --name {name}, "
            f"or delete {work}"
        )
    created = [d for d in (out, *out.parents) if not d.exists()]
    try:
        work.mkdir(parents=True, exist_ok=True)
    except (NotADirectoryError, FileExistsError, PermissionError) as exc:
        raise TunelabError(
            f"cannot create the run folder in {out} ({exc.strerror}): pick a writable --output"
        ) from None
    _CREATED[work] = created
    write_yaml(work / CONFIG_FILE, config)
    return final, work


@contextmanager
def discard_if_fresh(work: Path) -> Iterator[None]:
    """On a user mistake, remove the work folder unless it holds a checkpoint worth resuming
    (and the output folders created for it, when that leaves them empty)."""
    try:
        yield
    except TunelabError:
        if not (work / CHECKPOINT_DIR).exists():
            shutil.rmtree(work, ignore_errors=True)
            for folder in _CREATED.pop(work, []):
                try:
                    folder.rmdir()
                except OSError:  # not empty: another run is in it
                    break
        raise


def finish_workdir(work: Path, final: Path, leftovers: tuple[str, ...] = LEFTOVERS) -> None:
    """Drop the work-only files and rename the work folder to the finished run folder."""
    _CREATED.pop(work, None)
    for leftover in leftovers:
        path = work / leftover
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    if final.exists():
        raise TunelabError(f"{final} appeared while training: the finished run is in {work}")
    work.rename(final)
