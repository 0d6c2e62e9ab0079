"""Knowledge distillation: a shallower student of the teacher's own class, trained on its logits.

The student comes from `make_student` (in `distill_student`, re-exported here): the teacher's
class and config with fewer blocks, initialised by copying the kept blocks, the embeddings,
the final norms and the task head (the DistilBERT recipe). `Distiller` wraps student and
teacher as one model whose forward returns the distillation loss, so the ONE training loop
(`training.loop.train`) trains it like any other model: no second loop. Written by hand
because no well-kept library does KD on top of an arbitrary training loop (transformers has no
distillation trainer; TRL's GKDTrainer is a Trainer subclass for chat LMs only); the losses
(`kl_loss`, `jsd_loss`) are a few lines each.

The teacher is held outside the module tree (not a registered submodule): the optimizer, the
loop's checkpoints and `state_dict()` see only the student (and the hidden-state projection,
when there is one), while `.to()` / `.cuda()` still move it along (`_apply`).

Its options (`DistillOptions`, `check_options`) are in `options`, free of torch for `--help`;
caching the teacher's logits once for small data is in `distill_cache`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import ModelOutput

from tunelab.compress.distill_student import make_student, student_layers
from tunelab.compress.options import DistillOptions, check_options
from tunelab.errors import TunelabError
from tunelab.models.families import detect_family

IGNORE = -100
JSD_BETA = 0.5
"""Mixture weight of the generalized JSD (GKD, Agarwal et al. 2024); 0.5 is the plain JSD."""


# --- the losses --------------------------------------------------------------------------


def _wide(x: torch.Tensor) -> torch.Tensor:
    """At least fp32 (bf16 / fp16 logits lose too much in log-softmax differences)."""
    return x if x.dtype == torch.float64 else x.float()


def kl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), summed over classes, mean over
    rows (n, classes). The T^2 keeps the gradient's size independent of T (Hinton et al.)."""
    s = F.log_softmax(_wide(student_logits) / t, dim=-1)
    p = F.log_softmax(_wide(teacher_logits) / t, dim=-1)
    return t * t * F.kl_div(s, p, log_target=True, reduction="sum") / max(len(s), 1)


def jsd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, t: float, beta: float = JSD_BETA
) -> torch.Tensor:
    """T^2 * generalized JSD: beta KL(P || M) + (1 - beta) KL(Q || M), M = beta P +
    (1 - beta) Q, P the teacher's and Q the student's softmax at temperature T, mean over
    rows. Symmetric for beta 0.5, 0 for equal distributions, at most log 2."""
    q = F.log_softmax(_wide(student_logits) / t, dim=-1)
    p = F.log_softmax(_wide(teacher_logits) / t, dim=-1)
    m = torch.logsumexp(torch.stack([p + math.log(beta), q + math.log(1 - beta)]), dim=0)
    kl_p = F.kl_div(m, p, log_target=True, reduction="sum")
    kl_q = F.kl_div(m, q, log_target=True, reduction="sum")
    return t * t * (beta * kl_p + (1 - beta) * kl_q) / max(len(q), 1)


