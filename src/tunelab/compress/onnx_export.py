"""ONNX export, run by onnxruntime: sequence classifiers and base encoders.

`torch.onnx.export(dynamo=True)` writes the graph and onnxruntime's `quantize_dynamic` makes the
int8 variant. What is written here is the glue those libraries leave to their callers: dynamic
batch/sequence axes, falling back when the dynamo exporter fails, a check against the torch
model, and the metadata `onnx_info` reads back. Running an exported file (`OnnxClassifier`) is
`onnx_run`; GGUF is `gguf_export`.

Every file is written to a hidden folder beside its destination and renamed into place, so a
failed export leaves nothing half-written under the final name (`_partial_dir` / `_commit`,
which `gguf_export` uses too).

onnx / onnxruntime / onnxscript are the optional `tunelab[compress]` extra: imported inside the
functions that need them.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunelab.compress.onnx_run import _feeds, _need_onnx, _session
from tunelab.errors import TunelabError

EXPORTER_KEY = "tunelab.exporter"
"""ONNX metadata key naming the exporter that wrote the graph ('dynamo', 'torchscript' ...)."""
EXAMPLE_TEXTS = ["the quick brown fox jumps over the lazy dog today", "hello world"]
"""Two texts of different lengths: a dynamic axis must not be 1 (or equal another) in the
example, or torch.export specializes it."""


def _merged(model: nn.Module) -> nn.Module:
    """The model with any peft adapters folded in (on a copy: the caller's model is untouched)."""
    if hasattr(model, "merge_and_unload"):
        return copy.deepcopy(model).merge_and_unload()
    return model


def _partial_dir(path: Path) -> Path:
    tmp = path.parent / f".{path.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _commit(tmp: Path, path: Path) -> Path:
    """Move `tmp/path.name` (written last) and its side files (external data) into place."""
    for side in tmp.iterdir():
        if side.name != path.name:
            os.replace(side, path.parent / side.name)
    os.replace(tmp / path.name, path)
    shutil.rmtree(tmp, ignore_errors=True)
    return path


def _forward_params(model: nn.Module) -> set[str]:
    return set(inspect.signature(model.forward).parameters)


def _onnx_output(model: nn.Module) -> str:
    """'logits' for a sequence classifier, 'last_hidden_state' for a base encoder."""
    cls = type(model).__name__
    if cls.endswith("ForSequenceClassification"):
        return "logits"
    if getattr(model, "base_model", model) is model and "decoder_input_ids" not in _forward_params(
        model
    ):
        return "last_hidden_state"
    raise TunelabError(
        f"ONNX export takes a sequence classifier or a base encoder, not a {cls}: "
        "export a decoder LM with gguf-f16 / gguf-q8_0 instead"
    )


def _onnx_inputs(model: nn.Module) -> list[str]:
    names = ["input_ids", "attention_mask"]
    # whether or not the tokenizer makes them: OnnxClassifier feeds zeros, the model's default
    return names + ["token_type_ids"] if "token_type_ids" in _forward_params(model) else names


def _extra_kwargs(model: nn.Module) -> dict[str, Any]:
    # a decoder's cache object is no tensor: the graph returns the one output only
    return {"use_cache": False} if "use_cache" in _forward_params(model) else {}


class _OneOutput(nn.Module):
    """The model with positional int64 inputs and one tensor out: what the exporters want."""

    def __init__(self, model: nn.Module, output: str) -> None:
        super().__init__()
        self.model, self.output, self.extra = model, output, _extra_kwargs(model)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        return self.model(**kwargs, **self.extra)[self.output]


def _example(model: nn.Module, tokenizer, names: list[str]) -> tuple[torch.Tensor, ...]:
    """A (2, seq >= 3) example batch with padding, from the tokenizer where it can pad."""
    device = next(model.parameters()).device
    batch = None
    if tokenizer is not None:
        try:
            batch = tokenizer(EXAMPLE_TEXTS, padding=True, return_tensors="pt")
        except (ValueError, TypeError, KeyError):  # no pad token, or a slow-only quirk
            batch = None
    if batch is None or batch["input_ids"].shape[1] < 3:
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(5, model.config.vocab_size, (2, 8), generator=gen)
        eos = getattr(model.config, "eos_token_id", None)
        if isinstance(eos, int):  # T5 classifiers pool at the one </s> each row must end with
            ids[:, -1] = eos
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    ids = batch["input_ids"]
    batch.setdefault("attention_mask", torch.ones_like(ids))
    if "token_type_ids" not in batch:
        batch["token_type_ids"] = torch.zeros_like(ids)
    return tuple(batch[n].to(device=device, dtype=torch.long) for n in names)


def _clean_onnx(tmp_file: Path, info: dict[str, str]) -> None:
    """Drop per-node stack traces (they hold this machine's paths) and record how it was made."""
    import onnx

    proto = onnx.load(str(tmp_file), load_external_data=False)

    def strip(graph) -> None:
        for node in graph.node:
            node.doc_string = ""
            del node.metadata_props[:]
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    strip(attr.g)
                for sub in attr.graphs:
                    strip(sub)

    strip(proto.graph)
    keep = {p.key: p.value for p in proto.metadata_props if not p.key.startswith("tunelab.")}
    del proto.metadata_props[:]
    for key, value in {**keep, **info}.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(tmp_file))


