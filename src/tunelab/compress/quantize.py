"""Post-training quantization of classifiers and language models, and its weight format.

Schemes and the path each takes on CPU, chosen by the measurements below:

- `bf16`: every weight in bfloat16 (`model.to(torch.bfloat16)`), bf16 compute.
- `int8-dynamic`: int8 per-output-channel weights and per-call int8 activations in every
  Linear, through `torch.ao.quantization.quantize_dynamic` (fbgemm/x86 kernels): 2.7-3.4x
  fp32 on whole models, where torchao's eager `Int8DynamicActivationInt8WeightConfig` is
  0.75-1.1x (it needs torch.compile to pay). torch.ao.quantization is deprecated (its warnings
  are silenced here); where it is gone, and on GPU, that torchao config runs instead, and the
  two load each other's files (same weights, activations rounded each backend's way).
- `int8-weight`: int8 weights (symmetric, per output row), everything else in bf16. On CPU
  each Linear runs PyTorch's fused `aten._weight_int8pack_mm` kernel with bf16 activations
  (`int8_linear.Int8PackLinear`): it reads a byte per weight, the fastest precision for decoding
  at batch 1 that keeps a language model's quality (docs/generation.md). Elsewhere torchao's
  `Int8WeightOnlyConfig` (per row) runs, which in eager mode widens the int8 weight every call
  (0.7-0.95x fp32 speed). Files made either way load on both.
- `int4-weight`: torchao's CPU int4 layout, `PrototypeInt4WeightOnlyConfig` (torchao 0.18
  moved it out of `Int4WeightOnlyConfig` into the prototype namespace): asymmetric group-wise
  int4 on PyTorch's tinygemm CPU kernel `aten._weight_int4pack_mm_for_cpu`. That kernel is
  fast only with bf16 activations (with fp32 ones 6-70x slower than fp32), so the model runs in
  bf16 with int4 Linears. A Linear whose in_features is not a multiple of the group, or whose
  out_features is not a multiple of 16 (the kernel's packing), stays in bf16. CPU only: on
  another device, or a torch without the kernel, it raises and names int8-weight/int8-dynamic.
  (torchao's int8-activation int4 kernel, `da8w4_linear_cpu`, is not built into this wheel.)

Task heads (`classifier`, `score`, `classification_head`) stay in float: a few thousand
parameters that produce the logits directly. Embeddings stay in float: neither library has an
int8 gather here that does not dequantize the whole table per call. A tied LM head is quantized
as its own module (it is SmolLM2's largest matmul, 10x faster in int8): the embedding keeps the
float matrix, the head reads the int8/int4 copy of the same matrix, the approximation every
other Linear makes. So the file holds both, and `model.tie_weights()` must not be called on a
quantized model (nothing in inference does).

Measured speed and size of every scheme (layers and whole models): docs/compression.md.

Weight format (`quantized_state`): plain tensors only. A quantized Linear `N` stores `N.bias`
as is, and
- int8: `N.weight_int8` int8 (out, in) and `N.weight_scale` (out,) float; w = q * scale.
- int4: `N.weight_int4` uint8 (out, in/2), two values 0..15 per byte, the even column in the low
  nibble; `N.weight_scale` and `N.weight_zero` (out, in/group) bf16; w = (q - 8) * scale + zero
  (tinygemm's convention).
Every other parameter and persistent buffer is stored as it is; one name of each tied pair is
dropped and listed under the meta's `aliases`.
"""

from __future__ import annotations

import torch
from torch import nn

from tunelab.compress.quantize_format import (
    AO_DYNAMIC,
    BF16,
    FORMAT,
    INT4_N_MULTIPLE,
    INT8_PACK,
    TORCHAO_INT4_CPU,
    TORCHAO_INT8_DYNAMIC,
    TORCHAO_INT8_WEIGHT,
    _dedupe,
    _export_linear,
    _import_linear,
    _import_torchao,
    _kind,
    _owner,
    _quiet,
    _set_module,
)
from tunelab.errors import TunelabError
from tunelab.models.families import HEAD_NAMES

