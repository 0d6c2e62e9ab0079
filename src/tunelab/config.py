"""Typed run configuration: dataclass sections, YAML loading and `--section.key value` overrides.

Precedence is dataclass defaults < YAML file < command-line overrides. Each field's attribute
docstring is its `--help` text (read from the source with `ast`, so there is one place to
document an option). Strategy options live in a section named after the strategy (`lora:` in
YAML, `--lora.r 16` on the command line); their dataclasses come from the strategy registry.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tunelab.errors import TunelabError


@dataclass
class DataConfig:
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


@dataclass
class ModelConfig:
    name: str = "minilm"
    """A local Hugging Face folder, a .gguf file, a hub id (online only), a tunelab run folder,
    or an embedded default: `minilm` (BERT encoder) or `smollm2-135m` (Llama decoder)."""
    gguf_file: str | None = None
    """File name of the GGUF weights inside `name` when `name` is a folder of GGUF files."""
    attention_dropout: float | None = 0.0
    """Dropout on attention probabilities while training (none keeps the checkpoint's value).
    Any non-zero value sends PyTorch's attention down its slow path: on CPU a BERT step takes
    about twice as long, so tunelab turns it off by default."""


@dataclass
class TrainConfig:
    epochs: float = 3.0
    """Passes over the training split (fractions allowed); ignored when max_steps is set."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (overrides epochs)."""
    batch_size: int = 16
    """Examples per forward pass."""
    grad_accum: int = 1
    """Forward passes per optimizer step (effective batch = batch_size x grad_accum)."""
    eval_batch_size: int = 64
    """Examples per forward pass during evaluation and prediction."""
    lr: float = 1e-4
    """Peak learning rate of AdamW."""
    weight_decay: float = 0.01
    """AdamW weight decay (never applied to biases and normalisation weights)."""
    schedule: str = "linear"
    """Learning-rate schedule: constant, linear, cosine, step or exponential."""
    warmup_ratio: float = 0.06
    """Fraction of the optimizer steps spent in linear warmup."""
    step_size: int | None = None
    """step/exponential schedules: optimizer steps per factor of gamma (default: a third of
    the run after warmup)."""
    gamma: float = 0.5
    """step/exponential schedules: the lr is multiplied by gamma every step_size steps."""
    max_grad_norm: float | None = 1.0
    """Clip the gradient norm to this value (none to disable)."""
    precision: str = "auto"
    """fp32, bf16 (autocast) or auto (bf16 where the CPU/GPU has native bf16, else fp32)."""
    eval_every: int | None = None
    """Evaluate on the validation split every N optimizer steps (default: after each epoch)."""
    metric: str = "macro_f1"
    """Validation metric that picks the best checkpoint and drives early stopping."""
    patience: int | None = None
    """Stop after this many evaluations without improvement of `metric` (none: never)."""
    keep_best: bool = True
    """Restore the weights of the best evaluation before testing and saving."""
    seed: int = 0
    """Seed for the split, the shuffling, dropout and new weights."""
    threads: int | None = None
    """CPU threads for torch (default: torch's own choice)."""


@dataclass
class RunConfig:
    output_dir: str = "runs"
    """Folder that receives run folders."""
    name: str | None = None
    """Run folder name (default: model-strategy-timestamp)."""
    resume: bool = False
    """Continue the unfinished run `name` (or the newest one) from its last checkpoint."""
    merge: bool = False
    """For adapter strategies (lora): also write the merged full model into the run folder."""
    predict: list[str] = field(default_factory=list)
    """Texts to classify with the finished model (printed after the metrics)."""


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    strategy: str = "full"
    """Fine-tuning strategy (see `tunelab finetune --help` for each one's options)."""
    strategy_options: dict[str, Any] = field(default_factory=dict)
    """Options of the chosen strategy (its section in YAML: `lora: {r: 8}`)."""
    task: str = "classification"
    """What to train: classification (text -> label), causal_lm (prompt -> response with a
    decoder: instruction / dialog tuning, loss on the response only) or seq2seq (input ->
    target with an encoder-decoder; an encoder such as minilm is warm-started as a bert2bert)."""

    def to_dict(self) -> dict[str, Any]:
        """A plain dict in the YAML layout (strategy options under the strategy's name)."""
        out = {s: dataclasses.asdict(getattr(self, s)) for s in SECTIONS}
        out["strategy"] = self.strategy
        out[self.strategy] = dict(self.strategy_options)
        out["task"] = self.task
        return out


PRECISIONS = ("auto", "fp32", "bf16")
TASKS = ("classification", "causal_lm", "seq2seq")
SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "run": RunConfig,
}


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass, by field name (the string right after a field)."""
    try:
        tree = ast.parse(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(the non-None type, whether None is allowed) of a field annotation."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def parse_value(raw: Any, tp: Any, key: str) -> Any:
    """Turn a YAML or command-line value into the field's type, or raise a one-line error."""
    base, optional = _base_type(tp)
    if raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null")):
        if optional:
            return None
        raise TunelabError(f"{key} cannot be empty: give a value")
    origin = typing.get_origin(base)
    try:
        if origin is list:
            if isinstance(raw, str):
                return [raw]
            return [str(x) for x in raw]
        if base is bool:
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("true", "1", "yes", "on"):
                return True
            if str(raw).lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if base is int:
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError
            return int(raw)
        if base is float:
            return float(raw)
        if base is str:
            return str(raw)
        if isinstance(base, tuple) or origin is tuple:
            return tuple(raw)
    except (TypeError, ValueError):
        pass
    else:
        return raw
    name = getattr(base, "__name__", str(base))
    raise TunelabError(f"{key} expects {name}, got {raw!r}: fix the value in the config or flag")


