"""Generative tasks: causal_lm (instruction / dialog tuning of a decoder) and seq2seq (an
encoder-decoder, or a bert2bert warm-started from an encoder).

Prompt/response pairs are read by `data.pairs`, encoded by `tasks.causal_lm` (loss on the
response tokens only) or `tasks.seq2seq`; evaluation is the loss and perplexity per response
token, and the best checkpoint is the one with the lowest validation loss.
"""

from __future__ import annotations

from typing import Any

import torch

from tunelab.data.options import DataOptions
from tunelab.errors import TunelabError
from tunelab.logs import say
from tunelab.models.load import Loaded
from tunelab.models.options import ModelOptions
from tunelab.tasks import GENERATIVE_TASKS
from tunelab.tasks.base import Encoded, Splits, own_split_files
from tunelab.tasks.chat import has_chat_template, prompt_text


def load_base(
    name: str, task: str, gguf_file: str | None = None, dtype: torch.dtype = torch.float32
) -> Loaded:
    """The model a generative task starts from: a causal LM for causal_lm; for seq2seq an
    encoder-decoder LM, or a bert2bert warm-started from an encoder (e.g. `minilm`).

    Raises:
        TunelabError: the model's family does not fit the task (with the task that fits).
    """
    from tunelab.models.families import detect_family
    from tunelab.models.load import load_lm
    from tunelab.models.sources import load_config, load_tokenizer, resolve_source
    from tunelab.tasks.seq2seq import warm_start_bert2bert

    source = resolve_source(name, gguf_file)
    family = detect_family(load_config(name, source))
    if task == "seq2seq" and family == "encoder":
        tok = load_tokenizer(source)
        model = warm_start_bert2bert(source, tok).to(dtype)
        return Loaded(model, tok, "encoder-decoder", source)
    if task == "seq2seq" and family == "decoder":
        raise TunelabError(
            f"{name} is a decoder: seq2seq needs an encoder-decoder (or an encoder to warm-start"
            " a bert2bert); train a decoder on the same pairs with --task causal_lm"
        )
    if task == "causal_lm" and family != "decoder":
        fix = "use --task seq2seq" if family == "encoder-decoder" else "pick a decoder model"
        raise TunelabError(f"{name} is an {family}: causal_lm needs a decoder; {fix}")
    return load_lm(name, gguf_file, dtype)


def load_pair_splits(data: DataOptions, seed: int, quiet: bool = False) -> Splits:
    """train / validation / test pairs (split files, or one source split by prompt)."""
    from tunelab.data.memory import source_name
    from tunelab.data.pairs import clean_pairs, load_pairs, split_pairs

    d = data
    if d.label_map or d.bins:
        flag = "--data.label_map" if d.label_map else "--data.bins"
        raise TunelabError(f"{flag} makes classification labels: drop it for a generative task")

    def read(source: str, what: str) -> list[dict[str, Any]]:
        pairs = load_pairs(
            source, d.prompt_column, d.response_column, encoding=d.encoding, fmt=d.format
        )
        pairs, report = clean_pairs(pairs, d.dedupe)
        say(f"{what} {source_name(source)}: {report}", quiet)
        if not pairs:
            raise TunelabError(
                f"{source_name(source)} has no usable prompt/response pairs: check its columns"
            )
        return pairs

    if d.train_file:
        return own_split_files(d, seed, read, split_pairs)
    if isinstance(d.source, str) and d.source == "bbc-news":
        raise TunelabError(
            "bbc-news is classification data: give prompt/response pairs or chat data with --data"
            " (chatterbot, news-headlines, django-de, django-fr, or a .jsonl/.csv/.parquet file"
            " of pairs, alpaca, sharegpt or messages rows)"
        )
    pairs = read(d.source, "data")
    if d.limit and d.limit < len(pairs):
        pairs = split_pairs(pairs, d.limit / len(pairs), 0.0, seed)["test"]
    splits = split_pairs(pairs, d.test_size, d.val_size, seed)
    if not splits["train"]:
        raise TunelabError(
            f"no training pairs left after holding out test and validation ones: "
            f"{source_name(d.source)} has too few distinct prompts; lower --data.test_size / "
            "--data.val_size or give --data.train_file"
        )
    return splits


