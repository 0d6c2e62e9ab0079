"""The `data` section of a fine-tuning run: where the examples come from and how they are cut."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DataOptions:
    source: str = "bbc-news"
    """The examples: a .csv/.tsv/.jsonl/.json/.parquet file, a text file of fastText
    `__label__X text` or `label<TAB>text` lines, a folder with one sub-folder of .txt files per
    class, a folder saved by `datasets`, `hub:NAME` (online only) or an embedded data set
    (bbc-news). Split into train/validation/test unless split files are given."""
    text_column: str = "text"
    """Column (or JSON key) holding the text."""
    label_column: str = "label"
    """Column (or JSON key) holding the class label."""
    label_map: str | None = None
    """Rename raw labels: a mapping ('{"0": "neg", "1": "pos"}' or 0=neg,1=pos) or a .json /
    .yaml file holding one (a list there, or a .txt file of one name per line, names 0, 1, ...);
    every label in the data must be mapped."""
    bins: str | None = None
    """Classes from a numeric label column: a count (3: classes of about equal size, cut at
    the data's quantiles, or train_file's) or edges (2.5,4 or [2.5, 4]: below 2.5, 2.5 to
    below 4, 4 and above); [3] is one edge at 3."""
    bin_names: str | None = None
    """Names of the bins classes, lowest first (low,mid,high); default: their ranges
    (<2.5, [2.5, 4), >=4)."""
    encoding: str = "utf-8"
    """Text encoding of the data files (csv/tsv/json/jsonl/txt), e.g. latin-1 or cp1252;
    utf-8 also accepts a byte-order mark."""
    train_file: str | None = None
    """Own training split (same formats as `source`); replaces the automatic split."""
    validation_file: str | None = None
    """Own validation split; with `train_file` and no validation file, val_size is cut from it."""
    test_file: str | None = None
    """Own test split; with `train_file` and no test file, test_size is cut from it."""
    test_size: float = 0.2
    """Fraction of all examples held out for the final test (stratified by label)."""
    val_size: float = 0.1
    """Fraction of all examples held out for validation during training (0 disables it)."""
    limit: int | None = None
    """Use at most this many examples (a stratified sample): for quick trial runs."""
    max_length: int = 256
    """Tokens per example; longer texts are truncated, batches are padded dynamically."""
    normalize: str | None = "NFKC"
    """Unicode normalisation form applied before de-duplication (none to skip)."""
    dedupe: bool = True
    """Drop duplicate texts (keeping the first; conflicting labels drop every copy)."""
    balance: str | None = "auto"
    """Classification with uneven classes: weights (the loss counts each class in inverse
    proportion to its share of the training split), sample (examples of the smaller classes
    repeated until every class has as many as the largest), none, or auto (weights when the
    largest class has at least 1.5x the examples of the smallest, else none)."""
    format: str = "auto"
    """Generative tasks: how rows become conversations: auto (from the columns), pairs
    (prompt_column -> response_column), alpaca (instruction + input -> output), sharegpt
    (`conversations` of {from, value}) or messages (OpenAI {role, content} turns)."""
    prompt_column: str = "prompt"
    """Generative tasks: column (or JSON key) holding the prompt / input text (alpaca,
    sharegpt and messages rows need none). Embedded pair sets: chatterbot, news-headlines,
    django-de, django-fr."""
    response_column: str = "response"
    """Generative tasks: column holding the response / target text."""
    max_target_length: int = 64
    """seq2seq: tokens of the target (the input gets max_length); causal_lm: unused, max_length
    covers prompt and response, and the prompt is cut from the left to keep the response."""
    train_all_turns: bool = True
    """causal_lm chat data: train every assistant turn of a conversation (false: only the
    last; the earlier turns are then context only)."""
    chat_template: bool = True
    """causal_lm: format pairs with the tokenizer's chat template when it has one (false:
    prompt + newline + response + EOS)."""
    packing: bool = False
    """causal_lm: pack whole examples into blocks of max_length tokens for training (fewer
    pad tokens; packed examples attend to the ones before them in their block)."""