SCHEMES = ("bf16", "int8-dynamic", "int8-weight", "int4-weight")
INT4_GROUP_SIZES = (32, 64, 128)
_METHODS_HINT = "--methods takes bf16, int8-dynamic, int8-weight or int4-weight-g32 (g64, g128)"


def quantize(model: nn.Module, scheme: str, group_size: int = 32) -> nn.Module:
    """`model` (modified in place) ready for inference in `scheme`, on its own device.

    Int8 schemes take the model to float32 first, int4-weight and bf16 to bfloat16.

    Raises:
        TunelabError: unknown scheme or group size, no Linear the scheme can quantize, or
            int4-weight on a device without an int4 kernel.
    """
    _check_scheme(scheme, group_size)
    model.eval()
    backend = _backend(scheme, _device(model))
    if scheme == "bf16":
        return model.to(torch.bfloat16)
    names = _targets(model, scheme, group_size)  # raises before anything changes
    if backend == INT8_PACK:  # scales from the float weights as they are, then bf16 compute
        from tunelab.compress.int8_linear import Int8PackLinear

        for name in names:
            _set_module(model, name, Int8PackLinear.from_linear(model.get_submodule(name)))
        return model.to(torch.bfloat16)
    model.to(torch.bfloat16 if scheme == "int4-weight" else torch.float32)
    if backend == AO_DYNAMIC:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        with _quiet():
            spec = dict.fromkeys(names, per_channel_dynamic_qconfig)
            quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)
        for name in names:  # float32 scales (torch.ao keeps float64), as the file stores them
            saved = _export_linear(name, model.get_submodule(name), AO_DYNAMIC)
            _set_module(model, name, _import_linear(name, None, saved, AO_DYNAMIC, None))
        return model
    torchao, config = _torchao_config(backend, group_size)
    wanted = set(names)
    with _quiet():
        torchao.quantization.quantize_(model, config, filter_fn=lambda _m, fqn: fqn in wanted)
    return model


def quantized_state(model: nn.Module, scheme: str) -> tuple[dict[str, torch.Tensor], dict]:
    """A safetensors-ready state dict of a model `quantize(model, scheme)` returned, and its
    JSON-able meta (scheme, group size, backend, quantized module names, aliases)."""
    _check_scheme(scheme, 32)
    modules = {n: m for n, m in model.named_modules() if _kind(m) is not None}
    kinds = {_kind(m) for m in modules.values()}
    if scheme == "bf16":
        backend, group_size = BF16, None
        if modules or any(
            p.is_floating_point() and p.dtype != torch.bfloat16 for p in model.parameters()
        ):
            raise ValueError("quantized_state(..., 'bf16') needs the model quantize() returned")
    else:
        if len(kinds) != 1 or _SCHEME_OF[next(iter(kinds))] != scheme:
            raise ValueError(f"this model was not quantized with {scheme!r} (found {kinds})")
        backend = next(iter(kinds))
        group_size = None
        if backend == TORCHAO_INT4_CPU:
            group_size = next(iter(modules.values())).weight.block_size[1]
    state: dict[str, torch.Tensor] = {}
    for name, mod in modules.items():
        state.update(_export_linear(name, mod, backend))
    for key, t in model.state_dict().items():
        if _owner(key, modules) is None:
            state[key] = t
    state, aliases = _dedupe(state)
    state = {k: t.detach().to("cpu").contiguous() for k, t in state.items()}
    for key, t in state.items():
        if type(t) is not torch.Tensor or t.is_quantized:
            raise ValueError(f"{key} is not a plain tensor ({type(t).__name__}, {t.dtype})")
    kept = _kept_float(model, scheme, group_size or 32) if modules else {}
    meta = {
        "format": FORMAT,
        "scheme": scheme,
        "group_size": group_size,
        "backend": backend,
        "dtype": "bfloat16"
        if scheme in ("bf16", "int4-weight") or backend == INT8_PACK
        else "float32",
        "modules": sorted(modules),
        "kept_float": kept,
        "aliases": aliases,
    }
    return state, meta


