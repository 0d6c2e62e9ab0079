"""features: the backbone is a frozen feature extractor; only the classification head trains.

With `cache` (the default) the backbone runs once over the data: each example's features
(what the head reads) are kept, and every epoch after that costs only the head. The head
trains in the same loop either way; the cached run just feeds it the kept features.

What counts as the head: the model's own classification module (`classifier`, `score`,
`classification_head`) and, on BERT-style models, the pooler in front of it (a dense+tanh
layer that BertForSequenceClassification feeds the classifier from: frozen, it held the
embedded MiniLM far below a trained one; see strategies/lora.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm
from transformers.modeling_outputs import SequenceClassifierOutput

from tunelab.errors import TunelabError
from tunelab.models.families import head_module_names
from tunelab.strategies.base import Strategy, TrainView, first_doc_line
from tunelab.strategies.options import FeaturesOptions


def _pooler(model: nn.Module) -> nn.Module | None:
    """A BERT-style pooler the head reads through, if the model has one."""
    for name, module in model.named_modules():
        if name.endswith(".pooler") and next(module.parameters(), None) is not None:
            return module
    return None


def head_parameter_names(model: nn.Module) -> set[str]:
    """Names of the parameters that train: the head module(s) and a BERT-style pooler."""
    heads = head_module_names(model)
    if not heads:
        raise TunelabError(
            f"{type(model).__name__} has no classification head tunelab knows "
            "(classifier, score, classification_head): the features strategy cannot apply"
        )
    pooler = _pooler(model)
    pooler_ids = {id(p) for p in pooler.parameters()} if pooler is not None else set()
    return {
        n for n, p in model.named_parameters() if n.split(".")[0] in heads or id(p) in pooler_ids
    }


def apply(model: nn.Module, options: FeaturesOptions, family: str, total_steps: int) -> nn.Module:
    """Freeze everything but the head (and a BERT-style pooler); the frozen backbone runs as
    in inference (no dropout) even while the head trains, so its features are the same ones
    the cache holds and that the deployed model computes."""
    train = head_parameter_names(model)
    for n, p in model.named_parameters():
        p.requires_grad_(n in train)
    keep: set[nn.Module] = {model}
    for name in head_module_names(model):
        keep |= set(getattr(model, name).modules())
    pooler = _pooler(model)
    if pooler is not None:
        keep |= set(pooler.modules())
    if isinstance(getattr(model, "dropout", None), nn.Module):  # BERT: pooler -> dropout -> head
        keep.add(model.dropout)
    backbone = [m for m in model.modules() if m not in keep]

    def backbone_in_eval(module: nn.Module, args) -> None:
        for m in backbone:
            m.training = False

    model.register_forward_pre_hook(backbone_in_eval)
    return model


class HeadOnly(nn.Module):
    """The model's head applied to cached features: forward(features, labels) like the model.

    Shares its modules (and so its parameters) with the model: training this trains the
    model's own head.
    """

    def __init__(self, model: nn.Module, run_head: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.model = model
        self.run_head = run_head
        self.config = model.config

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None, **_):
        logits = self.run_head(features)  # (batch, num_labels)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.float(), labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


def _capture_plan(model: nn.Module):
    """(module whose input is the feature, pick(input, batch) -> (batch, ...), run_head)."""
    pooler = _pooler(model)
    head = getattr(model, head_module_names(model)[0])
    if pooler is not None:
        # BERT: pooler(sequence_output) reads token 0; then dropout, then the classifier
        dropout = getattr(model, "dropout", nn.Identity())

        def run_pooled(x: torch.Tensor) -> torch.Tensor:
            return head(dropout(pooler(x)))

        return pooler, lambda h, batch: h[:, :1, :], run_pooled

    def pick(h: torch.Tensor, batch: dict) -> torch.Tensor:
        if h.dim() == 2:  # already one vector per example (T5's sentence representation)
            return h
        # decoder: the head scores every position and the model keeps the rightmost non-pad
        # token's logits (transformers' rule); the head is per-position, so keep that state
        pad = model.config.pad_token_id
        ids = batch["input_ids"]
        idx = torch.arange(ids.shape[-1], device=ids.device)
        last = (
            (idx * (ids != pad).int()).argmax(-1)
            if pad is not None
            else ids.new_full((len(ids),), ids.shape[-1] - 1)
        )
        return h[torch.arange(len(ids), device=h.device), last]

    return head, pick, head


def head_only(model: nn.Module) -> HeadOnly:
    """The model's head as a module that reads cached features."""
    return HeadOnly(model, _capture_plan(model)[2])


