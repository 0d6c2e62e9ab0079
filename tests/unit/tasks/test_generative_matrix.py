"""Every registered strategy x the generative tasks (causal_lm on a tiny Llama, seq2seq on a
tiny T5): what trains, that the loss falls on one batch, and save -> load_lm gives the same
logits. The matrix iterates `STRATEGIES`: a new strategy must add its row to EXPECTED."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.conftest import build_tokenizer, tiny_config
from tunelab.errors import TunelabError
from tunelab.runs.marker import MARKER_FILE
from tunelab.runs.open import open_lm
from tunelab.runs.save import TRAINED_FILE, save_model_files
from tunelab.strategies import STRATEGIES, get_strategy
from tunelab.tasks import causal_lm, seq2seq
from tunelab.tasks.generative import load_base

TASKS = {"causal_lm": "decoder", "seq2seq": "encoder-decoder"}

# freeze (defaults): the embeddings and the lowest half of the blocks (T5: the encoder);
# gradual at step 0: the head (the final norm, and an untied LM head) and the top block
EXPECTED: dict[str, Callable[[str, str], bool]] = {
    "full": lambda task, n: True,
    "lora": lambda task, n: "lora_" in n,
    "qlora": lambda task, n: "lora_" in n,
    "adalora": lambda task, n: "lora_" in n,
    "ia3": lambda task, n: "ia3_l" in n,
    "prefix": lambda task, n: n.startswith("prompt_encoder."),
    "prompt": lambda task, n: n.startswith("prompt_encoder."),
    "ptuning": lambda task, n: n.startswith("prompt_encoder."),
    "adapter": lambda task, n: ".adapter." in n,
    "freeze": lambda task, n: (
        n.startswith(("model.layers.1.", "model.norm.", "lm_head."))
        if task == "causal_lm"
        else n.startswith(("decoder.block.", "decoder.final_layer_norm."))
    ),
    "gradual": lambda task, n: (
        n.startswith(("model.layers.1.", "model.norm.", "lm_head."))
        if task == "causal_lm"
        else n.startswith(("decoder.block.1.", "decoder.final_layer_norm."))
    ),
}
REFUSED = {"features": "no classification head tunelab knows"}
"""Strategies that cannot train a language model -> the one-line error they raise."""

CASES = [pytest.param(s, t, id=f"{s}-{t}") for s in STRATEGIES for t in TASKS if s not in REFUSED]
PAIRS = [
    {"prompt": "the match and the goal today", "response": "team coach win"},
    {"prompt": "a report on the market", "response": "bank shares"},
    {"prompt": "new phone with a chip", "response": "software data computer"},
    {"prompt": "of to in on for with said", "response": "tax price growth"},
]
STEPS = 60
LR = {"prompt": 5e-2, "ptuning": 5e-2, "ia3": 5e-2}
"""Learning rates above the default 1e-2 for the methods with the fewest weights (prompt
tuning is usually run at 0.3 and more)."""


@pytest.fixture(scope="module")
def tiny_lms(tmp_path_factory) -> dict[str, Path]:
    """task -> a tiny model folder with its LM head (a base model has none to reload)."""
    from transformers import LlamaForCausalLM, T5ForConditionalGeneration

    root = tmp_path_factory.mktemp("tiny-lms")
    out = {}
    for task, family in TASKS.items():
        folder = root / family
        tok = build_tokenizer(folder)
        torch.manual_seed(0)
        cls = LlamaForCausalLM if task == "causal_lm" else T5ForConditionalGeneration
        config = tiny_config(family, len(tok))
        # weights on the scale of a trained model's: at the default 0.02 a random 2-layer
        # model's outputs barely depend on its input, and a frozen backbone (lora, prompts,
        # adapters) gives its few trained weights little to work with
        if task == "causal_lm":  # (T5's own init already scales with its width)
            config.initializer_range = 0.2
        cls(config).save_pretrained(folder)
        out[task] = folder
    return out


def _build(strategy: str, task: str, tiny_lms):
    """(model with the strategy applied, tokenizer, one collated batch, base folder)."""
    torch.manual_seed(0)
    loaded = load_base(str(tiny_lms[task]), task)
    model = get_strategy(strategy).build(loaded.model, {}, loaded.family, STEPS)
    tok = loaded.tokenizer
    if task == "causal_lm":
        data = causal_lm.encode_pairs(PAIRS, tok, 32, chat_template=False)
        batch = causal_lm.make_collate(tok.pad_token_id)(list(data))
    else:
        data = seq2seq.encode_pairs(PAIRS, tok, 32, 16)
        batch = seq2seq.make_collate(tok)(list(data))
    return model, tok, batch


@pytest.mark.parametrize("strategy,task", CASES)
def test_only_the_strategys_parameters_train(strategy, task, tiny_lms):
    model, _, batch = _build(strategy, task, tiny_lms)
    named = list(model.named_parameters())
    wrong = [n for n, p in named if p.requires_grad != EXPECTED[strategy](task, n)]
    assert not wrong, f"{strategy}/{task}: trainable set differs: {wrong[:8]}"
    assert any(p.requires_grad for _, p in named)
    model.train()
    model(**batch).loss.backward()
    for n, p in named:
        if p.requires_grad:
            assert p.grad is not None, f"trainable {n} got no gradient"
        else:
            assert p.grad is None, f"frozen {n} got a gradient"


def _dense(p):
    """A parameter's values as a plain tensor (QLoRA's frozen NF4 weights dequantized)."""
    return p.get_original_weight() if type(p).__name__ == "NF4Tensor" else p.detach().clone()


@pytest.mark.parametrize("strategy,task", CASES)
def test_loss_falls_when_overfitting_one_batch(strategy, task, tiny_lms):
    model, _, batch = _build(strategy, task, tiny_lms)
    frozen = {n: _dense(p) for n, p in model.named_parameters() if not p.requires_grad}
    model.eval()
    with torch.no_grad():
        initial = model(**batch).loss.item()
    torch.manual_seed(1)
    lr = LR.get(strategy, 1e-2)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(STEPS):
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        final = model(**batch).loss.item()
    # 10%: what the weakest (a prompt before a frozen random T5) reach; training nothing is 0%
    assert final < 0.9 * initial, f"{strategy}/{task}: loss {initial:.3f} -> {final:.3f}"
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(_dense(p), frozen[n]), f"frozen {n} changed"


@pytest.mark.parametrize("strategy,task", CASES)
def test_save_then_load_lm_gives_identical_logits(strategy, task, tiny_lms, tmp_path):
    model, tok, batch = _build(strategy, task, tiny_lms)
    torch.manual_seed(1)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(3):  # move the trained weights away from their start
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        expected = model(**batch).logits
    run = tmp_path / "run"
    run.mkdir()
    kind = save_model_files(model, tok, run, merge=False)
    marker = {
        "task": task,
        "strategy": strategy,
        "strategy_options": {},
        "base_model": str(tiny_lms[task]),
        "weights": kind,
    }
    (run / MARKER_FILE).write_text(json.dumps(marker))
    if strategy in ("full",):
        assert kind == "full"
    elif strategy in ("freeze", "gradual", "adapter"):
        assert kind == "partial" and (run / TRAINED_FILE).is_file()
    else:
        assert kind == "adapter"
    loaded, _ = open_lm(str(run))
    assert not loaded.model.training
    with torch.no_grad():
        got = loaded.model(**batch).logits
    assert torch.allclose(got, expected, atol=1e-5), f"max diff {(got - expected).abs().max()}"


@pytest.mark.parametrize("strategy", sorted(REFUSED))
@pytest.mark.parametrize("task", TASKS)
def test_strategies_without_a_head_to_train_refuse_in_one_line(strategy, task, tiny_lms):
    loaded = load_base(str(tiny_lms[task]), task)
    with pytest.raises(TunelabError, match=REFUSED[strategy]) as err:
        get_strategy(strategy).build(loaded.model, {}, loaded.family, 1)
    assert "\n" not in str(err.value)
