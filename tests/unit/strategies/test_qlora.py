"""qlora: a 4-bit NF4 base (torchao) with LoRA (peft) on top; only LoRA and the head train,
the base weights take about an eighth of their fp32 bytes, and the run folder opens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import FAMILIES, toy_examples, write_csv
from tunelab.errors import TunelabError
from tunelab.models.load import load_classifier
from tunelab.runs.marker import MARKER_FILE
from tunelab.strategies import get_strategy, strategy_info
from tunelab.strategies.qlora import base_linears, is_nf4, quantize_base, tensor_bytes
from tunelab.tasks.classification import encode_examples, make_collate

pytest.importorskip("torchao")
from torchao.quantization.quantize_.workflows.nf4.nf4_tensor import NF4Tensor  # noqa: E402

LABELS = ["money", "sport", "tech"]


def _build(family: str, tiny_models: dict[str, Path]):
    torch.manual_seed(0)
    loaded = load_classifier(str(tiny_models[family]), LABELS, attention_dropout=0.0)
    dense = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    linears = {n for n, _ in base_linears(loaded.model)}
    strat = get_strategy("qlora")
    model = strat.build(loaded.model, strat.options(), loaded.family, total_steps=50)
    data = encode_examples(toy_examples(24), loaded.tokenizer, LABELS, max_length=32)
    batch = dict(make_collate(loaded.tokenizer)([data[i] for i in range(len(data))]))
    return model, batch, dense, linears


@pytest.mark.parametrize("family", FAMILIES)
def test_only_lora_trains_over_a_4bit_base(family, tiny_models):
    model, batch, dense, linears = _build(family, tiny_models)
    assert linears, "no base linear layer was chosen for NF4"
    named = dict(model.named_parameters())
    nf4 = {n for n, p in named.items() if isinstance(p, NF4Tensor)}
    # every chosen base Linear's weight is NF4 (peft moved it under .base_layer), all frozen
    assert len(nf4) == len(linears)
    assert all(not named[n].requires_grad for n in nf4)
    trainable = {n for n, p in named.items() if p.requires_grad}
    assert trainable and all("lora_" in n or "modules_to_save" in n for n in trainable)
    assert any("lora_" in n for n in trainable)
    # the head (trained in full) and the embeddings stay in fp32
    assert not any(is_nf4(p) for n, p in named.items() if "modules_to_save" in n or "embed" in n)

    # memory of the quantized base weights: NF4 against the fp32 they replaced
    nf4_bytes = sum(tensor_bytes(named[n]) for n in nf4)
    fp32_bytes = sum(named[n].numel() * 4 for n in nf4)
    assert nf4_bytes / fp32_bytes < 0.35, (nf4_bytes, fp32_bytes)

    # the NF4 weights are the dense ones rounded to 16 levels per block, not something else
    for name in sorted(nf4)[:3]:
        original = dense[name.removeprefix("base_model.model.").replace(".base_layer", "")]
        restored = named[name].get_original_weight()
        error = (restored - original).abs().max() / original.abs().max()
        assert 0 < error < 0.2, (name, float(error))

    # training: loss falls, only trainable tensors get gradients, the 4-bit base stays put
    frozen_before = {n: tensor_bytes(p) for n, p in named.items() if n in nf4}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.eval()
    with torch.no_grad():
        initial = model(**batch).loss.item()
    model.train()
    for _ in range(40):
        opt.zero_grad()
        model(**batch).loss.backward()
        assert all(named[n].grad is None for n in nf4)
        opt.step()
    model.eval()
    with torch.no_grad():
        final = model(**batch).loss.item()
    assert final < 0.5 * initial, f"{family}: loss {initial:.3f} -> {final:.3f}"
    assert all(isinstance(p, NF4Tensor) for n, p in model.named_parameters() if n in nf4)
    assert {n: tensor_bytes(named[n]) for n in nf4} == frozen_before


def test_quantize_base_reports_bytes_and_is_idempotent(tiny_models):
    loaded = load_classifier(str(tiny_models["decoder"]), LABELS)
    report = quantize_base(loaded.model)
    assert report.layers == len(base_linears(loaded.model)) > 0
    assert report.nf4_bytes / report.dense_bytes < 0.35
    again = quantize_base(loaded.model)
    assert again.layers == 0  # already NF4: nothing quantized twice
    assert not is_nf4(loaded.model.score.weight)  # the new head trains in full precision


def test_a_model_without_quantizable_linears_is_one_line():
    model = torch.nn.Sequential(torch.nn.Linear(3, 5))  # 15 values: no 64-value block
    with pytest.raises(TunelabError, match="use --strategy lora") as info:
        quantize_base(model)
    assert "\n" not in str(info.value)


def test_registry_refuses_merge():
    assert strategy_info("qlora").can_merge is False
    assert get_strategy("qlora").can_merge is False


@pytest.fixture(scope="module")
def qlora_run(tiny_models, tmp_path_factory) -> dict:
    from tunelab import api

    root = tmp_path_factory.mktemp("qlora")
    data = write_csv(root / "toy.csv", toy_examples(60))
    cfg = api.build_config(
        overrides={
            "model.name": str(tiny_models["decoder"]),
            "data.source": str(data),
            "data.max_length": 32,
            "strategy": "qlora",
            "qlora.r": 4,
            "train.max_steps": 30,
            "train.min_steps": 0,
            "train.batch_size": 8,
            "train.lr": 1e-2,
            "train.threads": 1,
            "train.log_every": 1,
            "train.precision": "fp32",
            "run.output_dir": str(root / "runs"),
            "run.name": "qlora",
        }
    )
    result = api.finetune(cfg, quiet=True)
    return {"run": result.run_dir, "metrics": result.metrics}


def test_a_qlora_run_trains_saves_an_adapter_and_predicts(qlora_run):
    from tunelab import api

    run = Path(qlora_run["run"])
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
    # saved like a lora run: the adapter only, no 4-bit or full weights
    assert (run / "adapter_model.safetensors").is_file()
    assert not (run / "model.safetensors").exists()
    marker = json.loads((run / MARKER_FILE).read_text())
    assert marker["strategy"] == "qlora" and marker["weights"] == "adapter"
    preds = api.predict(run, ["bank shares market", "goal match team"], quiet=True)
    assert len(preds) == 2 and all(p["label"] in LABELS for p in preds)


def test_merge_is_refused_before_training(tiny_models, tmp_path):
    from tunelab import api

    cfg = api.build_config(
        overrides={
            "model.name": str(tiny_models["encoder"]),
            "data.source": str(write_csv(tmp_path / "toy.csv", toy_examples(30))),
            "strategy": "qlora",
            "run.merge": True,
            "run.output_dir": str(tmp_path / "runs"),
        }
    )
    with pytest.raises(TunelabError, match="qlora cannot be merged"):
        api.finetune(cfg, quiet=True)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_the_saved_adapter_opens_and_rebuilds_the_trained_model(tiny_models, tmp_path):
    """The run opens like a lora run. Over the full-precision base its outputs differ from
    the 4-bit model that trained by the NF4 rounding only; over a base quantized again
    (`quantize_base`, as runs/open.py may do for qlora runs) they are the trained ones."""
    from peft import PeftModel

    from tunelab.runs.open import open_classifier
    from tunelab.runs.save import save_model_files

    model, batch, _, _ = _build("decoder", tiny_models)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(5):
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        trained = model(**batch).logits
    tok = load_classifier(str(tiny_models["decoder"]), LABELS).tokenizer
    assert save_model_files(model, tok, tmp_path, merge=False) == "adapter"
    marker = {
        "task": "classification",
        "base_model": str(tiny_models["decoder"]),
        "labels": LABELS,
        "max_length": 32,
        "weights": "adapter",
        "strategy": "qlora",
        "strategy_options": {},
    }
    (tmp_path / MARKER_FILE).write_text(json.dumps(marker))
    opened, _, _ = open_classifier(tmp_path)
    with torch.no_grad():
        got = opened(**batch).logits
    if any(is_nf4(p) for p in opened.parameters()):  # runs/open.py rebuilt the 4-bit base
        torch.testing.assert_close(got, trained)
    else:  # over the fp32 base: close, not equal (7e-2 of logits up to 1.2 here)
        gap = (got - trained).abs().max().item()
        assert 0 < gap < 0.1 * trained.abs().max().item(), gap

    base = load_classifier(str(tiny_models["decoder"]), LABELS).model
    quantize_base(base)
    exact = PeftModel.from_pretrained(base, tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(exact(**batch).logits, trained)


def test_without_torchao_qlora_is_one_line(monkeypatch, tiny_models):
    import sys

    monkeypatch.setitem(sys.modules, "torchao.quantization", None)  # import fails
    loaded = load_classifier(str(tiny_models["encoder"]), LABELS)
    with pytest.raises(TunelabError, match=r"needs torchao: pip install tunelab\[compress\]"):
        get_strategy("qlora").build(loaded.model, {}, loaded.family, 10)