def load_eval_pairs(
    source: str,
    prompt_column: str = "prompt",
    response_column: str = "response",
    limit: int | None = None,
    *,
    encoding: str = "utf-8",
    fmt: str = "auto",
) -> list[dict[str, Any]]:
    """Non-empty prompt/response pairs of `source` (any `load_pairs` source: a file, a saved
    or hub data set, a DataFrame ...; pairs, alpaca, sharegpt or messages rows), the first
    `limit`.

    Raises:
        TunelabError: no usable pair, or a bad limit.
    """
    from tunelab.data.pairs import clean_pairs, load_pairs

    if limit is not None and limit < 1:
        raise TunelabError(f"--limit must be at least 1, got {limit}")
    pairs = load_pairs(source, prompt_column, response_column, encoding=encoding, fmt=fmt)
    pairs, _ = clean_pairs(pairs, dedupe=False)
    if not pairs:
        from tunelab.data.memory import source_name

        raise TunelabError(
            f"{source_name(source)} has no pair with both a prompt and a response: check "
            "--prompt-column and --response-column"
        )
    return pairs[:limit] if limit else pairs


def format_prompts(
    pairs: list[dict[str, Any]],
    tokenizer,
    family: str,
    trained_chat: bool | None,
    chat_template: bool | None = None,
    separator: str = "\n",
) -> list[str]:
    """What the model reads for each pair: an encoder-decoder the prompt as it is; a decoder
    the prompt the way its training showed it (`prompt_text`): in the chat template when
    `chat_template` says so, else when the run was trained with it (`trained_chat`), else (not
    a run) when the tokenizer has one; otherwise `prompt + separator`."""
    if family == "encoder-decoder":
        return [p["prompt"] for p in pairs]
    if chat_template is None:
        chat_template = (
            bool(trained_chat) if trained_chat is not None else has_chat_template(tokenizer)
        )
    if chat_template and not has_chat_template(tokenizer):
        raise TunelabError("this tokenizer has no chat template: run without --chat-template")
    return [prompt_text(p, tokenizer, chat_template, separator) for p in pairs]


class GenerativeTask:
    """prompt -> response with a language model (causal_lm or seq2seq)."""

    generative = True

    def __init__(self, name: str) -> None:
        if name not in GENERATIVE_TASKS:
            raise TunelabError(f"task {name!r} is not generative")
        self.name = name

    def read_splits(self, data: DataOptions, seed: int, quiet: bool) -> Splits:
        return load_pair_splits(data, seed, quiet)

    def describe(self, splits: Splits) -> str:
        return "split: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items())

    def load(self, model: ModelOptions, splits: Splits) -> Loaded:
        return load_base(model.name, self.name, model.gguf_file)

    def encode(
        self, splits: Splits, loaded: Loaded, data: DataOptions, eval_batch_size: int
    ) -> Encoded:
        from tunelab.tasks import causal_lm, seq2seq

        tok, d = loaded.tokenizer, data
        if self.name == "causal_lm":
            encoded = {
                k: causal_lm.encode_pairs(
                    v,
                    tok,
                    d.max_length,
                    d.chat_template,
                    packing=d.packing and k == "train",
                    all_turns=d.train_all_turns,
                )
                for k, v in splits.items()
                if v
            }
            collate = causal_lm.make_collate(tok.pad_token_id)
            shifted = True
        else:
            start = getattr(loaded.model.config, "decoder_start_token_id", None)
            encoded = {
                k: seq2seq.encode_pairs(v, tok, d.max_length, d.max_target_length, start)
                for k, v in splits.items()
                if v
            }
            collate = seq2seq.make_collate(tok)
            shifted = False

        def run(model, dataset, desc: str, progress: bool, collate_fn=None) -> dict:
            return causal_lm.evaluate_lm(
                model,
                dataset,
                collate_fn or collate,
                eval_batch_size,
                shifted=shifted,
                progress=progress,
                desc=desc,
            )

        return Encoded(encoded, collate, run)

    def marker_fields(self, loaded: Loaded, data: DataOptions, splits: Splits) -> dict:
        fields: dict[str, Any] = {
            "max_length": data.max_length,
            "chat_template": bool(
                self.name == "causal_lm"
                and data.chat_template
                and has_chat_template(loaded.tokenizer)
            ),
        }
        if self.name == "seq2seq":
            fields["max_target_length"] = data.max_target_length
        return fields


def task(name: str) -> GenerativeTask:
    return GenerativeTask(name)
