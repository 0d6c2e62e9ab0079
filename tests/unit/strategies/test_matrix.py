"""Every registered strategy x every model family: what trains, what stays put, what is saved.

The matrix iterates `STRATEGIES`, so a new strategy joins automatically; it must then add an
entry to `EXPECTED_TRAINABLE` saying, per parameter name, what it trains, and one to
`NOT_APPLICABLE` for each family it refuses.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.conftest import FAMILIES, distinct_features, toy_examples
from tunelab.errors import TunelabError
from tunelab.models.families import HEAD_NAMES
from tunelab.models.load import load_classifier
from tunelab.runs.marker import MARKER_FILE
from tunelab.runs.open import open_classifier
from tunelab.runs.save import TRAINED_FILE, save_model_files
from tunelab.strategies import STRATEGIES, get_strategy
from tunelab.tasks.classification import encode_examples, make_collate

LABELS = ["money", "sport", "tech"]
MAX_LENGTH = 32


def _dense(p):
    """A parameter's values as a plain tensor (QLoRA's frozen NF4 weights dequantized)."""
    return p.get_original_weight() if type(p).__name__ == "NF4Tensor" else p.detach().clone()


def _is_head_copy(name: str) -> bool:
    """The trained copy of the classification head (and a BERT pooler before it) that peft
    keeps in `modules_to_save`."""
    parts = name.split(".")
    return "modules_to_save" in name and any(h in parts for h in (*HEAD_NAMES, "pooler"))


# freeze and gradual with their default options on the tiny models (2 blocks per stack):
# freeze stops the embeddings and the lowest half of all blocks (T5: the encoder, 2 of 4);
# gradual starts with the head (with a pooler or final norm) and the top block alone
FROZEN_BY_FREEZE = (
    *("bert.embeddings.", "bert.encoder.layer.0."),
    *("model.embed_tokens.", "model.layers.0."),
    *("transformer.shared.", "transformer.encoder."),
)
TRAINED_BY_GRADUAL_AT_START = (
    *("bert.encoder.layer.1.", "bert.pooler.", "classifier."),
    *("model.layers.1.", "model.norm.", "score."),
    *("transformer.decoder.block.1.", "transformer.decoder.final_layer_norm."),
    "classification_head.",
)


EXPECTED_TRAINABLE: dict[str, Callable[[str], bool]] = {
    "full": lambda name: True,
    "lora": lambda name: "lora_" in name or _is_head_copy(name),
    "qlora": lambda name: "lora_" in name or _is_head_copy(name),
    "freeze": lambda name: not name.startswith(FROZEN_BY_FREEZE),
    "gradual": lambda name: name.startswith(TRAINED_BY_GRADUAL_AT_START),
    "features": lambda name: name.split(".")[0] in HEAD_NAMES or ".pooler." in name,
    "adapter": lambda name: (
        ".adapter." in name or name.split(".")[0] in HEAD_NAMES or ".pooler." in name
    ),
    "adalora": lambda name: "lora_" in name or _is_head_copy(name),
    "ia3": lambda name: "ia3_l" in name or _is_head_copy(name),
    "prefix": lambda name: name.startswith("prompt_encoder.") or _is_head_copy(name),
    "prompt": lambda name: name.startswith("prompt_encoder.") or _is_head_copy(name),
    "ptuning": lambda name: name.startswith("prompt_encoder.") or _is_head_copy(name),
}
"""Strategy -> predicate on a parameter's name: True where that parameter must train."""

NOT_APPLICABLE: dict[tuple[str, str], str] = {
    ("prefix", "encoder-decoder"): "^prefix does not work with encoder-decoder models",
    ("prompt", "encoder-decoder"): "^prompt does not work with encoder-decoder models",
    ("ptuning", "encoder-decoder"): "^ptuning does not work with encoder-decoder models",
}
"""(strategy, family) -> regex of the one-line TunelabError `apply` must raise there."""

SMALL_CHECKPOINT = {
    "lora",
    "qlora",
    "features",
    "adapter",
    "adalora",
    "ia3",
    "prefix",
    "prompt",
    "ptuning",
}
"""Strategies whose saved weights must be adapter-sized (under a third of the full model)."""

FROZEN_BACKBONE = {"features", "adapter", "adalora", "ia3", "prefix", "prompt", "ptuning"}
"""Strategies that keep the backbone frozen and start from its [CLS] features (features keeps
them; adapters start as the identity; prompts add to them): on the tiny random BERT those
barely differ between examples, so these get a backbone whose features tell examples apart,
as a pretrained one's do (see conftest.distinct_features)."""

