"""Behaviour of the peft strategies beyond the matrix: AdaLoRA's rank allocation through the
loop, its schedule for tiny budgets, (IA)^3's module choice, prompt initialisation, decoder
pooling under virtual tokens, and one-line errors for options and models that cannot work."""

from __future__ import annotations

from pathlib import Path

import peft
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import toy_examples
from tunelab.errors import TunelabError
from tunelab.models.load import load_classifier
from tunelab.strategies import get_strategy
from tunelab.strategies.adalora import orthogonal_penalty, schedule
from tunelab.strategies.ia3 import default_modules
from tunelab.strategies.options import AdaLoraOptions
from tunelab.strategies.peft_common import prepare_loaded
from tunelab.tasks.classification import encode_examples, make_collate
from tunelab.training.loop import train
from tunelab.training.options import TrainOptions

LABELS = ["money", "sport", "tech"]


def _loaded(family: str, tiny_models: dict[str, Path], dropout: bool = True):
    torch.manual_seed(0)  # the new classification head is random
    loaded = load_classifier(str(tiny_models[family]), LABELS, attention_dropout=0.0)
    if not dropout:
        for m in loaded.model.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0
    return loaded


def _build(strategy: str, family: str, tiny_models, total_steps: int = 20, **options):
    loaded = _loaded(family, tiny_models, dropout=False)
    strat = get_strategy(strategy)
    model = strat.build(loaded.model, options, loaded.family, total_steps)
    return model, loaded.tokenizer


def _batch(tok, n: int = 12) -> dict:
    data = encode_examples(toy_examples(n), tok, LABELS, max_length=32)
    return dict(make_collate(tok)([data[i] for i in range(len(data))]))


def _reload(model, family: str, tiny_models, folder: Path):
    """What runfolder.load_run does for an adapter run, plus prepare_loaded."""
    model.save_pretrained(folder)
    base = _loaded(family, tiny_models).model
    return prepare_loaded(peft.PeftModel.from_pretrained(base, folder)).eval()


# -- adalora ---------------------------------------------------------------------------------


@pytest.mark.parametrize("total", [*range(1, 12), 80, 1000])
def test_adalora_schedule_fits_any_budget(total):
    tinit, tfinal = schedule(AdaLoraOptions(), total)
    assert tinit >= 0 and tfinal >= 0
    assert tinit + tfinal < total  # peft's condition: some steps for the budget to shrink
    if total >= 2:
        assert tfinal >= 1  # the final cut to target_r happens at step total - tfinal
    # and peft accepts it
    peft.AdaLoraConfig(task_type="SEQ_CLS", total_step=total, tinit=tinit, tfinal=tfinal)


def test_adalora_schedule_is_a_fraction_of_the_run():
    assert schedule(AdaLoraOptions(tinit=0.1, tfinal=0.5), 1000) == (100, 500)
    assert schedule(AdaLoraOptions(tinit=0.2, tfinal=0.3), 50) == (10, 15)


def _adalora_run(tiny_models, workdir: Path, evaluate=None, resume=False):
    """Train the tiny BERT with AdaLoRA through the loop, hooks as the API wires them."""
    config = TrainOptions(
        precision="fp32", batch_size=4, lr=1e-2, max_steps=20, eval_every=4, keep_best=False
    )
    options = AdaLoraOptions(init_r=6, target_r=2, tinit=0.1, tfinal=0.5, deltaT=2, dropout=0.0)
    model, tok = _build("adalora", "encoder", tiny_models, total_steps=20, **vars(options))
    strat = get_strategy("adalora")
    data = encode_examples(toy_examples(26), tok, LABELS, max_length=32)
    train(
        model,
        data,
        make_collate(tok),
        config,
        workdir,
        evaluate=evaluate,
        before_step=lambda m, s, e: strat.before_step(m, options, s, e),
        after_step=lambda m, s: strat.after_step(m, options, s),
        resume=resume,
        show_progress=False,
    )
    return model, tok, options


def _kept_ranks(model) -> dict[str, int]:
    return {
        n: int((p != 0).sum())
        for n, p in model.named_parameters()
        if "lora_E" in n  # (init_r, 1) singular values; a cut rank is an exact zero
    }


