"""Next-sentence prediction (BERT), alone (`nsp`) or summed with MLM (`mlm+nsp`).

An example is an anchor sentence of a document that has a next sentence. Segment A is the
anchor (plus following sentences while it fits half the length and one sentence is left);
with probability 0.5 segment B is the true continuation (the sentences right after A in the
same document) and otherwise a run of sentences from a random other document. The pair is
`[CLS] A [SEP] B [SEP]` with token types 0/1; label 0 = "B follows A", 1 = random, as in
transformers' `next_sentence_label`. For `mlm+nsp` the pair is then masked as in mlm.py and
the model (`BertForPreTraining`, wrapped in `MlmNsp` so that its MLM output layer runs at the
masked positions only: heads.py) sums both losses, as BERT does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from transformers.utils import ModelOutput

from tunelab.errors import TunelabError
from tunelab.objectives.corpus import TokenStore
from tunelab.objectives.heads import MaskedLM
from tunelab.objectives.mlm import Masker, mlm_sums
from tunelab.objectives.options import PretrainOptions

FAMILY = "encoder"
SENTENCES = True


def separator(tok) -> int | None:
    return None  # sentence boundaries are recorded; documents need no separator token


@dataclass
class Pair:
    """Sentence ranges [start, end) of segments A and B, and whether B truly follows A."""

    a: tuple[int, int]
    b: tuple[int, int]
    is_next: bool


class AnchorDataset(torch.utils.data.Dataset):
    """Item k: {'anchor': sentence index} of the sentences that have a next one in their doc."""

    def __init__(self, store: TokenStore, limit: int | None = None) -> None:
        doc = store.sent_doc
        anchors = np.nonzero(doc[:-1] == doc[1:])[0] if doc is not None and len(doc) else []
        anchors = np.asarray(anchors, dtype=np.int64)
        if limit is not None and len(anchors) > limit:
            anchors = anchors[np.linspace(0, len(anchors) - 1, limit).astype(np.int64)]
        self.anchors = anchors

    def __len__(self) -> int:
        return len(self.anchors)

    def __getitem__(self, i: int) -> dict[str, int]:
        return {"anchor": int(self.anchors[i])}


def _length(store: TokenStore, i: int) -> int:
    return int(store.sent_starts[i + 1] - store.sent_starts[i])


def _extend(store: TokenStore, start: int, budget: int, keep_one: bool) -> int:
    """End of a run of sentences from `start` in its document that fits `budget` tokens
    (always at least one sentence); with `keep_one`, at least one sentence of the document
    is left after the run."""
    doc, end, used = store.sent_doc[start], start + 1, _length(store, start)
    n = store.n_sentences
    while end < n and store.sent_doc[end] == doc and used + _length(store, end) <= budget:
        if keep_one and (end + 1 >= n or store.sent_doc[end + 1] != doc):
            break
        used += _length(store, end)
        end += 1
    return end


def make_pairs(
    anchors: list[int],
    store: TokenStore,
    budget: int,
    generator: torch.Generator | None = None,
) -> list[Pair]:
    """Sentence pairs for `anchors`: 50% true continuation, 50% from a random other document.

    Raises:
        TunelabError: the split has sentences of only one document (no random B exists).
    """
    n = store.n_sentences
    pairs = []
    for anchor in anchors:
        a_end = _extend(store, anchor, budget // 2, keep_one=True)
        is_next = bool(torch.rand((), generator=generator) < 0.5)
        if is_next:
            b_start = a_end
        else:
            for _ in range(20):
                b_start = int(torch.randint(n, (), generator=generator))
                if store.sent_doc[b_start] != store.sent_doc[anchor]:
                    break
            else:
                raise TunelabError(
                    "NSP needs a corpus of several documents for its random sentences: "
                    "give more documents"
                )
        used = int(store.sent_starts[a_end] - store.sent_starts[anchor])
        b_end = _extend(store, b_start, max(budget - used, 1), keep_one=False)
        pairs.append(Pair((anchor, a_end), (b_start, b_end), is_next))
    return pairs


def encode_pairs(pairs: list[Pair], store: TokenStore, tok, seq_len: int) -> dict:
    """[CLS] A [SEP] B [SEP] ids, token types and attention mask, padded to the longest."""
    rows, types = [], []
    for pr in pairs:
        a = np.asarray(store.ids[store.sent_starts[pr.a[0]] : store.sent_starts[pr.a[1]]])
        b = np.asarray(store.ids[store.sent_starts[pr.b[0]] : store.sent_starts[pr.b[1]]])
        a, b = a.astype(np.int64).tolist(), b.astype(np.int64).tolist()
        while len(a) + len(b) > seq_len - 3:  # truncate the longer segment first
            (a if len(a) > len(b) else b).pop()
        rows.append([tok.cls_token_id, *a, tok.sep_token_id, *b, tok.sep_token_id])
        types.append([0] * (len(a) + 2) + [1] * (len(b) + 1))
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    tt = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, t) in enumerate(zip(rows, types, strict=True)):
        ids[i, : len(r)], tt[i, : len(t)], mask[i, : len(r)] = torch.tensor(r), torch.tensor(t), 1
    labels = torch.tensor([0 if pr.is_next else 1 for pr in pairs])
    return {"input_ids": ids, "token_type_ids": tt, "attention_mask": mask, "nsp": labels}


@dataclass
class MlmNspOutput(ModelOutput):
    loss: torch.Tensor | None = None
    mlm_logits: torch.Tensor | None = None  # (n_chosen, vocab)
    mlm_labels: torch.Tensor | None = None  # (n_chosen,)
    nsp_logits: torch.Tensor | None = None


class MlmNsp(MaskedLM):
    """`BertForPreTraining` with the MLM output layer at masked positions only; loss = MLM
    cross-entropy + NSP cross-entropy, as `BertForPreTraining` computes it."""

    def forward(self, input_ids, attention_mask, token_type_ids, labels, next_sentence_label):
        mlm = super().forward(input_ids, attention_mask, labels, token_type_ids)
        nsp_logits = self.model.cls.seq_relationship(mlm.encoder_output.pooler_output)
        loss = mlm.loss + F.cross_entropy(nsp_logits.float(), next_sentence_label)
        return MlmNspOutput(
            loss=loss, mlm_logits=mlm.logits, mlm_labels=mlm.labels, nsp_logits=nsp_logits
        )


def build_model(p: PretrainOptions, tok, source: str | None):
    from transformers import BertForNextSentencePrediction, BertForPreTraining

    from tunelab.objectives.presets import bert_config

    cls = BertForPreTraining if p.objective == "mlm+nsp" else BertForNextSentencePrediction
    wrap = MlmNsp if p.objective == "mlm+nsp" else (lambda m: m)
    if source is None:
        return wrap(cls(bert_config(p.preset, tok, p.seq_len, p.dropout)))
    from transformers import AutoConfig

    kind = AutoConfig.from_pretrained(source).model_type
    if kind != "bert":
        raise TunelabError(
            f"{p.objective} needs a BERT model, {source} is {kind}: use --objective mlm or rtd"
        )
    return wrap(cls.from_pretrained(source, dtype=torch.float32))


def dataset(store: TokenStore, tok, p: PretrainOptions, limit: int | None = None):
    return AnchorDataset(store, limit)


def make_collate(tok, p: PretrainOptions, store: TokenStore, generator=None):
    masker = Masker(tok, p, generator) if p.objective == "mlm+nsp" else None

    def collate(examples):
        pairs = make_pairs([e["anchor"] for e in examples], store, p.seq_len - 3, generator)
        batch = encode_pairs(pairs, store, tok, p.seq_len)
        nsp = batch.pop("nsp")
        if masker is None:
            return {**batch, "labels": nsp}
        batch["input_ids"], batch["labels"] = masker(batch["input_ids"])
        return {**batch, "next_sentence_label": nsp}

    return collate


def eval_sums(model, batch, generator=None) -> dict[str, tuple[float, int]]:
    if "next_sentence_label" in batch:
        out = model(**batch)
        nsp_logits, nsp = out.nsp_logits.float(), batch["next_sentence_label"]
        sums = {f"mlm_{k}": v for k, v in mlm_sums(out.mlm_logits, out.mlm_labels).items()}
    else:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        nsp_logits, nsp, sums = model(**inputs).logits.float(), batch["labels"], {}
    n = len(nsp)
    loss = F.cross_entropy(nsp_logits, nsp, reduction="sum").item()
    sums["nsp_loss"] = (loss, n)
    sums["nsp_accuracy"] = ((nsp_logits.argmax(-1) == nsp).sum().item(), n)
    return sums


def save(model, folder) -> None:
    getattr(model, "kept", model).save_pretrained(folder)
