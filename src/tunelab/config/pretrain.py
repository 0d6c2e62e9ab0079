"""The configuration of `tunelab pretrain`: the `corpus` and `pretrain` sections that the
objectives package owns, with the shared `train` (pre-training defaults) and `run` sections.

from tunelab.config.pretrain import build_pretrain_config
cfg = build_pretrain_config(overrides={"pretrain.objective": "mlm"})
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.config.parse import read_yaml, sections_dict, update_dataclass
from tunelab.errors import TunelabError
from tunelab.objectives.options import (
    FAMILIES,
    OBJECTIVES,
    PRESET_NAMES,
    CorpusOptions,
    PretrainOptions,
    pretrain_train_defaults,
)
from tunelab.runs.options import RunOptions
from tunelab.training.options import TrainOptions, check_train


@dataclass
class PretrainConfig:
    corpus: CorpusOptions = field(default_factory=CorpusOptions)
    pretrain: PretrainOptions = field(default_factory=PretrainOptions)
    train: TrainOptions = field(default_factory=pretrain_train_defaults)
    run: RunOptions = field(default_factory=RunOptions)

    def to_dict(self) -> dict[str, Any]:
        return sections_dict(self, SECTIONS)


SECTIONS: dict[str, type] = {
    "corpus": CorpusOptions,
    "pretrain": PretrainOptions,
    "train": TrainOptions,
    "run": RunOptions,
}


def build_pretrain_config(
    yaml_path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> PretrainConfig:
    """Defaults < YAML file < `section.key` overrides, validated.

    Raises:
        TunelabError: missing/invalid YAML, unknown section or option, bad value or choice.
    """
    nested: dict[str, dict[str, Any]] = {}
    for sec, vals in read_yaml(yaml_path).items():
        if not isinstance(vals, dict):
            raise TunelabError(f"config section {sec!r} must be a mapping of options")
        nested.setdefault(sec, {}).update(vals)
    for key, val in (overrides or {}).items():
        sec, _, opt = key.rpartition(".")
        nested.setdefault(sec, {})[opt] = val
    cfg = PretrainConfig()
    for sec, vals in nested.items():
        if sec not in SECTIONS:
            raise TunelabError(
                f"unknown config section {sec!r}: known ones are {', '.join(SECTIONS)}"
            )
        setattr(cfg, sec, update_dataclass(getattr(cfg, sec), vals, sec))
    validate(cfg)
    return cfg


def validate(cfg: PretrainConfig) -> None:
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
    ]
    for ok, msg in checks:
        if not ok:
            raise TunelabError(f"{msg}: fix the config or flag")
    check_train(cfg.train)