def test_adalora_after_step_cuts_the_budget_to_target_r(tiny_models, tmp_path):
    model, tok, options = _adalora_run(tiny_models, tmp_path / "run")
    kept = _kept_ranks(model)
    assert len(kept) == 4  # query and value of 2 layers
    # started at init_r everywhere (24 ranks); the final cut leaves target_r on average
    assert sum(kept.values()) == options.target_r * len(kept), kept
    assert all(0 <= k <= options.init_r for k in kept.values())

    # saved at full size (cut ranks are zeros), so the reloaded model gives the same logits
    batch = _batch(tok)
    model.eval()
    with torch.no_grad():
        ref = model(**batch).logits
        got = _reload(model, "encoder", tiny_models, tmp_path / "saved")(**batch).logits
    assert torch.allclose(got, ref, atol=1e-5), (got - ref).abs().max()
    # weights from another step than the final pattern (keep-best restoring an earlier
    # evaluation, or an early stop mid-schedule) are saved as they are, cut ranks included
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_E" in n:
                p.add_(0.5)
        ref = model(**batch).logits
        got = _reload(model, "encoder", tiny_models, tmp_path / "earlier")(**batch).logits
    assert torch.allclose(got, ref, atol=1e-5), (got - ref).abs().max()
    merged = model.merge_and_unload().eval()
    with torch.no_grad():
        assert torch.allclose(merged(**batch).logits, ref, atol=1e-4)


def test_adalora_resume_in_the_final_phase_equals_an_uninterrupted_run(tiny_models, tmp_path):
    # 20 steps: the budget is cut to target_r at step 10; checkpoints every 4 steps.
    # Ctrl-C in the 4th evaluation (step 16) leaves the step-12 checkpoint: in the final phase,
    # where every step re-applies the rank pattern that peft only kept in memory
    whole, _, _ = _adalora_run(tiny_models, tmp_path / "a", evaluate=lambda m: {"macro_f1": 0.5})

    calls = 0

    def killed_at_4th(model):
        nonlocal calls
        calls += 1
        if calls == 4:
            raise KeyboardInterrupt
        return {"macro_f1": 0.5}

    with pytest.raises(KeyboardInterrupt):
        _adalora_run(tiny_models, tmp_path / "b", evaluate=killed_at_4th)
    resumed, _, _ = _adalora_run(
        tiny_models, tmp_path / "b", evaluate=lambda m: {"macro_f1": 0.5}, resume=True
    )
    a, b = dict(whole.named_parameters()), dict(resumed.named_parameters())
    assert [n for n in a if not torch.equal(a[n], b[n])] == []


def test_adalora_orthogonal_penalty_only_in_the_training_loss(tiny_models):
    model, tok = _build("adalora", "encoder", tiny_models, orth_reg_weight=0.3)
    batch = _batch(tok)
    penalty = orthogonal_penalty(model)
    assert penalty.item() > 1  # A and B start far from orthonormal: ~ sqrt(init_r) each

    model.train()
    out = model(**batch)
    expected = F.cross_entropy(out.logits, batch["labels"]) + 0.3 * penalty
    assert torch.allclose(out.loss, expected)
    out.loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_A" in n)

    model.eval()
    with torch.no_grad():
        out = model(**batch)
    assert torch.allclose(out.loss, F.cross_entropy(out.logits, batch["labels"]))


def test_loaded_adalora_evaluates_with_labels(tiny_models, tmp_path):
    # peft 0.21 loads AdaLoRA without trainable_adapter_name: a forward with labels failed
    model, tok = _build("adalora", "decoder", tiny_models)
    batch = _batch(tok)
    loaded = _reload(model, "decoder", tiny_models, tmp_path / "saved")
    with torch.no_grad():
        out = loaded(**batch)
    assert torch.allclose(out.loss, F.cross_entropy(out.logits, batch["labels"]))


# -- ia3 -------------------------------------------------------------------------------------


def _ia3_layers(model) -> dict[str, nn.Module]:
    """Last name part -> one (IA)^3 layer of that name."""
    return {
        n.rsplit(".", 1)[-1]: m
        for n, m in model.named_modules()
        if isinstance(m, peft.tuners.ia3.IA3Layer)
    }


def test_ia3_defaults_follow_peft_mapping(tiny_models):
    model, _ = _build("ia3", "decoder", tiny_models)
    layers = _ia3_layers(model)
    assert set(layers) == {"k_proj", "v_proj", "down_proj"}
    assert {n for n, m in layers.items() if m.is_feedforward} == {"down_proj"}


def test_ia3_without_a_mapping_rescales_every_linear_layer(tiny_models):
    loaded = _loaded("decoder", tiny_models)
    loaded.model.config.model_type = "unmapped-llama"  # as an architecture peft does not know
    assert default_modules(loaded.model) == ("all-linear", ["down_proj"])
    model = get_strategy("ia3").build(loaded.model, {}, "decoder", 10)
    layers = _ia3_layers(model)
    assert set(layers) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    assert {n for n, m in layers.items() if m.is_feedforward} == {"down_proj"}
    assert not _ia3_layers(model.base_model.model.score)  # the head trains whole instead


# -- prompt learning -------------------------------------------------------------------------


def _prompt_embeddings(model) -> torch.Tensor:
    return model.prompt_encoder["default"].embedding.weight.detach()


