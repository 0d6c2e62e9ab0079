"""The work folder: `.partial` until finished, resume by name, one atomic writer."""

from __future__ import annotations

import os

import pytest

from tunelab.errors import TunelabError
from tunelab.runs.workdir import (
    discard_if_fresh,
    finish_workdir,
    newest_partial,
    open_workdir,
    partial_dir,
    saved_config,
    write_json,
    write_text,
)


def test_open_workdir_writes_the_config_and_refuses_clashes(tmp_path):
    final, work = open_workdir(tmp_path, "r1", False, {"train": {"lr": 0.1}})
    assert work == partial_dir(tmp_path, "r1") and not final.exists()
    assert (work / "config.yaml").read_text().startswith("train:")
    with pytest.raises(TunelabError, match="--resume --name r1"):
        open_workdir(tmp_path, "r1", False, {})
    assert open_workdir(tmp_path, "r1", True, {})[1] == work  # resuming reuses it
    final.mkdir()
    with pytest.raises(TunelabError, match="already exists"):
        open_workdir(tmp_path, "r1", True, {})


def test_open_workdir_under_a_file_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(TunelabError, match="pick a writable --output"):
        open_workdir(blocker, "r1", False, {})


def test_resume_finds_the_newest_unfinished_run(tmp_path):
    with pytest.raises(TunelabError, match="no unfinished run"):
        newest_partial(tmp_path)
    open_workdir(tmp_path, "old", False, {"a": {"x": 1}})
    _, new = open_workdir(tmp_path, "new", False, {"a": {"x": 2}})
    os.utime(new, (2e9, 2e9))
    assert saved_config(tmp_path, None) == ("new", {"a": {"x": 2}})
    assert saved_config(tmp_path, "old")[1] == {"a": {"x": 1}}
    with pytest.raises(TunelabError, match="drop --resume"):
        saved_config(tmp_path, "missing")


def test_a_user_mistake_removes_a_fresh_work_folder_but_keeps_checkpoints(tmp_path):
    _, work = open_workdir(tmp_path, "fresh", False, {})
    with pytest.raises(TunelabError), discard_if_fresh(work):
        raise TunelabError("bad column")
    assert not work.exists()
    _, work = open_workdir(tmp_path, "kept", False, {})
    (work / "checkpoint").mkdir()
    with pytest.raises(TunelabError), discard_if_fresh(work):
        raise TunelabError("bad column")
    assert (work / "checkpoint").is_dir()


def test_finishing_drops_work_files_and_renames(tmp_path):
    final, work = open_workdir(tmp_path, "done", False, {})
    (work / "checkpoint").mkdir()
    (work / "best.safetensors").write_bytes(b"x")
    write_json(work / "metrics.json", {"a": 1})
    finish_workdir(work, final)
    assert sorted(p.name for p in final.iterdir()) == ["config.yaml", "metrics.json"]
    assert not work.exists()


def test_write_text_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    write_text(target, "old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_text(target, "new")
    assert target.read_text() == "old"  # the old file is whole, and no temp file is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