def to_onnx(model: nn.Module, tokenizer, path: Path, opset: int | None = None) -> Path:
    """Export a sequence classifier (output `logits`) or a base encoder (`last_hidden_state`).

    Inputs input_ids + attention_mask (+ token_type_ids where the model takes them), int64
    (batch, sequence) with both axes dynamic. The dynamo exporter runs first; if it fails it is
    retried with eager attention (T5's SDPA path trips its decompositions), then the TorchScript
    exporter. The one that worked is stored in the file's metadata under `EXPORTER_KEY` (see
    `onnx_info`). Weights go to `path.name + '.data'` beside it only when the exporter insists
    (over 2 GB). The tokenizer only makes the example batch (random ids without one).
    """
    _need_onnx("ONNX export")
    path = Path(path)
    model = _merged(model)
    output = _onnx_output(model)
    names = _onnx_inputs(model)
    wrapper = _OneOutput(model, output).eval()
    args = _example(model, tokenizer, names)
    was_training = model.training
    model.eval()
    impl = getattr(model.config, "_attn_implementation", None)
    attempts = ["dynamo"]
    if impl not in (None, "eager") and hasattr(model, "set_attn_implementation"):
        attempts.append("dynamo, eager attention")
    attempts.append("torchscript")
    tmp = _partial_dir(path)
    failures = []
    try:
        for how in attempts:
            if how == "dynamo, eager attention":
                model.set_attn_implementation("eager")
            try:
                _export(wrapper, args, names, output, tmp / path.name, how, opset, model.config)
            except Exception as exc:  # noqa: BLE001 - every exporter failure means: try the next
                failures.append(f"{how}: {type(exc).__name__}: {_first_line(exc)}")
                for leftover in tmp.iterdir():
                    leftover.unlink()
                continue
            _clean_onnx(tmp / path.name, {EXPORTER_KEY: how, "tunelab.output": output})
            return _commit(tmp, path)
        raise TunelabError(f"ONNX export of {type(model).__name__} failed: {'; '.join(failures)}")
    finally:
        if impl not in (None, "eager") and hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation(impl)
        model.train(was_training)
        shutil.rmtree(tmp, ignore_errors=True)


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # torch.onnx puts its advice first and the cause under "Exception summary"
    for i, line in enumerate(lines):
        if line.startswith("<class") and i:
            return line[:300]
    return (lines[0] if lines else "")[:300]


def _export(wrapper, args, names, output, file: Path, how: str, opset, config) -> None:
    with warnings.catch_warnings():
        # naming one Dim on several inputs, and a pytree deprecation inside torch: not actionable
        warnings.filterwarnings("ignore", ".*will not be used, since it shares", UserWarning)
        warnings.filterwarnings("ignore", ".*LeafSpec.*", FutureWarning)
        # the fallback knows it is the legacy exporter: that is why it is the fallback
        warnings.filterwarnings("ignore", ".*legacy TorchScript-based ONNX", DeprecationWarning)
        warnings.filterwarnings("ignore", ".*feature will be removed", DeprecationWarning)
        _run_exporter(wrapper, args, names, output, file, how, opset, config)


