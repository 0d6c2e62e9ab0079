"""Run configurations: one per recipe (finetune, pretrain), composed of the options dataclasses
that the lower packages own (data, model, train, run, strategies, objectives). Light: no torch."""

from tunelab.config.finetune import SECTIONS, Config, build_config
from tunelab.config.parse import field_docs, parse_value, update_dataclass

__all__ = ["SECTIONS", "Config", "build_config", "field_docs", "parse_value", "update_dataclass"]