def kd_rows(
    logits: torch.Tensor, batch: dict[str, torch.Tensor], shifted: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits the soft-target loss compares, as (rows, classes), and rows per example.

    Classifier logits (batch, classes): every example. LM logits (batch, seq, vocab): the
    positions whose label is not -100 (causal LMs: logits t predict label t + 1), or without
    labels those the attention mask keeps. Rows come example by example, so a cached
    teacher's rows line up with a batch of the same examples in any order and padding.
    """
    if logits.ndim == 2:
        return logits, torch.ones(len(logits), dtype=torch.long, device=logits.device)
    mask = batch.get("labels")
    mask = mask.ne(IGNORE) if mask is not None else batch.get("attention_mask")
    if mask is None:
        mask = torch.ones(logits.shape[:2], dtype=torch.bool, device=logits.device)
    if shifted:
        logits, mask = logits[:, :-1], mask[:, 1:]
    mask = mask.bool()
    return logits[mask], mask.sum(1)  # (rows, vocab), (batch,)


def _masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    per_position = (_wide(a) - _wide(b)).pow(2).mean(-1)  # (batch, seq)
    if mask is None or mask.shape != per_position.shape:
        return per_position.mean()
    mask = mask.to(per_position.dtype)
    return (per_position * mask).sum() / mask.sum().clamp(min=1)


@dataclass
class DistillOutput(ModelOutput):
    """What `Distiller` returns: the loss the loop minimises and the student's logits."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    task_loss: torch.Tensor | None = None
    soft_loss: torch.Tensor | None = None
    hidden_loss: torch.Tensor | None = None


# --- the wrapper the loop trains -----------------------------------------------------------


def _vocab_size(model: nn.Module) -> int | None:
    size = getattr(getattr(model, "config", None), "vocab_size", None)
    if size is None and hasattr(model, "get_input_embeddings"):
        size = model.get_input_embeddings().num_embeddings
    return size


def check_vocab(teacher: nn.Module, student: nn.Module, teacher_tok=None, student_tok=None):
    """A one-line TunelabError unless teacher and student share one vocabulary (same size,
    and the same tokens where both tokenizers are given): both read the same input ids and
    token-level KD compares their distributions over it."""
    t_size, s_size = _vocab_size(teacher), _vocab_size(student)
    if t_size is not None and s_size is not None and t_size != s_size:
        raise TunelabError(
            f"distillation needs a shared vocabulary: the teacher has {t_size} tokens and the "
            f"student {s_size}; use a student with the teacher's tokenizer (e.g. distill-half)"
        )
    both = teacher_tok is not None and student_tok is not None
    if both and teacher_tok.get_vocab() != student_tok.get_vocab():
        raise TunelabError(
            "distillation needs a shared vocabulary: the teacher's and the student's "
            f"tokenizers differ ({len(teacher_tok)} vs {len(student_tok)} tokens); use a "
            "student with the teacher's tokenizer (e.g. distill-half)"
        )


def _width(config) -> int | None:
    return getattr(config, "hidden_size", None) or getattr(config, "d_model", None)


class Distiller(nn.Module):
    """Student + frozen teacher as one model for the training loop.

    Training mode: `forward(**batch).loss` = alpha * soft + (1 - alpha) * the student's own
    loss (+ hidden_weight * hidden MSE), `.logits` the student's. Eval mode (the loop's
    validation): the teacher is skipped and the output is the student's own (task loss,
    logits), so validation metrics measure the student and compare with the teacher's.
    `objective(**batch)` computes the training objective in either mode.

    The teacher is frozen (requires_grad off, eval mode, run under no_grad) and is not a
    registered submodule: `parameters()`, `state_dict()` and so the optimizer and the loop's
    checkpoints hold only student tensors (plus the projection of hidden_weight, if any).
    A batch may carry `teacher_logits` from `cache_teacher_logits` instead of a live teacher.
    """

    def __init__(
        self, student: nn.Module, teacher: nn.Module, options: DistillOptions | None = None
    ) -> None:
        super().__init__()
        self.options = options or DistillOptions()
        check_options(self.options)
        check_vocab(teacher, student)
        teacher_ids = {id(p) for p in teacher.parameters()}
        if any(id(p) in teacher_ids for p in student.parameters()):
            raise TunelabError(
                "the student shares weights with the teacher: build it with make_student, "
                "which copies them"
            )
        self.student = student
        first = next(student.parameters())
        teacher.requires_grad_(False).eval().to(first.device)
        object.__setattr__(self, "_teacher", teacher)  # kept out of the module tree
        config = getattr(student, "config", None)
        self.shifted = config is not None and detect_family(config) == "decoder"
        self.projection: nn.Linear | None = None
        if self.options.hidden_weight > 0:
            ws, wt = _width(config), _width(getattr(teacher, "config", None))
            if ws is None or wt is None:
                raise TunelabError(
                    "--distill.hidden_weight needs models whose config gives their width "
                    "(hidden_size): set it to 0"
                )
            if ws != wt:
                self.projection = nn.Linear(ws, wt, bias=False).to(first.device, first.dtype)

    @property
    def teacher(self) -> nn.Module:
        return self._teacher

    @property
    def config(self):
        """The student's config (what evaluation code reads from a model)."""
        return self.student.config

    @property
    def generation_config(self):
        return getattr(self.student, "generation_config", None)

    def generate(self, *args, **kwargs):
        return self.student.generate(*args, **kwargs)

    def _apply(self, fn, recurse: bool = True):
        # .to() / .cuda() / .half() move the unregistered teacher along with the student
        super()._apply(fn, recurse)
        self._teacher._apply(fn, recurse)
        return self

    def forward(self, **batch) -> DistillOutput:
        if self.training:
            return self.objective(**batch)
        batch.pop("teacher_logits", None)
        out = self.student(**batch)
        return DistillOutput(loss=out.loss, logits=out.logits, task_loss=out.loss)

    def objective(self, **batch) -> DistillOutput:
        """The distillation loss of `batch` and its terms, in whatever mode the model is (a
        batch without labels has no task term: the soft and hidden terms alone)."""
        o = self.options
        cached = batch.pop("teacher_logits", None)
        with_hidden = o.hidden_weight > 0
        if with_hidden and cached is not None:
            raise TunelabError(
                "--distill.hidden_weight needs the live teacher: do not cache its logits"
            )
        inputs = {**batch, "output_hidden_states": True} if with_hidden else batch
        out = self.student(**inputs)
        t_out = None
        if cached is None:
            with torch.no_grad():
                t_out = self._teacher(**inputs)
            if t_out.logits.shape != out.logits.shape:
                raise TunelabError(
                    f"teacher and student outputs differ ({tuple(t_out.logits.shape)} vs "
                    f"{tuple(out.logits.shape)}): distill a student with the teacher's "
                    "vocabulary and labels"
                )
            cached = kd_rows(t_out.logits, batch, self.shifted)[0]
        s_rows = kd_rows(out.logits, batch, self.shifted)[0]
        if s_rows.shape != cached.shape:
            raise TunelabError(
                "the cached teacher logits do not match the batch: cache them with the same "
                "data and collate"
            )
        if s_rows.shape[-1] == 1:  # a regression head: no distribution to soften
            soft = F.mse_loss(_wide(s_rows), _wide(cached))
        elif o.loss == "jsd":
            soft = jsd_loss(s_rows, cached, o.temperature)
        else:
            soft = kl_loss(s_rows, cached, o.temperature)
        loss = o.alpha * soft
        if out.loss is not None:
            loss = loss + (1 - o.alpha) * out.loss
        hidden = self._hidden_loss(out, t_out, batch) if with_hidden else None
        if hidden is not None:
            loss = loss + o.hidden_weight * hidden
        return DistillOutput(
            loss=loss, logits=out.logits, task_loss=out.loss, soft_loss=soft, hidden_loss=hidden
        )

    def _hidden_loss(self, out, t_out, batch) -> torch.Tensor:
        """Mean MSE between each student block's output and its teacher block's: student
        block i of Ls matches teacher block ceil((i + 1) * Lt / Ls) - 1 (the last the last)."""
        if getattr(out, "encoder_hidden_states", None) is not None:
            labels = batch.get("labels")
            dec_mask = batch.get("decoder_attention_mask")
            if dec_mask is None and labels is not None:
                dec_mask = labels.ne(IGNORE)
            enc_mask = batch.get("attention_mask")
            pairs = [
                (out.encoder_hidden_states, t_out.encoder_hidden_states, enc_mask),
                (out.decoder_hidden_states, t_out.decoder_hidden_states, dec_mask),
            ]
        else:
            pairs = [(out.hidden_states, t_out.hidden_states, batch.get("attention_mask"))]
        terms = []
        for s_states, t_states, mask in pairs:
            ls, lt = len(s_states) - 1, len(t_states) - 1  # entry 0: the embeddings' output
            for i in range(1, ls + 1):
                s = s_states[i]
                if self.projection is not None:
                    s = self.projection(s)
                terms.append(_masked_mse(s, t_states[math.ceil(i * lt / ls)], mask))
        return torch.stack(terms).mean()


__all__ = [
    "DistillOptions",
    "DistillOutput",
    "Distiller",
    "check_vocab",
    "jsd_loss",
    "kd_rows",
    "kl_loss",
    "make_student",
    "student_layers",
]
