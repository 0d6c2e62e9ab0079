"""The `data` section of a fine-tuning run: where the examples come from and how they are cut."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DataOptions:
    source: str = "bbc-news"
    """Labelled examples: a .csv/.tsv/.jsonl/.json file, a folder with one sub-folder of .txt
    files per class, a folder saved by `datasets`, `hub:NAME` (online only) or the embedded
    `bbc-news`. Split into train/validation/test unless split files are given."""
    text_column: str = "text"
    """Column (or JSON key) holding the text."""
    label_column: str = "label"
    """Column (or JSON key) holding the class label."""
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
    prompt_column: str = "prompt"
    """Generative tasks: column (or JSON key) holding the prompt / input text (JSONL rows
    with chat `messages` need none). Embedded pair sets: chatterbot, news-headlines,
    django-de, django-fr."""
    response_column: str = "response"
    """Generative tasks: column holding the response / target text."""
    max_target_length: int = 64
    """seq2seq: tokens of the target (the input gets max_length); causal_lm: unused, max_length
    covers prompt and response, and the prompt is cut from the left to keep the response."""
    chat_template: bool = True
    """causal_lm: format pairs with the tokenizer's chat template when it has one (false:
    prompt + newline + response + EOS)."""
    packing: bool = False
    """causal_lm: pack whole examples into blocks of max_length tokens for training (fewer
    pad tokens; packed examples attend to the ones before them in their block)."""
