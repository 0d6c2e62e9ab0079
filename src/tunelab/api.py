"""tunelab's verbs as Python functions: what `tunelab VERB` does, for a script or a notebook.
Re-exports only (the work is in `tunelab.recipes` and `tunelab.serve`); importing this module
imports no torch.

    from tunelab import api
    cfg = api.build_config("configs/quickstart.yaml", {"strategy": "lora"})
    result = api.finetune(cfg)
    print(result.metrics["test"]["accuracy"], result.run_dir)
    print(api.predict(result.run_dir, ["The striker scored twice."]))
    print(api.generate("smollm2-135m", ["Write a haiku about rain."], chat=True)[0].text)
"""

from __future__ import annotations

from tunelab.config.compare import CompareConfig, load_compare_config
from tunelab.config.compare_decoding import CompareDecodingConfig
from tunelab.config.compress import CompressConfig, build_compress_config
from tunelab.config.finetune import Config, build_config
from tunelab.config.pretrain import PretrainConfig, build_pretrain_config
from tunelab.recipes.compare import compare
from tunelab.recipes.compare_decoding import compare_decoding
from tunelab.recipes.compress import compress
from tunelab.recipes.evaluate import (
    evaluate_generative,
    evaluate_run,
    format_generation_report,
    is_generative,
)
from tunelab.recipes.finetune import FinetuneResult, finetune
from tunelab.recipes.generate import generate, stream
from tunelab.recipes.models import convert_model, inspect_data, list_models
from tunelab.recipes.predict import predict
from tunelab.recipes.pretrain import PretrainResult, pretrain
from tunelab.recipes.score import Scored, score
from tunelab.serve.server import serve

__all__ = [
    "CompareConfig",
    "CompareDecodingConfig",
    "CompressConfig",
    "Config",
    "FinetuneResult",
    "PretrainConfig",
    "PretrainResult",
    "Scored",
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
]