def load_quantized(model: nn.Module, state: dict[str, torch.Tensor], meta: dict) -> nn.Module:
    """`model` (a fresh float model of the same architecture; modified in place) quantized with
    exactly the weights in `state`, as `quantized_state` wrote them with `meta`.

    On the kind of device the file was made on, the backend is the same and the outputs are
    identical to those of the model `quantize` returned. An int8-dynamic file made with torchao
    (GPU) runs on CPU with torch.ao's kernels and the reverse: the same weights, with the
    activations rounded each backend's way.

    Raises:
        TunelabError: the meta is not a quantization this module wrote, or the weights do not
            fit this model.
    """
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise TunelabError(
            f"not a quantization this tunelab wrote (format {found!r}, expected {FORMAT}):"
            " re-run compress with the same --methods"
        )
    scheme, names = meta["scheme"], set(meta["modules"])
    _check_scheme(scheme, meta.get("group_size") or 32)
    backend = _backend(scheme, _device(model))  # the same weights on this device's kernels
    model.eval()
    model.to(torch.bfloat16 if meta["dtype"] == "bfloat16" else torch.float32)
    qkeys = {k for k in state if _owner(k, names) and k.rsplit(".", 1)[1].startswith("weight_")}
    plain = {k: v for k, v in state.items() if k not in qkeys}
    for dup, kept in meta.get("aliases", {}).items():
        plain[dup] = plain[kept]
    try:
        missing, unexpected = model.load_state_dict(plain, strict=False)
        bad = sorted(set(missing) - {f"{n}.weight" for n in names}) + sorted(unexpected)
        bad += [f"{n}.weight" for n in names if not _fits(model.get_submodule(n), n, state)]
    except (RuntimeError, AttributeError) as e:  # shapes differ / no such module
        bad = [str(e).strip().splitlines()[-1].strip()]
    if bad:
        raise TunelabError(
            f"the saved {scheme} weights do not fit this model ({len(bad)} mismatched,"
            f" e.g. {bad[0]}): re-run compress --methods {scheme} on this model"
        )
    if scheme == "bf16":
        return model
    for name in names:
        _set_module(
            model,
            name,
            _import_linear(name, model.get_submodule(name), state, backend, meta.get("group_size")),
        )
    return model