OVERFIT_STEPS = 100
"""Enough for every family at lr 1e-2 (prompt on the tiny BERT needs ~90: BERT pools position
0, which under prompt tuning is the first virtual token, not [CLS])."""

MATRIX = [pytest.param(s, f, id=f"{s}-{f}") for s in STRATEGIES for f in FAMILIES]
"""Every strategy on an encoder, a decoder and an encoder-decoder."""

CASES = [case for case in MATRIX if tuple(case.values) not in NOT_APPLICABLE]
"""The pairs where the strategy applies (the rest must refuse, see NOT_APPLICABLE)."""


def _expected(strategy: str) -> Callable[[str], bool]:
    if strategy not in EXPECTED_TRAINABLE:
        pytest.fail(
            f"strategy {strategy!r} has no entry in EXPECTED_TRAINABLE "
            f"({__file__}): add a predicate saying which parameter names it trains"
        )
    return EXPECTED_TRAINABLE[strategy]


def _build(strategy: str, family: str, tiny_models: dict[str, Path]):
    """(model with the strategy applied, tokenizer, one collated toy batch)."""
    torch.manual_seed(0)
    loaded = load_classifier(str(tiny_models[family]), LABELS, attention_dropout=0.0)
    if strategy in FROZEN_BACKBONE and family == "encoder":
        distinct_features(loaded.model)
    strat = get_strategy(strategy)
    model = strat.build(loaded.model, strat.options(), loaded.family, total_steps=OVERFIT_STEPS)
    tok = loaded.tokenizer
    data = encode_examples(toy_examples(24), tok, LABELS, MAX_LENGTH)
    batch = make_collate(tok)([data[i] for i in range(len(data))])
    return model, tok, dict(batch)