class FeatureDataset(Dataset):
    """Cached features with their labels: items {'features': Tensor, 'labels': int}."""

    def __init__(self, features: torch.Tensor, labels: list[int]) -> None:
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"features": self.features[i], "labels": self.labels[i]}


def collate_features(items: list[dict]) -> dict[str, torch.Tensor]:
    return {
        "features": torch.stack([it["features"] for it in items]),
        "labels": torch.tensor([it["labels"] for it in items]),
    }


@torch.inference_mode()
def extract(
    model: nn.Module,
    data: Dataset,
    collate,
    batch_size: int = 64,
    progress: bool = True,
    desc: str = "extracting features",
    autocast: bool = True,
) -> FeatureDataset:
    """Run the frozen model once over `data` and keep what its head reads, per example.

    The first batch is checked: the head on the kept features must give the model's own
    logits, so an architecture whose head reads something else is a one-line error rather
    than a silently different model. `autocast`: bf16 where the hardware has it, as training
    runs (false: fp32, exact).

    Raises:
        TunelabError: the check fails (use `--features.cache false` for that model).
    """
    from contextlib import nullcontext

    from tunelab.tasks.classification import autocast_for

    module, pick, run_head = _capture_plan(model)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    kept: list[torch.Tensor] = []
    grabbed: list[torch.Tensor] = []
    handle = module.register_forward_pre_hook(lambda m, args: grabbed.append(args[0]))
    order = sorted(range(len(data)), key=lambda i: len(data[i]["input_ids"]))
    out = None
    try:
        with autocast_for(model) if autocast else nullcontext():
            for s in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress):
                idx = order[s : s + batch_size]
                batch = {k: v.to(device) for k, v in collate([data[i] for i in idx]).items()}
                labels = batch.pop("labels", None)
                grabbed.clear()
                logits = model(**batch).logits
                feats = pick(grabbed[-1], batch).float()
                if s == 0:
                    again = run_head(feats)
                    if not torch.allclose(again.float(), logits.float(), atol=1e-2, rtol=1e-2):
                        raise TunelabError(
                            f"the features cache does not reproduce {type(model).__name__}'s "
                            "own head: run with --features.cache false"
                        )
                kept.append(feats.cpu())
                del labels
        feats_sorted = torch.cat(kept)
        out = torch.empty_like(feats_sorted)
        out[torch.tensor(order)] = feats_sorted  # back to dataset order
    finally:
        handle.remove()
        model.train(was_training)
    return FeatureDataset(out, [data[i]["labels"] for i in range(len(data))])


def train_view(
    model: nn.Module,
    options: FeaturesOptions,
    datasets: dict[str, Dataset],
    collate,
    batch_size: int,
    progress: bool = True,
) -> TrainView | None:
    """With `cache`: the head on features extracted once from the train/validation splits."""
    import time

    if not options.cache:
        return None
    t0 = time.perf_counter()
    if torch.cuda.is_available():
        model.to("cuda")
    feats = {
        split: extract(model, data, collate, batch_size, progress, desc=f"features: {split}")
        for split, data in datasets.items()
        if split in ("train", "validation")
    }
    return TrainView(head_only(model), feats, collate_features, time.perf_counter() - t0)


STRATEGY = Strategy(
    "features", FeaturesOptions, apply, first_doc_line(__doc__), train_view=train_view
)
