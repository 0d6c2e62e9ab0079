"""Replaced-token detection (ELECTRA): a small MLM generator fills the masked positions with
tokens sampled from its own distribution; the discriminator predicts, for every token, whether
it was replaced.

Generator and discriminator share the token, position and token-type embeddings (the
generator's output layer is tied to the same word embeddings); the generator is
`generator_fraction` of the discriminator's hidden size and projects up from the shared
embedding width. The sampling carries no gradient. A sampled token that equals the original
counts as original, so the discriminator's labels are exactly `input != original`. Loss =
generator MLM loss + `rtd_weight` (50, as ELECTRA) x discriminator binary cross-entropy. The
generator's output layer runs at the masked positions only (heads.py), as in ELECTRA's code.

The run folder holds the discriminator (`ElectraForPreTraining`: `tunelab finetune --model
RUN` and `AutoModelForSequenceClassification` open it) and the generator in `generator/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers.utils import ModelOutput

from tunelab.errors import TunelabError
from tunelab.objectives import mlm
from tunelab.objectives.heads import masked_lm
from tunelab.objectives.options import PretrainOptions

FAMILY = "encoder"
SENTENCES = False
GENERATOR_DIR = "generator"
separator, dataset, make_collate = mlm.separator, mlm.dataset, mlm.make_collate


def sample_rows(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row of `probs` (n, vocab), drawn with probability proportional to the row.

    Inverse-CDF sampling: one uniform per row and a binary search in the row's cumulative sum.
    `torch.multinomial` draws an exponential per vocabulary entry: on 614 x 8,000
    probabilities (one `small` RTD batch) 166 ms against 11 ms here (1 thread), and it was
    10% of the profiled RTD step. Entries of probability 0 are never drawn."""
    cdf = probs.cumsum(-1)
    u = torch.rand(len(probs), 1, generator=generator, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=probs.shape[-1] - 1)


def replace_masked(
    inputs: torch.Tensor,
    labels: torch.Tensor,
    gen_logits: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(discriminator input_ids, labels): chosen positions (labels != -100) get a token sampled
    from the generator's softmax (`gen_logits`: (n_chosen, vocab), in row-major order of the
    chosen positions); label 1.0 where the result differs from the original token."""
    chosen = labels != -100
    original = torch.where(chosen, labels, inputs)
    out = inputs.clone()
    if chosen.any():
        probs = torch.softmax(gen_logits.detach().float(), dim=-1)
        out[chosen] = sample_rows(probs, generator)
    return out, (out != original).float()


@dataclass
class RtdOutput(ModelOutput):
    loss: torch.Tensor | None = None
    gen_loss: torch.Tensor | None = None
    disc_loss: torch.Tensor | None = None
    gen_logits: torch.Tensor | None = None  # (n_chosen, vocab)
    gen_labels: torch.Tensor | None = None  # (n_chosen,)
    disc_logits: torch.Tensor | None = None
    disc_labels: torch.Tensor | None = None


class RtdModel(nn.Module):
    """Generator + discriminator with shared embeddings; forward(**batch).loss is the joint loss."""

    def __init__(self, discriminator, generator, weight: float = 50.0) -> None:
        super().__init__()
        self.discriminator, self.generator, self.weight = discriminator, generator, weight
        shared = discriminator.electra.embeddings
        if generator.config.embedding_size != discriminator.config.embedding_size:
            raise TunelabError("generator and discriminator must embed at the same width")
        generator.electra.embeddings = shared
        generator.generator_lm_head.weight = shared.word_embeddings.weight

    @property
    def kept(self):
        """The model the run folder holds (the generator goes to `generator/`)."""
        return self.discriminator

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        sample_generator: torch.Generator | None = None,
    ) -> RtdOutput:
        g = masked_lm(
            self.generator,
            labels,
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
        )
        disc_inputs, disc_labels = replace_masked(input_ids, labels, g.logits, sample_generator)
        d = self.discriminator(
            input_ids=disc_inputs,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            labels=disc_labels,
        )
        return RtdOutput(
            loss=g.loss + self.weight * d.loss,
            gen_loss=g.loss,
            disc_loss=d.loss,
            gen_logits=g.logits,
            gen_labels=g.labels,
            disc_logits=d.logits,
            disc_labels=disc_labels,
        )


def build_model(p: PretrainOptions, tok, source: str | None) -> RtdModel:
    from transformers import AutoConfig, ElectraForMaskedLM, ElectraForPreTraining

    from tunelab.objectives.presets import electra_configs

    if source is None:
        disc_cfg, gen_cfg = electra_configs(
            p.preset, tok, p.seq_len, p.generator_fraction, p.dropout
        )
        return RtdModel(ElectraForPreTraining(disc_cfg), ElectraForMaskedLM(gen_cfg), p.rtd_weight)
    kind = AutoConfig.from_pretrained(source).model_type
    if kind != "electra":
        raise TunelabError(
            f"rtd continues ELECTRA checkpoints, {source} is {kind}: use --objective mlm, "
            "or start rtd from scratch (drop --from)"
        )
    disc = ElectraForPreTraining.from_pretrained(source, dtype=torch.float32)
    gen_dir = Path(source) / GENERATOR_DIR
    if (gen_dir / "config.json").is_file():
        gen = ElectraForMaskedLM.from_pretrained(gen_dir, dtype=torch.float32)
    else:
        # a new generator of generator_fraction of the discriminator's width
        c = disc.config
        g_cfg = type(c).from_dict(
            {
                **c.to_dict(),
                "hidden_size": max(16, int(c.hidden_size * p.generator_fraction)),
                "intermediate_size": max(64, int(c.intermediate_size * p.generator_fraction)),
                "num_attention_heads": max(1, round(c.num_attention_heads * p.generator_fraction)),
            }
        )
        gen = ElectraForMaskedLM(g_cfg)
    return RtdModel(disc, gen, p.rtd_weight)


def eval_sums(model, batch, generator=None) -> dict[str, tuple[float, int]]:
    """Joint/generator/discriminator loss, generator MLM accuracy, discriminator accuracy."""
    out = model(**batch, sample_generator=generator)
    mask = batch["attention_mask"].bool()
    n_chosen, n_tokens, b = len(out.gen_labels), int(mask.sum()), len(mask)
    gen_correct = (out.gen_logits.argmax(-1) == out.gen_labels).sum().item()
    disc_pred = (out.disc_logits > 0).float()
    disc_correct = ((disc_pred == out.disc_labels) & mask).sum().item()
    replaced = out.disc_labels.bool() & mask
    return {
        "loss": (out.loss.item() * b, b),
        "gen_loss": (out.gen_loss.item() * b, b),
        "disc_loss": (out.disc_loss.item() * b, b),
        "gen_accuracy": (gen_correct, n_chosen),
        "disc_accuracy": (disc_correct, n_tokens),
        "disc_replaced_recall": ((disc_pred.bool() & replaced).sum().item(), int(replaced.sum())),
        "replaced_fraction": (int(replaced.sum()), n_tokens),
    }


def save(model: RtdModel, folder: Path) -> None:
    model.discriminator.save_pretrained(folder)
    model.generator.save_pretrained(Path(folder) / GENERATOR_DIR)
