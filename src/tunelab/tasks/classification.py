"""Sequence classification: examples -> token ids, batches -> loss, predictions and metrics.

Tokenization truncates to max_length and leaves padding to the collator, so each batch is
padded only to its own longest example. Evaluation and prediction sort by length first, which
cuts the padding further; results are returned in the input order.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from tunelab.data.clean import clean_examples
from tunelab.data.labels import Labeler, bin_names
from tunelab.data.memory import source_name
from tunelab.data.options import DataOptions
from tunelab.data.readers import load_examples
from tunelab.data.split import check_labels, stratified_split
from tunelab.errors import TunelabError
from tunelab.evaluation.metrics import ClassificationMetrics
from tunelab.logs import say
from tunelab.models.load import Loaded
from tunelab.models.options import ModelOptions
from tunelab.tasks.balance import check_balance
from tunelab.tasks.base import Encoded, Splits, own_split_files


class EncodedDataset(Dataset):
    """Tokenized examples: each item is {'input_ids', 'attention_mask', 'labels'?}."""

    def __init__(
        self,
        texts: list[str],
        tokenizer,
        max_length: int,
        label_ids: list[int] | None = None,
    ) -> None:
        enc = tokenizer(texts, truncation=True, max_length=max_length)
        self.items = []
        for i, ids in enumerate(enc["input_ids"]):
            item = {"input_ids": ids, "attention_mask": enc["attention_mask"][i]}
            if label_ids is not None:
                item["labels"] = label_ids[i]
            self.items.append(item)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def encode_examples(
    examples: list[dict[str, str]], tokenizer, label_names: list[str], max_length: int
) -> EncodedDataset:
    """Tokenize labelled examples; a label outside `label_names` is a one-line error."""
    index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted({e["label"] for e in examples} - index.keys())
    if unknown:
        raise TunelabError(
            f"labels {unknown[:5]} are not among the model's labels {label_names}: "
            "evaluate on data with the same label set"
        )
    texts = [e["text"] for e in examples]
    return EncodedDataset(texts, tokenizer, max_length, [index[e["label"]] for e in examples])


def make_collate(tokenizer):
    """Dynamic padding to the longest example of each batch (transformers' collator)."""
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer, return_tensors="pt")


def autocast_for(model: nn.Module):
    """bf16 autocast on the model's device where the hardware has native bf16, else none; none
    for a model that is not plain fp32 (bf16 weights, quantized layers: they run as they are)
    or was opened with `--dtype fp32` (the exact mode)."""
    first = next(model.parameters(), None)
    if first is None or first.dtype != torch.float32 or _quantized(model):
        return nullcontext()
    if getattr(model, "tunelab_precision", {}).get("dtype") == "fp32":
        return nullcontext()
    device = first.device
    if device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def _quantized(model) -> bool:
    modules = model.modules() if isinstance(model, nn.Module) else []
    return any("quantized" in type(m).__module__ for m in modules)


def _batches_by_length(
    data: EncodedDataset, collate, batch_size: int, desc: str, progress: bool
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    # shortest first, so each batch pads little (items without input_ids keep their order)
    order = sorted(range(len(data)), key=lambda i: len(data[i].get("input_ids", ())))
    for s in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, leave=False):
        idx = order[s : s + batch_size]
        yield idx, collate([data[i] for i in idx])


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    data: EncodedDataset,
    collate,
    label_names: list[str],
    batch_size: int = 64,
    progress: bool = True,
    desc: str = "evaluating",
    autocast: bool = True,
) -> dict:
    """Mean loss and streaming classification metrics over `data` (never holds all logits);
    `autocast` False keeps a plain fp32 model in fp32 (see `autocast_for`)."""
    if len(data) == 0:
        raise TunelabError("nothing to evaluate: the evaluation split is empty")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    metrics = ClassificationMetrics(label_names)
    loss_sum, n = 0.0, 0
    with autocast_for(model) if autocast else nullcontext():
        for _, batch in _batches_by_length(data, collate, batch_size, desc, progress):
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(**batch)
            loss_sum += out.loss.float().item() * len(batch["labels"])  # mean -> sum
            n += len(batch["labels"])
            metrics.update(out.logits.argmax(-1), batch["labels"])
    model.train(was_training)
    return {"loss": loss_sum / n, **metrics.compute()}


