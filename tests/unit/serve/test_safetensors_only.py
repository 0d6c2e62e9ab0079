"""Safetensors only, with no way around it: a folder whose weights would come from a pickle
file is refused in one line by `tunelab serve`'s check and by the loader, before anything is
unpickled, even when an unrelated .safetensors file sits next to the pickle."""

from __future__ import annotations

import shutil

import pytest

from tunelab.errors import TunelabError
from tunelab.serve import load_served
from tunelab.serve.loading import check_source, require_safetensors


@pytest.fixture
def no_unpickling(monkeypatch):
    """torch.load (and pickle loading through it) fails the test if anything calls it."""
    import torch

    def _refuse(*args, **kwargs):
        pytest.fail("torch.load was called: a pickle file was about to be unpickled")

    monkeypatch.setattr(torch, "load", _refuse)


def _pickled_with_decoy(src, folder, weights="model.safetensors", pickle="pytorch_model.bin"):
    """`src` copied to `folder` with its weights in a pickle and an unrelated x.safetensors."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, folder)
    tensors = load_file(str(folder / weights))
    (folder / weights).unlink()
    torch.save(tensors, folder / pickle)
    save_file({"unrelated": torch.zeros(2)}, str(folder / "x.safetensors"))
    return folder


def _one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text
    return text


def test_pickle_model_next_to_unrelated_safetensors_is_refused(
    tiny_models, tmp_path, no_unpickling
):
    folder = _pickled_with_decoy(tiny_models["decoder"], tmp_path / "decoy")
    for call in (require_safetensors, check_source, load_served):
        with pytest.raises(TunelabError, match="pytorch_model.bin") as exc:
            call(str(folder))
        assert "safetensors" in _one_line(exc)


def test_serve_command_refuses_it_in_one_line(tiny_models, tmp_path, capsys, no_unpickling):
    from tunelab.cli import main

    folder = _pickled_with_decoy(tiny_models["decoder"], tmp_path / "decoy")
    assert main(["serve", str(folder), "--port", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pytorch_model.bin" in err and "Traceback" not in err


def test_classification_run_with_pickle_weights_is_refused(classify_run, tmp_path, no_unpickling):
    folder = _pickled_with_decoy(classify_run, tmp_path / "run")
    for call in (check_source, load_served):
        with pytest.raises(TunelabError, match="pytorch_model.bin") as exc:
            call(str(folder))
        _one_line(exc)


def test_adapter_pickle_is_refused(tiny_models, tmp_path, no_unpickling):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.bin").write_bytes(b"not really a pickle")
    (folder / "x.safetensors").write_bytes(b"")
    with pytest.raises(TunelabError, match="adapter_model.bin"):
        require_safetensors(folder)


def test_safetensors_folders_still_pass(tiny_models, classify_run, tmp_path):
    require_safetensors(tiny_models["decoder"])
    require_safetensors(classify_run)
    both = (
        tmp_path / "both"
    )  # safetensors weights with a stray pickle copy: loaded from safetensors
    shutil.copytree(tiny_models["decoder"], both)
    (both / "pytorch_model.bin").write_bytes(b"never read")
    require_safetensors(both)
    check_source(str(both))


def test_loaders_pass_use_safetensors(tiny_models, classify_run, monkeypatch):
    """Every from_pretrained on the serve path asks transformers for safetensors only."""
    from transformers import modeling_utils

    calls = []
    original = modeling_utils.PreTrainedModel.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        calls.append((cls.__name__, kwargs.get("use_safetensors")))
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(modeling_utils.PreTrainedModel, "from_pretrained", classmethod(spy))
    load_served(str(tiny_models["decoder"]), "d")
    load_served(str(classify_run), "c")
    assert calls and all(flag is True for _, flag in calls), calls


def test_a_run_over_a_pickle_only_base_is_refused_before_binding(
    tiny_models, classify_run, tmp_path, no_unpickling
):
    """A run that holds only its trained tensors or adapter loads its base model in the
    background, after the port is bound: the base is checked with the run, before that."""
    import json

    from tunelab.runs.marker import MARKER_FILE

    base = _pickled_with_decoy(tiny_models["encoder"], tmp_path / "base")
    run = tmp_path / "adapter-run"
    run.mkdir()
    marker = json.loads((classify_run / MARKER_FILE).read_text())
    marker["base_model"] = marker["base_source"] = str(base)  # asked for and loaded from
    (run / MARKER_FILE).write_text(json.dumps(marker))
    (run / "adapter_config.json").write_text("{}")
    with pytest.raises(TunelabError, match="pytorch_model.bin") as exc:
        check_source(str(run))
    _one_line(exc)