def _run_exporter(wrapper, args, names, output, file: Path, how: str, opset, config) -> None:
    axes = {0: "batch", 1: "sequence"}
    if how.startswith("dynamo"):
        limit = getattr(config, "max_position_embeddings", None)
        batch = torch.export.Dim("batch", min=1)
        seq = torch.export.Dim("sequence", min=1, **({"max": limit} if limit else {}))
        program = torch.onnx.export(
            wrapper,
            args,
            dynamo=True,
            input_names=names,
            output_names=[output],
            dynamic_shapes={n: {0: batch, 1: seq} for n in names},
            opset_version=opset,
            verbose=False,
        )
        program.save(str(file))
        return
    out_axes = {0: "batch"} if output == "logits" else axes
    torch.onnx.export(
        wrapper,
        args,
        str(file),
        dynamo=False,
        input_names=names,
        output_names=[output],
        dynamic_axes={**{n: axes for n in names}, output: out_axes},
        opset_version=opset or 17,
    )


def onnx_info(path: Path) -> dict[str, Any]:
    """What an exported file says of itself: exporter, output name, inputs, opset."""
    _need_onnx("reading an ONNX file")
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    return {
        "exporter": meta.get(EXPORTER_KEY, "unknown"),
        "output": proto.graph.output[0].name,
        "inputs": [i.name for i in proto.graph.input],
        "opset": next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None),
        "quantized": meta.get("tunelab.quantized", ""),
    }


def check_onnx(model: nn.Module, path: Path, batch: dict, atol: float = 1e-4) -> float:
    """Max |torch - onnxruntime| over the exported output on `batch`; TunelabError above `atol`."""
    _need_onnx("checking an ONNX export")
    session = _session(Path(path))
    feeds = _feeds(session, batch)
    output = session.get_outputs()[0].name
    got = torch.from_numpy(session.run([output], feeds)[0])
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            inputs = {k: torch.from_numpy(v).to(device) for k, v in feeds.items()}
            want = model(**inputs, **_extra_kwargs(model))[output]
    finally:
        model.train(was_training)
    diff = (got.float() - want.detach().float().cpu()).abs().max().item()
    if not diff <= atol:  # also catches NaN
        raise TunelabError(
            f"ONNX model {Path(path).name} differs from the torch model by {diff:.3g} "
            f"(tolerance {atol:g}) on the check batch: the export is not faithful, keep the "
            "torch model or re-export with another opset"
        )
    return diff


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime's quantizer warns on the root logger (and its shape inference prints) about
    every tensor it leaves in float: noise to a user, so both are muted while it runs."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def quantize_onnx_int8(src: Path, dst: Path) -> Path:
    """onnxruntime dynamic quantization: int8 weights (QInt8), int8 activations at run time.

    onnxruntime's `quant_pre_process` runs first (graph optimization, as onnxruntime
    recommends), without its symbolic shape inference: dynamo graphs defeat it, and on failure
    it dumps `sym_shape_infer_temp.onnx` + a .data file into the working directory. If
    pre-processing fails altogether the graph is quantized as exported.
    """
    _need_onnx("int8 ONNX quantization")
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src), Path(dst)
    large = sum(f.stat().st_size for f in src.parent.glob(src.name + "*")) > 1_800_000_000
    tmp = _partial_dir(dst)
    try:
        pre = tmp / "preprocessed.onnx"
        try:
            with _quiet():
                quant_pre_process(
                    src,
                    pre,
                    skip_symbolic_shape=True,
                    save_as_external_data=large,
                    external_data_location=pre.name + ".data",
                )
        except Exception:  # noqa: BLE001 - pre-processing is an optimization only
            pre.unlink(missing_ok=True)
        with _quiet():
            quantize_dynamic(
                pre if pre.is_file() else src,
                tmp / dst.name,
                weight_type=QuantType.QInt8,
                use_external_data_format=large,
            )
        for f in tmp.glob("preprocessed.onnx*"):
            f.unlink()
        meta = {
            p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props
        }
        _clean_onnx(tmp / dst.name, {**meta, "tunelab.quantized": "int8-dynamic"})
        return _commit(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
