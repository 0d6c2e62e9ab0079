"""A tiny model posing as an embedded one (a PyPI package with a hub id), and a hub cache that
holds it: what the portable-run tests need to move a base model away, "install" it elsewhere,
or serve it "from the hub" with the hub offline."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tunelab.defaults import EMBEDDED_MODELS, EmbeddedModel
from tunelab.errors import TunelabError
from tunelab.models.sources import EMBEDDED_HUB, HubIdentity

FAKE_NAME = "tiny-embedded"
FAKE_HUB_ID = "tunelab-tests/tiny-bert"


@dataclass(frozen=True)
class FakeEmbedded(EmbeddedModel):
    """An embedded model whose "package" is a folder of the test (missing: not installed)."""

    where: str = ""

    def locate(self) -> Path:
        path = Path(self.where)
        if not path.exists():
            raise TunelabError(
                f"embedded model {self.name!r} needs its package: pip install {self.pip_name}"
            )
        return path


def install_fake(monkeypatch, folder: Path, family: str = "encoder", hub_id: str = FAKE_HUB_ID):
    """Register `folder` as embedded model FAKE_NAME (hub id `hub_id`) for this test."""
    fake = FakeEmbedded(
        FAKE_NAME, "fake_pkg", "fake-pkg", "model", family, "a tiny test model", str(folder)
    )
    monkeypatch.setitem(EMBEDDED_MODELS, FAKE_NAME, fake)
    monkeypatch.setitem(EMBEDDED_HUB, FAKE_NAME, HubIdentity(hub_id, None, "apache-2.0"))
    return fake


def hub_cache(
    root: Path, hub_id: str, model_dir: Path, commit: str = "a" * 40, link: bool = False
) -> Path:
    """A hub cache folder under `root` that holds `model_dir` as `hub_id` at `commit` (main);
    `link`: its files are symbolic links to `model_dir`'s (a real model, no copy)."""
    repo = root / f"models--{hub_id.replace('/', '--')}"
    copy = os.symlink if link else shutil.copy2
    shutil.copytree(model_dir, repo / "snapshots" / commit, copy_function=copy)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return root