def _fits(mod: nn.Module, name: str, state: dict[str, torch.Tensor]) -> bool:
    """Whether the saved quantized weight of `name` has the shape of the Linear `mod`."""
    if type(mod) is not nn.Linear:
        return False
    if f"{name}.weight_int8" in state:
        return tuple(state[f"{name}.weight_int8"].shape) == (mod.out_features, mod.in_features)
    q = state.get(f"{name}.weight_int4")
    return q is not None and tuple(q.shape) == (mod.out_features, mod.in_features // 2)


def quantized_bytes(state: dict[str, torch.Tensor]) -> int:
    """Bytes the tensors of `state` hold (what a safetensors file of it stores, less header)."""
    return sum(t.numel() * t.element_size() for t in state.values())


# ---- choosing what and how


def _check_scheme(scheme: str, group_size: int) -> None:
    if scheme not in SCHEMES:
        raise TunelabError(f"unknown quantization scheme {scheme!r}: {_METHODS_HINT}")
    if scheme == "int4-weight" and group_size not in INT4_GROUP_SIZES:
        raise TunelabError(
            f"int4 group size {group_size} is not supported: use --methods int4-weight-g32,"
            " int4-weight-g64 or int4-weight-g128"
        )


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _backend(scheme: str, device: torch.device) -> str:
    if scheme == "bf16":
        return BF16
    if scheme == "int8-weight":
        from tunelab.compress.int8_linear import has_kernel

        return INT8_PACK if device.type == "cpu" and has_kernel() else TORCHAO_INT8_WEIGHT
    if scheme == "int8-dynamic":
        return AO_DYNAMIC if device.type == "cpu" and _ao_dynamic_ok() else TORCHAO_INT8_DYNAMIC
    if device.type != "cpu":
        raise TunelabError(
            f"int4-weight runs on CPU only in this version (the model is on {device.type}):"
            " compress on CPU, or use --methods int8-weight or int8-dynamic"
        )
    if not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
        raise TunelabError(
            "int4-weight: this torch build has no CPU int4 kernel: use --methods int8-dynamic"
            " (fastest on CPU) or int8-weight, or gguf-q8_0 for llama.cpp"
        )
    return TORCHAO_INT4_CPU


_SCHEME_OF = {
    AO_DYNAMIC: "int8-dynamic",
    TORCHAO_INT8_DYNAMIC: "int8-dynamic",
    TORCHAO_INT8_WEIGHT: "int8-weight",
    INT8_PACK: "int8-weight",
    TORCHAO_INT4_CPU: "int4-weight",
}


def _ao_dynamic_ok() -> bool:
    try:
        from torch.ao.nn.quantized.dynamic import Linear  # noqa: F401
        from torch.ao.quantization import quantize_dynamic  # noqa: F401
    except ImportError:
        return False
    return torch.backends.quantized.engine != "none"


def _targets(model: nn.Module, scheme: str, group_size: int) -> list[str]:
    """Names of the plain Linears `scheme` quantizes in `model`."""
    names, kept = [], {}
    for name, mod in model.named_modules():
        if type(mod) is nn.Linear:
            reason = _keep_reason(model, name, mod, scheme, group_size)
            if reason:
                kept[name] = reason
            else:
                names.append(name)
    if not names:
        why = ", ".join(sorted(set(kept.values()))) or "none found"
        raise TunelabError(
            f"{scheme}: {type(model).__name__} has no Linear layer it can quantize ({why}):"
            " use --methods bf16" + (" or int8-weight" if scheme == "int4-weight" else "")
        )
    return names


def _kept_float(model: nn.Module, scheme: str, group_size: int) -> dict[str, str]:
    """The Linears `scheme` left in float, with why (for the meta)."""
    out = {}
    for name, mod in model.named_modules():
        if type(mod) is nn.Linear and _kind(mod) is None:
            out[name] = _keep_reason(model, name, mod, scheme, group_size) or "not quantized"
    return out


def _keep_reason(model: nn.Module, name: str, mod: nn.Linear, scheme: str, group: int) -> str:
    heads = [n for n in HEAD_NAMES if isinstance(getattr(model, n, None), nn.Module)]
    if any(name == h or name.startswith(h + ".") for h in heads):
        return "task head"
    if scheme == "int4-weight" and (mod.in_features % group or mod.out_features % INT4_N_MULTIPLE):
        return f"in_features % {group} or out_features % {INT4_N_MULTIPLE} is not 0"
    if scheme == "int8-weight" and _backend(scheme, _device(model)) == INT8_PACK:
        from tunelab.compress.int8_linear import K_MULTIPLE, fits

        return "" if fits(mod) else f"in_features % {K_MULTIPLE} is not 0 (the CPU kernel)"
    return ""


def _torchao_config(backend: str, group_size: int):
    torchao = _import_torchao()
    q = torchao.quantization
    if backend == TORCHAO_INT8_WEIGHT:
        return torchao, q.Int8WeightOnlyConfig(granularity=q.PerRow(), set_inductor_config=False)
    if backend == TORCHAO_INT8_DYNAMIC:
        return torchao, q.Int8DynamicActivationInt8WeightConfig(set_inductor_config=False)
    from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig

    return torchao, PrototypeInt4WeightOnlyConfig(group_size=group_size, set_inductor_config=False)
