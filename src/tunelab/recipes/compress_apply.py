"""One compression method applied to a source run, written as a run folder of its own.

quantize: quantized.safetensors (int8 values + scales as plain tensors) or bf16 weights;
prune: zeros in full weights (unstructured), or smaller matrices (`pruned.safetensors` + the
plan in the marker; dropped layers change the config, so those open with transformers as
they are); distill: the student as a full run; export: model.onnx or model.gguf. Methods that
train (structured pruning's recovery, distillation) go through the one training loop.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from torch import nn

from tunelab.compress import MethodSpec, parse_method
from tunelab.config.compress import CompressConfig, CompressOptions, check_recovery_strategy
from tunelab.errors import TunelabError
from tunelab.logs import say
from tunelab.recipes.compress_source import Source, derived_marker
from tunelab.runs.compressed import PRUNED_FILE, QUANTIZED_FILE
from tunelab.runs.marker import is_run
from tunelab.runs.workdir import discard_if_fresh, finish_workdir, open_workdir


def _encoded(source: Source, tok, model: nn.Module | None = None):
    """(Encoded splits of the source run's data for `tok`, the run's finetune config)."""
    from tunelab.tasks.base import get_task

    cfg = source.finetune_config()
    task = get_task(source.marker.task)
    loaded = _AsLoaded(tok, source.marker.family or "encoder", model)
    return task.encode(source.splits(), loaded, cfg.data, cfg.train.eval_batch_size), cfg


class _AsLoaded:
    """The part of models.load.Loaded a task's encode() reads."""

    def __init__(self, tokenizer, family: str, model: nn.Module | None = None) -> None:
        self.tokenizer, self.family, self.model = tokenizer, family, model


def calibration_batches(source: Source, tok, n: int, batch_size: int = 8) -> list[dict]:
    """`n` training examples of the run as model-ready batches (with labels)."""
    enc, _ = _encoded(source, tok)
    items = [enc.data["train"][i] for i in range(min(n, len(enc.data["train"])))]
    return [dict(enc.collate(items[i : i + batch_size])) for i in range(0, len(items), batch_size)]


def train_in_loop(
    model: nn.Module,
    source: Source,
    tok,
    work: Path,
    opts: CompressOptions,
    steps: int | None,
    epochs: float,
    lr: float,
    quiet: bool,
    hooks=None,
) -> dict[str, Any]:
    """Fine-tune `model` (or a distillation wrapper) on the run's training split through the
    one loop; returns the loop's counters. Validation picks the best weights where there is a
    validation split."""
    from tunelab.training.loop import train
    from tunelab.training.options import TrainOptions

    enc, _ = _encoded(source, tok, getattr(model, "student", model))
    metric = "loss" if source.generative else "macro_f1"
    options = TrainOptions(
        epochs=epochs,
        max_steps=steps,
        batch_size=opts.batch_size,
        lr=lr,
        warmup_ratio=0.06,
        metric=metric,
        keep_best="validation" in enc.data,
        seed=opts.seed,
        threads=opts.threads,
        max_grad_norm=1.0,
    )
    folder = work / "training"
    result = train(
        model,
        enc.data["train"],
        enc.collate,
        options,
        folder,
        evaluate=(
            (lambda m: enc.evaluate(m, enc.data["validation"], "validating", not quiet))
            if "validation" in enc.data
            else None
        ),
        before_step=hooks.before_step if hooks else None,
        after_step=hooks.after_step if hooks else None,
        param_groups=hooks.param_groups if hooks else None,
        show_progress=not quiet,
    )
    shutil.rmtree(folder, ignore_errors=True)
    return {"steps": result.steps, "seconds": round(result.train_seconds, 1)}


def _recover(model, source, tok, work, opts, quiet) -> dict[str, Any] | None:
    """The recovery fine-tune after pruning, with the chosen strategy (peft merged back)."""
    from tunelab.strategies import get_strategy

    if opts.recovery_steps == 0:
        return None
    check_recovery_strategy(opts.recovery_strategy)
    strategy = get_strategy(opts.recovery_strategy)
    options = strategy.options({})
    family = source.marker.family or "encoder"
    trained = strategy.build(model, options, family, opts.recovery_steps)
    say(f"recovering with {opts.recovery_steps} steps of {opts.recovery_strategy}", quiet)
    counters = train_in_loop(
        trained,
        source,
        tok,
        work,
        opts,
        opts.recovery_steps,
        1.0,
        opts.recovery_lr,
        quiet,
        strategy.bound_hooks(options),  # gradual unfreezing, AdaLoRA's allocation, LR groups
    )
    if hasattr(trained, "merge_and_unload"):
        trained.merge_and_unload()
    for p in model.parameters():
        p.requires_grad_(True)
    return counters


def _quantize(ms: MethodSpec, source: Source, work: Path) -> tuple[dict, str]:
    from safetensors.torch import save_file

    from tunelab.compress import quantize

    model, tok = source.plain_model()
    tok.save_pretrained(work)
    if ms.name == "bf16":
        model.to(__import__("torch").bfloat16).save_pretrained(work)
        return {"scheme": "bf16"}, "full"
    scheme = ms.name
    q = quantize.quantize(model, scheme, int(ms.params.get("group", 32)))
    state, meta = quantize.quantized_state(q, scheme)
    save_file(state, str(work / QUANTIZED_FILE))
    model.config.save_pretrained(work)
    return {"scheme": scheme, "meta": meta}, "quantized"