def _trainable(model) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _train(model, batch: dict, steps: int, lr: float = 1e-2) -> None:
    torch.manual_seed(1)
    opt = torch.optim.AdamW(_trainable(model), lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()


@torch.no_grad()
def _eval_out(model, batch: dict):
    model.eval()
    return model(**batch)


@pytest.mark.parametrize("strategy,family", CASES)
def test_trainable_set_matches_strategy(strategy, family, tiny_models):
    expected = _expected(strategy)
    model, _, _ = _build(strategy, family, tiny_models)
    named = list(model.named_parameters())
    wrong = [
        f"{n} (requires_grad={p.requires_grad})" for n, p in named if p.requires_grad != expected(n)
    ]
    assert not wrong, f"{strategy}/{family}: trainable set differs from definition: {wrong[:10]}"
    assert any(p.requires_grad for _, p in named), "nothing trainable"
    if strategy == "lora":
        trained = [n for n, p in named if p.requires_grad]
        assert any("lora_" in n for n in trained), "no LoRA matrices train"
        assert any(_is_head_copy(n) for n in trained), "the classification head does not train"


@pytest.mark.parametrize("strategy,family", CASES)
def test_frozen_parameters_untouched_and_grads_only_where_trainable(strategy, family, tiny_models):
    model, _, batch = _build(strategy, family, tiny_models)
    before = {n: _dense(p) for n, p in model.named_parameters()}

    model.train()
    model(**batch).loss.backward()
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, f"frozen parameter {n} got a gradient"
        else:
            assert p.grad is not None, f"trainable parameter {n} got no gradient (unused?)"
    grads = [p.grad for p in _trainable(model)]
    assert any(g.abs().sum() > 0 for g in grads), "every trainable gradient is zero"
    model.zero_grad(set_to_none=True)

    _train(model, batch, steps=3)
    changed = []
    for n, p in model.named_parameters():
        if p.requires_grad:
            if not torch.equal(p.detach(), before[n]):
                changed.append(n)
        else:
            assert torch.equal(_dense(p), before[n]), f"frozen parameter {n} changed"
    assert changed, "no trainable parameter changed after 3 optimizer steps"


@pytest.mark.parametrize("strategy,family", CASES)
def test_loss_falls_when_overfitting_one_batch(strategy, family, tiny_models):
    model, _, batch = _build(strategy, family, tiny_models)
    initial = _eval_out(model, batch).loss.item()
    torch.manual_seed(1)
    opt = torch.optim.AdamW(_trainable(model), lr=1e-2)
    losses = []
    # lr 1e-2 suits every case but can overshoot late (adapter on the tiny Llama): check the
    # loss every 10 steps and stop once it has halved
    for _ in range(OVERFIT_STEPS // 10):
        model.train()
        for _ in range(10):
            opt.zero_grad()
            model(**batch).loss.backward()
            opt.step()
        losses.append(_eval_out(model, batch).loss.item())
        if losses[-1] < 0.5 * initial:
            break
    trace = " ".join(f"{x:.3f}" for x in losses)
    assert min(losses) < 0.5 * initial, f"{strategy}/{family}: loss {initial:.3f} -> {trace}"


def _write_marker(folder: Path, strategy: str, base: Path, kind: str) -> None:
    marker = {
        "task": "classification",
        "base_model": str(base),
        "labels": LABELS,
        "max_length": MAX_LENGTH,
        "weights": kind,
        "strategy": strategy,
        "strategy_options": dataclasses.asdict(STRATEGIES[strategy].options()),
    }
    (folder / MARKER_FILE).write_text(json.dumps(marker))


@pytest.mark.parametrize("strategy,family", CASES)
def test_save_and_load_give_identical_logits(strategy, family, tiny_models, tmp_path):
    from transformers import AutoModelForSequenceClassification

    model, tok, batch = _build(strategy, family, tiny_models)
    _train(model, batch, steps=3)  # so LoRA's B matrices and the head are no longer at init
    ref = _eval_out(model, batch).logits

    plain = tmp_path / "plain"
    plain.mkdir()
    kind = save_model_files(model, tok, plain, merge=False)
    base = tiny_models[family]
    if strategy in FROZEN_BACKBONE and family == "encoder":
        # the backbone was changed in memory (see _build): the run's base is that one
        base = tmp_path / "base"
        backbone = load_classifier(str(tiny_models[family]), LABELS, attention_dropout=0.0)
        distinct_features(backbone.model)
        backbone.model.save_pretrained(base)
        tok.save_pretrained(base)
    _write_marker(plain, strategy, base, kind)
    loaded, _, marker = open_classifier(plain)
    assert marker.labels == LABELS
    got = _eval_out(loaded, batch).logits
    assert torch.allclose(got, ref, atol=1e-5), (got - ref).abs().max()

    if strategy == "lora":
        assert kind == "adapter"
    if kind in ("adapter", "partial"):
        weights = plain / ("adapter_model.safetensors" if kind == "adapter" else TRAINED_FILE)
        assert weights.is_file()
        assert not (plain / "model.safetensors").exists(), f"{kind} run also saved full weights"
        if strategy in SMALL_CHECKPOINT:
            size = weights.stat().st_size
            full = (tiny_models[family] / "model.safetensors").stat().st_size
            assert size < full / 3, f"{weights.name} {size} B vs full model {full} B"
    if not STRATEGIES[strategy].can_merge:
        return

    # merged (or full) folders must open with plain transformers, no tunelab or peft involved
    merged = tmp_path / "merged"
    merged.mkdir()
    kind = save_model_files(model, tok, merged, merge=True)
    assert kind in ("full", "merged")
    if kind == "merged":
        assert (merged / "adapter" / "adapter_model.safetensors").is_file()
    assert (merged / "model.safetensors").is_file()
    plain_model = AutoModelForSequenceClassification.from_pretrained(merged)
    assert plain_model.config.id2label == dict(enumerate(LABELS))
    got = _eval_out(plain_model, batch).logits
    assert torch.allclose(got, ref, atol=1e-4), (got - ref).abs().max()


@pytest.mark.parametrize("strategy,family", MATRIX)
def test_strategy_applies_exactly_where_declared(strategy, family, tiny_models):
    # a strategy builds on every family except those NOT_APPLICABLE names, and there it
    # refuses with the declared one-line error (a stale or missing entry fails here)
    refusal = NOT_APPLICABLE.get((strategy, family))
    if refusal is None:
        model, _, batch = _build(strategy, family, tiny_models)
        assert _trainable(model), f"{strategy}/{family}: nothing trainable"
        assert _eval_out(model, batch).logits.shape == (len(batch["labels"]), len(LABELS))
        return
    with pytest.raises(TunelabError, match=refusal) as info:
        _build(strategy, family, tiny_models)
    assert "\n" not in str(info.value)
