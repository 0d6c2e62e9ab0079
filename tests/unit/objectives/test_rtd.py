"""RTD: discriminator labels are exactly "token differs from the original", embeddings are
shared, and the loss is generator MLM + 50 x discriminator BCE."""

from __future__ import annotations

import torch
from transformers import ElectraForMaskedLM, ElectraForPreTraining

from tests.unit.objectives.toy_corpus import toy_documents
from tunelab.objectives.masking import mask_tokens, special_positions
from tunelab.objectives.presets import electra_configs
from tunelab.objectives.rtd import RtdModel, replace_masked, sample_rows
from tunelab.objectives.tokenizer import train_wordpiece


def test_replace_masked_labels_are_differs_from_original():
    g = torch.Generator().manual_seed(0)
    vocab = 50
    ids = torch.randint(5, vocab, (16, 24), generator=g)
    special = special_positions(ids, [0, 1, 2, 3, 4])
    inputs, labels = mask_tokens(ids, special, 4, vocab, 0.3, g)
    # a generator that puts most mass on the original token: some samples equal it
    logits = torch.randn(16, 24, vocab, generator=g)
    logits.scatter_(2, ids.unsqueeze(-1), 3.0)
    chosen = labels != -100
    out, disc = replace_masked(inputs, labels, logits[chosen], g)
    assert torch.equal(disc, (out != ids).float())
    assert torch.equal(out[~chosen], inputs[~chosen])  # only chosen positions are resampled
    same = chosen & (out == ids)
    assert same.any() and (disc[same] == 0).all()  # sampled == original counts as original
    assert (disc[chosen & (out != ids)] == 1).all() and (disc[~chosen] == 0).all()


def test_shared_embeddings_and_joint_loss():
    tok = train_wordpiece(iter(toy_documents(20)), 200)
    d_cfg, g_cfg = electra_configs("tiny", tok, 32, 0.25)
    assert g_cfg.hidden_size == d_cfg.hidden_size // 4
    torch.manual_seed(0)
    model = RtdModel(ElectraForPreTraining(d_cfg), ElectraForMaskedLM(g_cfg), 50.0)
    gen, disc = model.generator, model.discriminator
    assert gen.electra.embeddings is disc.electra.embeddings
    assert gen.generator_lm_head.weight is disc.electra.embeddings.word_embeddings.weight
    ids = torch.randint(5, len(tok), (4, 32))
    special = special_positions(ids, tok.all_special_ids)
    inputs, labels = mask_tokens(ids, special, tok.mask_token_id, len(tok), 0.15)
    out = model(input_ids=inputs, attention_mask=torch.ones_like(ids), labels=labels)
    assert torch.allclose(out.loss, out.gen_loss + 50.0 * out.disc_loss)
    out.loss.backward()
    assert gen.electra.encoder.layer[0].attention.self.query.weight.grad is not None
    assert disc.electra.encoder.layer[0].attention.self.query.weight.grad is not None
    # parameters are counted once: the shared embedding is not duplicated
    names = [n for n, _ in model.named_parameters() if "word_embeddings" in n]
    assert names == ["discriminator.electra.embeddings.word_embeddings.weight"]


def test_sample_rows_follows_the_distribution():
    g = torch.Generator().manual_seed(0)
    probs = torch.tensor([[0.5, 0.0, 0.3, 0.2], [0.0, 0.0, 0.0, 1.0], [0.25, 0.25, 0.25, 0.25]])
    draws = torch.stack([sample_rows(probs, g) for _ in range(20_000)])  # (draws, rows)
    for row in range(3):
        freq = torch.bincount(draws[:, row], minlength=4).float() / len(draws)
        assert torch.allclose(freq, probs[row], atol=0.015), (row, freq)
    assert (draws[:, 0] != 1).all() and (draws[:, 1] == 3).all()  # zero mass is never drawn
    again = torch.stack([sample_rows(probs, torch.Generator().manual_seed(5)) for _ in range(2)])
    assert torch.equal(again[0], again[1])  # the generator makes it reproducible


def test_discriminator_learns_replacements_it_can_see():
    """Rows of one repeated token: a replaced token is visible from its neighbours. After 400
    joint RTD steps the discriminator flags random replacements it has never seen (recall and
    false-positive rate on a probe), so generator sampling, labels and loss fit together."""
    from transformers import ElectraConfig

    torch.manual_seed(0)
    vocab, g = 40, torch.Generator().manual_seed(0)
    common = {
        "vocab_size": vocab,
        "embedding_size": 32,
        "num_hidden_layers": 2,
        "max_position_embeddings": 64,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }
    d_cfg = ElectraConfig(hidden_size=32, num_attention_heads=2, intermediate_size=64, **common)
    g_cfg = ElectraConfig(hidden_size=16, num_attention_heads=1, intermediate_size=32, **common)
    model = RtdModel(ElectraForPreTraining(d_cfg), ElectraForMaskedLM(g_cfg))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def rows(n: int) -> torch.Tensor:
        return torch.randint(5, vocab, (n, 1), generator=g).repeat(1, 24)

    for _ in range(400):
        ids = rows(32)
        inputs, labels = mask_tokens(
            ids, special_positions(ids, [0, 1, 2, 3, 4]), 4, vocab, 0.15, g
        )
        out = model(
            input_ids=inputs, attention_mask=torch.ones_like(ids), labels=labels, sample_generator=g
        )
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    ids = rows(64)
    chosen = torch.rand(ids.shape, generator=g) < 0.15
    probe = ids.clone()
    probe[chosen] = torch.randint(5, vocab, (int(chosen.sum()),), generator=g)
    replaced = probe != ids
    with torch.no_grad():
        flagged = (
            model.discriminator(input_ids=probe, attention_mask=torch.ones_like(ids)).logits > 0
        )
    assert (flagged & replaced).sum() / replaced.sum() > 0.9
    assert (flagged & ~replaced).sum() / (~replaced).sum() < 0.05