def update_dataclass(obj: Any, values: dict[str, Any], section: str) -> Any:
    """A copy of the options dataclass `obj` with `values` parsed in (one-line error for an
    unknown key or a bad value; `section` names them)."""
    fields = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    changes = {}
    for key, raw in values.items():
        if key not in fields:
            raise TunelabError(
                f"unknown option {section}.{key}: known ones are {', '.join(sorted(fields))}"
            )
        changes[key] = parse_value(raw, hints[key], f"{section}.{key}")
    return dataclasses.replace(obj, **changes)


def strategy_config_class(name: str) -> type:
    """The options dataclass of a registered strategy (imported lazily: peft is heavy)."""
    from tunelab.strategies import get_strategy

    return get_strategy(name).config_cls


def build_config(yaml_path: str | Path | None = None, overrides: dict[str, Any] | None = None):
    """Resolve a Config from defaults, an optional YAML file and `section.key` overrides.

    Args:
        yaml_path: A YAML file in the `Config.to_dict()` layout, or None.
        overrides: Flat `{"train.lr": "3e-5", "strategy": "lora", "lora.r": "16"}` mapping.

    Returns:
        The resolved Config; `strategy_options` is the strategy's own dataclass as a dict.

    Raises:
        TunelabError: missing/invalid YAML, unknown section, option or strategy, bad value.
    """
    raw: dict[str, Any] = {}
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.is_file():
            raise TunelabError(f"config file {path} not found: pass an existing YAML file")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            line = getattr(getattr(exc, "problem_mark", None), "line", None)
            where = f" at line {line + 1}" if line is not None else ""
            raise TunelabError(f"config file {path} is not valid YAML{where}: fix it") from None
        if not isinstance(raw, dict):
            raise TunelabError(f"config file {path} must hold a mapping of sections")
    nested: dict[str, dict[str, Any]] = {}
    for sec, vals in raw.items():
        if sec in ("strategy", "task"):
            nested.setdefault("", {})[sec] = vals
        elif isinstance(vals, dict):
            nested.setdefault(sec, {}).update(vals)
        else:
            raise TunelabError(f"config section {sec!r} must be a mapping of options")
    for key, val in (overrides or {}).items():
        sec, _, opt = key.rpartition(".")
        if not sec and opt not in ("strategy", "task"):
            raise TunelabError(f"option --{key} needs its section, e.g. --train.{key}")
        nested.setdefault(sec, {})[opt] = val

    cfg = Config()
    strategy = str(nested.get("", {}).get("strategy", cfg.strategy))
    strat_cls = strategy_config_class(strategy)
    for sec, vals in nested.items():
        if sec == "":
            continue
        if sec in SECTIONS:
            setattr(cfg, sec, update_dataclass(getattr(cfg, sec), vals, sec))
        elif sec == strategy:
            continue
        else:
            from tunelab.strategies import STRATEGIES

            if sec in STRATEGIES:
                raise TunelabError(
                    f"options for {sec!r} given but the strategy is {strategy!r}: "
                    f"add --strategy {sec} or drop the {sec}.* options"
                )
            known = ", ".join([*SECTIONS, "strategy", *STRATEGIES])
            raise TunelabError(f"unknown config section {sec!r}: known ones are {known}")
    strat_opts = update_dataclass(strat_cls(), nested.get(strategy, {}), strategy)
    cfg.strategy = strategy
    cfg.task = str(nested.get("", {}).get("task", cfg.task))
    cfg.strategy_options = dataclasses.asdict(strat_opts)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Check choices and ranges before anything is loaded or written."""
    from tunelab.training.optim import SCHEDULES

    t, d = cfg.train, cfg.data
    if t.schedule not in SCHEDULES:
        raise TunelabError(f"unknown schedule {t.schedule!r}: choose one of {', '.join(SCHEDULES)}")
    if t.precision not in PRECISIONS:
        raise TunelabError(
            f"unknown precision {t.precision!r}: choose one of {', '.join(PRECISIONS)}"
        )
    checks = [
        (t.batch_size >= 1, "train.batch_size must be at least 1"),
        (t.grad_accum >= 1, "train.grad_accum must be at least 1"),
        (t.lr > 0, "train.lr must be positive"),
        (t.epochs > 0 or (t.max_steps or 0) > 0, "train.epochs or train.max_steps must be > 0"),
        (0 <= t.warmup_ratio < 1, "train.warmup_ratio must be in [0, 1)"),
        (d.max_length >= 2, "data.max_length must be at least 2"),
        (d.limit is None or d.limit >= 2, "data.limit must be at least 2"),
        (cfg.task in TASKS, f"task must be one of {', '.join(TASKS)}, not {cfg.task!r}"),
        (d.max_target_length >= 1, "data.max_target_length must be at least 1"),
    ]
    for ok, msg in checks:
        if not ok:
            raise TunelabError(f"{msg}: fix the config or flag")