def test_prompt_init_text_starts_from_the_text_token_embeddings(tiny_models):
    text = "classify the news"
    model, tok = _build("prompt", "encoder", tiny_models, num_virtual_tokens=7, init_text=text)
    ids = tok(text)["input_ids"]  # [CLS] classify the news [SEP]: 5 ids, repeated to 7
    assert len(ids) == 5
    ids = (ids * 2)[:7]
    words = model.word_embeddings.weight.detach()
    assert torch.equal(_prompt_embeddings(model), words[ids])
    assert model.peft_config["default"].tokenizer_name_or_path == str(tiny_models["encoder"])


def test_prompt_vocab_init_uses_token_embeddings_and_random_does_not(tiny_models):
    model, _ = _build("prompt", "decoder", tiny_models, num_virtual_tokens=6)
    words = model.word_embeddings.weight.detach()
    prompt = _prompt_embeddings(model)
    assert all((words == row).all(-1).any() for row in prompt)

    model, _ = _build("prompt", "decoder", tiny_models, num_virtual_tokens=6, init="random")
    prompt = _prompt_embeddings(model)
    assert not any((words == row).all(-1).any() for row in prompt)


@pytest.mark.parametrize("strategy", ["prompt", "ptuning", "prefix"])
def test_decoder_logits_do_not_depend_on_batch_padding(strategy, tiny_models, tmp_path):
    # Llama-style classifiers pool the last non-pad token found in input_ids; prompt tuning and
    # P-tuning pass inputs_embeds instead, so without the fix a right-padded text was pooled
    # at a pad token and its logits changed with the longest text in its batch
    model, tok = _build(strategy, "decoder", tiny_models, num_virtual_tokens=4)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "prompt_encoder" in n:
                p.normal_()  # virtual tokens far from init, so they matter
    short, long = "goal match team", "bank market shares price trade economy growth stock tax"
    alone = tok([short], return_tensors="pt")
    padded = tok([short, long], return_tensors="pt", padding=True)
    assert padded["attention_mask"][0].sum() < padded["attention_mask"].shape[1]  # right-padded

    for m in (model, _reload(model, "decoder", tiny_models, tmp_path / "saved")):
        m.eval()
        with torch.no_grad():
            a, b = m(**alone).logits[0], m(**padded).logits[0]
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_prefix_on_a_grouped_query_decoder(tiny_models):
    # SmolLM2 (the embedded decoder) shares each key/value head among 3 query heads
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(
        vocab_size=300,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        intermediate_size=64,
        pad_token_id=0,
        num_labels=3,
    )
    torch.manual_seed(0)
    model = get_strategy("prefix").build(LlamaForSequenceClassification(config), {}, "decoder", 10)
    ids = torch.tensor([[5, 6, 7, 0], [8, 9, 10, 11]])
    out = model(input_ids=ids, attention_mask=(ids != 0).long(), labels=torch.tensor([0, 2]))
    out.loss.backward()
    assert model.prompt_encoder["default"].embedding.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("projection", [True, False])
def test_prefix_saves_only_the_prefix_either_way(projection, tiny_models, tmp_path):
    model, tok = _build("prefix", "encoder", tiny_models, prefix_projection=projection)
    batch = _batch(tok)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "prompt_encoder" in n:
                p.add_(0.1 * torch.randn_like(p))
    model.eval()
    with torch.no_grad():
        ref = model(**batch).logits
        loaded = _reload(model, "encoder", tiny_models, tmp_path / "saved")
        got = loaded(**batch).logits
    assert torch.allclose(got, ref, atol=1e-5), (got - ref).abs().max()
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "saved" / "adapter_model.safetensors"))
    prefix = saved["prompt_embeddings"]
    assert prefix.shape == (20, 2 * 2 * 32)  # tokens x (key + value) x layers x hidden


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "strategy,family,options,message",
    [
        ("adalora", "encoder", {"target_r": 12}, r"target_r < init_r"),
        ("adalora", "encoder", {"tinit": 0.6, "tfinal": 0.5}, r"tinit \+ adalora.tfinal"),
        ("adalora", "decoder", {"target_modules": "nope"}, r"^adalora cannot adapt this model"),
        ("ia3", "encoder", {"target_modules": "nope"}, r"^ia3 cannot adapt this model"),
        ("prompt", "decoder", {"init": "zeros"}, r"^unknown prompt.init 'zeros'"),
        ("ptuning", "encoder", {"encoder": "gru"}, r"^unknown ptuning.encoder 'gru'"),
        ("prompt", "encoder-decoder", {}, r"^prompt does not work with encoder-decoder"),
        ("prefix", "encoder-decoder", {}, r"^prefix does not work with encoder-decoder"),
    ],
)
def test_bad_options_and_models_are_one_line_errors(
    strategy, family, options, message, tiny_models
):
    loaded = _loaded(family, tiny_models)
    with pytest.raises(TunelabError, match=message) as info:
        get_strategy(strategy).build(loaded.model, options, loaded.family, 10)
    assert "\n" not in str(info.value)