def _prune(ms, source, work, opts, quiet) -> tuple[dict, str]:
    from safetensors.torch import save_file

    from tunelab.compress import prune, structured

    model, tok = source.plain_model()
    tok.save_pretrained(work)
    before = prune.count_params(model)
    batches = (
        calibration_batches(source, tok, opts.calibration_examples) if ms.name != "prune" else []
    )
    info: dict[str, Any] = {"params_before": before}
    if ms.name == "prune":
        share = int(ms.params["percent"]) / 100
        info["report"] = prune.magnitude(model, share, per_layer="scope" in ms.params)
    elif ms.name == "wanda":
        info["report"] = prune.wanda(model, batches, int(ms.params["percent"]) / 100)
    elif ms.name == "prune-heads":
        info["plan"] = structured.heads(model, int(ms.params["percent"]) / 100, batches)
    elif ms.name == "prune-ffn":
        info["plan"] = structured.ffn(model, int(ms.params["percent"]) / 100, batches)
    else:
        info["layers"] = structured.layers(model, int(ms.params["count"]), batches)
    if ms.name in ("prune-heads", "prune-ffn", "prune-layers"):
        info["recovery"] = _recover(model, source, tok, work, opts, quiet)
    info["params_after"] = prune.count_params(model)
    if ms.name in ("prune", "wanda"):
        info["sparsity"] = prune.sparsity(model)
    if "plan" in info:
        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()}, str(work / PRUNED_FILE)
        )
        model.config.save_pretrained(work)
        return info, "pruned"
    model.save_pretrained(work)
    return info, "full"


def _distill(ms, source, work, cfg: CompressConfig, quiet) -> tuple[dict, str]:

    from tunelab.compress import distill

    opts = cfg.compress
    teacher, tok = source.plain_model()
    tok.save_pretrained(work)
    layers = ms.params["layers"]  # the depth is the method's: distill-half, distill-N
    options = cfg.distill
    student = distill.make_student(teacher, "half" if layers == "half" else int(layers))
    wrapper = distill.Distiller(student, teacher, options)
    counters = train_in_loop(
        wrapper, source, tok, work, opts, None, opts.distill_epochs, opts.distill_lr, quiet
    )
    student = wrapper.student
    student.save_pretrained(work)
    info = {
        "teacher_layers": teacher.config.num_hidden_layers
        if hasattr(teacher.config, "num_hidden_layers")
        else None,
        "student_layers": getattr(student.config, "num_hidden_layers", None),
        "training": counters,
        "options": {
            k: getattr(options, k) for k in ("temperature", "alpha", "hidden_weight", "loss")
        },
    }
    return info, "full"


def _export(ms, source, work) -> tuple[dict, str]:
    from tunelab.compress import export

    model, tok = source.plain_model()
    tok.save_pretrained(work)
    model.config.save_pretrained(work)
    if ms.name == "gguf":
        if source.marker.family != "decoder" or source.marker.task == "classification":
            raise TunelabError("gguf export is for decoder language models: use onnx here")
        export.to_gguf(model, tok, work / "model.gguf", ms.params["qtype"])
        return {"format": "gguf", "qtype": ms.params["qtype"]}, "gguf"
    if source.marker.task != "classification":
        raise TunelabError("onnx export is for classifiers here: use gguf-q8_0 for a decoder LM")
    path = export.to_onnx(model, tok, work / "model.onnx")
    batch = {
        k: v
        for k, v in tok(
            ["a short text", "and a longer second text"], padding=True, return_tensors="pt"
        ).items()
    }
    diff = export.check_onnx(model, path, batch)
    info: dict[str, Any] = {"format": "onnx", "max_abs_diff": diff}
    if "int8" in ms.params:
        export.quantize_onnx_int8(path, work / "model.int8.onnx")
        (work / "model.int8.onnx").replace(path)
        info["int8"] = True
    return info, "onnx"


def produce(spec: str, source: Source, runs_dir: Path, cfg: CompressConfig, quiet: bool) -> Path:
    """The run folder of `spec` applied to `source` (made once: a finished one is reused)."""
    import torch

    opts = cfg.compress
    ms = parse_method(spec)
    name = spec.replace("/", "_")
    if is_run(runs_dir / name):
        return runs_dir / name
    if opts.threads:
        torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    final, work = open_workdir(
        runs_dir, name, True, {**source.config, "compress": {"method": spec}}
    )
    with discard_if_fresh(work):
        kind = ms.name
        say(f"{spec}: compressing {source.run}", quiet)
        if kind in ("bf16", "int8-dynamic", "int8-weight", "int4-weight"):
            info, weights = _quantize(ms, source, work)
        elif kind.startswith("prune") or kind == "wanda":
            info, weights = _prune(ms, source, work, opts, quiet)
        elif kind == "distill":
            info, weights = _distill(ms, source, work, cfg, quiet)
        else:
            info, weights = _export(ms, source, work)
    from tunelab.runs.save import write_run_files

    marker = derived_marker(source, {"method": spec, "kind": kind, **info}, weights)
    config = {**source.config, "compress": {"method": spec}}
    metric = "loss" if source.generative else "macro_f1"
    config.setdefault("train", {}).setdefault("metric", metric)
    write_run_files(work, marker, config, {}, metric)
    finish_workdir(work, final)
    return final
