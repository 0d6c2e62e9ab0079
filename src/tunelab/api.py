"""tunelab's verbs as Python functions: what `tunelab VERB` does, for a script or a notebook.
Re-exports (the work is in `tunelab.recipes` and `tunelab.serve`); importing this module
imports no torch.

    from tunelab import api
    cfg = api.build_config("configs/quickstart.yaml", {"strategy": "lora"})
    result = api.finetune(cfg)
    print(result.metrics["test"]["accuracy"], result.run_dir)
    print(api.predict(result.run_dir, ["The striker scored twice."]))
    print(api.generate("smollm2-135m", ["Write a haiku about rain."], chat=True)[0].text)

Data may be in memory wherever a data path goes: a pandas DataFrame, a `datasets.Dataset`, a
pyarrow Table, a list of row dicts or a dict of columns:

    cfg = api.build_config(overrides={"data.source": df, "data.label_column": "topic"})
    api.finetune(cfg)
    print(api.inspect_data(df))

`build_config` and `finetune` write such data once to a parquet file in tunelab's cache
(named by its content) so that the run's config.yaml names a real file (`data.memory`); these
two wrappers are the only code here.
"""

from __future__ import annotations

from tunelab.config.compare import CompareConfig, load_compare_config
from tunelab.config.compare_decoding import CompareDecodingConfig
from tunelab.config.compress import CompressConfig, build_compress_config
from tunelab.config.finetune import Config
from tunelab.config.finetune import build_config as _build_config
from tunelab.config.pretrain import PretrainConfig, build_pretrain_config
from tunelab.data.memory import materialize, materialize_overrides
from tunelab.recipes.compare import compare
from tunelab.recipes.compare_decoding import compare_decoding
from tunelab.recipes.compress import compress
from tunelab.recipes.data_inspect import inspect_data
from tunelab.recipes.evaluate import (
    evaluate_generative,
    evaluate_run,
    format_generation_report,
    is_generative,
)
from tunelab.recipes.finetune import FinetuneResult
from tunelab.recipes.finetune import finetune as _finetune
from tunelab.recipes.generate import generate, stream
from tunelab.recipes.models import convert_model, list_models
from tunelab.recipes.predict import predict
from tunelab.recipes.pretrain import PretrainResult, pretrain
from tunelab.recipes.score import Scored, score
from tunelab.recipes.sweep import SweepResult, sweep
from tunelab.serve.server import serve
from tunelab.tasks.zero_shot import ZeroShotOptions


def build_config(yaml_path=None, overrides: dict | None = None) -> Config:
    """Resolve a fine-tuning Config from defaults, an optional YAML file and `section.key`
    overrides (`config.finetune.build_config`); `data.source` and `data.train_file` /
    `validation_file` / `test_file` may be data in memory (a DataFrame, a datasets.Dataset,
    a list of row dicts), written once to a cached parquet file that the config names."""
    return _build_config(yaml_path, materialize_overrides(overrides))


def finetune(cfg: Config, quiet: bool = False) -> FinetuneResult:
    """Fine-tune as `cfg` says (`recipes.finetune.finetune`); data in memory set on
    `cfg.data` (source, train/validation/test file) is first written to a cached parquet file,
    so that the run's config.yaml names it."""
    import dataclasses

    return _finetune(dataclasses.replace(cfg, data=materialize(cfg.data)), quiet)


__all__ = [
    "CompareConfig",
    "CompareDecodingConfig",
    "CompressConfig",
    "Config",
    "FinetuneResult",
    "PretrainConfig",
    "PretrainResult",
    "Scored",
    "SweepResult",
    "ZeroShotOptions",
    "build_compress_config",
    "build_config",
    "build_pretrain_config",
    "compare",
    "compare_decoding",
    "compress",
    "convert_model",
    "evaluate_generative",
    "evaluate_run",
    "finetune",
    "format_generation_report",
    "generate",
    "inspect_data",
    "is_generative",
    "list_models",
    "load_compare_config",
    "predict",
    "pretrain",
    "score",
    "serve",
    "stream",
    "sweep",
]
