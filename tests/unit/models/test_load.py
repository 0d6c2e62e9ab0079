"""Model loading: family detection, classifier heads, source resolution and GGUF conversion."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import FAMILIES, tiny_config
from tunelab.defaults import EMBEDDED_MODELS
from tunelab.errors import TunelabError
from tunelab.models.families import detect_family, head_module_names
from tunelab.models.load import load_classifier
from tunelab.models.sources import convert_gguf, resolve_source
from tunelab.runs.marker import MARKER_FILE

LABELS = ["money", "sport", "tech"]


@pytest.mark.parametrize("family", FAMILIES)
def test_detect_family(family):
    assert detect_family(tiny_config(family, 100)) == family


def test_detect_family_decoder_flagged_encoder_is_decoder():
    config = tiny_config("encoder", 100)
    config.is_decoder = True
    assert detect_family(config) == "decoder"


def test_head_module_names_on_a_model_without_head():
    assert head_module_names(nn.Linear(2, 2)) == []


@pytest.mark.parametrize("family", FAMILIES)
def test_load_classifier(family, tiny_models):
    loaded = load_classifier(str(tiny_models[family]), LABELS)
    model, config = loaded.model, loaded.model.config
    assert loaded.family == family
    assert loaded.source == str(tiny_models[family])
    assert config.num_labels == 3
    assert config.id2label == {0: "money", 1: "sport", 2: "tech"}
    assert config.label2id == {"money": 0, "sport": 1, "tech": 2}
    assert config.problem_type == "single_label_classification"
    heads = head_module_names(model)
    assert len(heads) == 1, heads
    assert config.pad_token_id is not None
    assert config.pad_token_id == loaded.tokenizer.pad_token_id
    assert all(p.dtype == torch.float32 for p in model.parameters())
    ids = loaded.tokenizer(["bank market today", "goal"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model.eval()(**ids).logits
    assert logits.shape == (2, 3)


def test_attention_dropout_override(tiny_models):
    folder = str(tiny_models["encoder"])
    zero = load_classifier(folder, LABELS, attention_dropout=0.0).model.config
    kept = load_classifier(folder, LABELS, attention_dropout=None).model.config
    assert zero.attention_probs_dropout_prob == 0.0
    assert kept.attention_probs_dropout_prob == pytest.approx(0.1)  # BertConfig's default
    assert zero.hidden_dropout_prob == kept.hidden_dropout_prob  # only attention is touched


def test_attention_dropout_leaves_t5_alone(tiny_models):
    folder = str(tiny_models["encoder-decoder"])
    zero = load_classifier(folder, LABELS, attention_dropout=0.0).model.config
    assert zero.dropout_rate == pytest.approx(0.1)


def test_resolve_source_local_folder(tiny_models):
    assert resolve_source(str(tiny_models["encoder"])) == str(tiny_models["encoder"])


def test_resolve_source_missing_local_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TunelabError, match="not found") as err:
        resolve_source("./no/such/dir")
    assert "minilm" in str(err.value)


def test_resolve_source_hub_id_offline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TunelabError) as err:
        resolve_source("someone/some-model")
    msg = str(err.value)
    assert "offline" in msg
    for name in EMBEDDED_MODELS:
        assert name in msg


def test_resolve_source_hub_id_online_is_passed_through(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert resolve_source("someone/some-model") == "someone/some-model"


def test_load_classifier_offline_hub_id_is_a_tunelab_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TunelabError, match="offline"):
        load_classifier("someone/some-model", LABELS)


def test_resolve_source_folder_without_config(tmp_path):
    (tmp_path / "readme.txt").write_text("not a model")
    with pytest.raises(TunelabError, match="no config.json"):
        resolve_source(str(tmp_path))


def test_resolve_source_folder_with_several_ggufs_names_them(tmp_path):
    (tmp_path / "a.gguf").write_bytes(b"")
    (tmp_path / "b.gguf").write_bytes(b"")
    with pytest.raises(TunelabError) as err:
        resolve_source(str(tmp_path))
    msg = str(err.value)
    assert "a.gguf" in msg and "b.gguf" in msg and "gguf_file" in msg


def test_resolve_source_adapter_only_run_folder(tmp_path):
    (tmp_path / MARKER_FILE).write_text(json.dumps({"task": "classification"}))
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(TunelabError, match="merge"):
        resolve_source(str(tmp_path))


def test_convert_gguf_missing_file(tmp_path):
    with pytest.raises(TunelabError, match="not found"):
        convert_gguf(tmp_path / "nothing.gguf", tmp_path / "out")


def _require_package(embedded: str) -> None:
    # find_spec, not import: some of these packages print on import
    if importlib.util.find_spec(EMBEDDED_MODELS[embedded].package) is None:
        pytest.skip(f"package {EMBEDDED_MODELS[embedded].package} is not installed")


def test_embedded_minilm_resolves_to_a_model_folder():
    from transformers import AutoConfig

    _require_package("minilm")
    folder = Path(resolve_source("minilm"))
    assert (folder / "config.json").is_file()
    assert detect_family(AutoConfig.from_pretrained(folder)) == "encoder"


@pytest.mark.slow
def test_convert_gguf_smollm2(tmp_path, monkeypatch):
    """The embedded GGUF converts once into an fp32 folder with the same next-token logits."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _require_package("smollm2-135m")
    gguf = EMBEDDED_MODELS["smollm2-135m"].locate()
    assert gguf.is_file(), gguf

    out = convert_gguf(gguf, tmp_path / "smollm2")
    assert out == tmp_path / "smollm2"
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    assert not (tmp_path / "smollm2.partial").exists()
    files = sorted(p for p in out.iterdir() if p.is_file())
    assert any(p.suffix == ".safetensors" for p in files)
    stamps = {p.name: os.stat(p).st_mtime_ns for p in files}

    def no_reload(*args, **kwargs):
        raise AssertionError("a second convert_gguf call loaded the GGUF again")

    with monkeypatch.context() as m:
        m.setattr(AutoModelForCausalLM, "from_pretrained", no_reload)
        assert convert_gguf(gguf, tmp_path / "smollm2") == out  # cached: nothing rewritten
    assert {p.name: os.stat(p).st_mtime_ns for p in out.iterdir() if p.is_file()} == stamps

    prompt = "The capital of France is"
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok(prompt, return_tensors="pt").input_ids
    assert tok.decode(ids[0], skip_special_tokens=True) == prompt
    assert len(tok) <= config["vocab_size"]

    with torch.no_grad():
        converted = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        assert all(p.dtype == torch.float32 for p in converted.parameters())
        got = converted(ids).logits[0, -1]
        del converted
        direct = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        ).eval()
        want = direct(ids).logits[0, -1]
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