@torch.inference_mode()
def predict_probs(
    model: nn.Module,
    tokenizer,
    texts: list[str],
    max_length: int,
    batch_size: int = 64,
    progress: bool = True,
) -> torch.Tensor:
    """Class probabilities (n, num_labels) for `texts`, in input order."""
    model.eval()
    device = next(model.parameters()).device
    data = EncodedDataset(texts, tokenizer, max_length)
    collate = make_collate(tokenizer)
    out = torch.empty(len(texts), model.config.num_labels)
    with autocast_for(model):
        for idx, batch in _batches_by_length(data, collate, batch_size, "predicting", progress):
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
            out[idx] = logits.float().softmax(-1).cpu()  # (batch, num_labels)
    return out


def load_splits(data: DataOptions, seed: int, quiet: bool = False) -> Splits:
    """train / validation / test examples of the data section (split files or one source),
    labels renamed by `data.label_map` or binned by `data.bins` (edges fitted on the source,
    or on train_file, and applied to every split alike)."""
    d = data
    labeler = Labeler(d.label_map, d.bins, d.bin_names)

    def read(source: str, what: str) -> list[dict[str, str]]:
        examples = load_examples(source, d.text_column, d.label_column, encoding=d.encoding)
        examples = labeler(examples)
        examples, report = clean_examples(examples, d.normalize, d.dedupe)
        say(f"{what} {source_name(source)}: {report.summary()}", quiet)
        if labeler.edges is not None and what in ("data", "train"):
            names = bin_names(labeler.edges, labeler.bins.names if labeler.bins else None)
            say(f"bins of {d.label_column}: {', '.join(names)}", quiet)
        if not examples:
            raise TunelabError(
                f"{source_name(source)} has no usable examples after cleaning: check the text "
                "column"
            )
        return examples

    if d.train_file:
        return own_split_files(d, seed, read, stratified_split)
    examples = read(d.source, "data")
    check_labels(examples)
    if d.limit and d.limit < len(examples):
        examples = stratified_split(
            examples, test_size=d.limit / len(examples), val_size=0.0, seed=seed
        )["test"]
    return stratified_split(examples, d.test_size, d.val_size, seed)


class ClassificationTask:
    """text -> label: a sequence classifier with a fresh head for the training labels."""

    name = "classification"
    generative = False

    def read_splits(self, data: DataOptions, seed: int, quiet: bool) -> Splits:
        check_balance(data.balance)  # up front; the finetune recipe applies it after encoding
        return load_splits(data, seed, quiet)

    def describe(self, splits: Splits) -> str:
        labels = check_labels(splits["train"])
        sizes = ", ".join(f"{k} {len(v)}" for k, v in splits.items())
        return f"split: {sizes} | {len(labels)} labels: {', '.join(labels)}"

    def load(self, model: ModelOptions, splits: Splits) -> Loaded:
        from tunelab.models.load import load_classifier

        labels = check_labels(splits["train"])
        return load_classifier(model.name, labels, model.gguf_file, model.attention_dropout)

    def encode(
        self, splits: Splits, loaded: Loaded, data: DataOptions, eval_batch_size: int
    ) -> Encoded:
        labels = check_labels(splits["train"])
        tok = loaded.tokenizer
        collate = make_collate(tok)
        encoded = {
            k: encode_examples(v, tok, labels, data.max_length) for k, v in splits.items() if v
        }

        def run(model, dataset, desc: str, progress: bool, collate_fn=None) -> dict:
            return evaluate(
                model, dataset, collate_fn or collate, labels, eval_batch_size, progress, desc
            )

        return Encoded(encoded, collate, run)

    def marker_fields(self, loaded: Loaded, data: DataOptions, splits: Splits) -> dict:
        return {"labels": check_labels(splits["train"]), "max_length": data.max_length}


def task(name: str) -> ClassificationTask:
    return ClassificationTask()
