"""The weight format of a quantized model (`quantized_state` / `load_quantized`): one
quantized Linear <-> plain tensors, per backend, and importing torchao quietly. See
`quantize.py` for the schemes and the file layout."""

from __future__ import annotations

import contextlib
import logging
import warnings

import torch
from torch import nn

from tunelab.errors import TunelabError

FORMAT = "tunelab-quantized/1"

# backends: how a scheme runs, recorded in the meta
BF16 = "torch-bf16"
AO_DYNAMIC = "torch.ao-dynamic-int8"
TORCHAO_INT8_DYNAMIC = "torchao-int8-dynamic"
TORCHAO_INT8_WEIGHT = "torchao-int8-weight"
INT8_PACK = "torch-int8pack-cpu"  # int8 weights, bf16 activations (int8_linear.py)
TORCHAO_INT4_CPU = "torchao-int4-cpu"
INT4_N_MULTIPLE = 16  # _convert_weight_to_int4pack_for_cpu packs output rows in 16s


def _import_torchao():
    """torchao, imported without its import-time noise (CUDA-only .so files it cannot load on
    a CPU build, a pytree deprecation): nothing a user can act on."""
    loggers = [logging.getLogger(n) for n in ("torchao", "torch.utils._pytree")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        import torchao
        import torchao.quantization
    except ImportError:
        raise TunelabError(
            "this quantization needs torchao: pip install 'tunelab[compress]'"
        ) from None
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
    return torchao


@contextlib.contextmanager
def _quiet():
    """torch.ao.quantization's deprecation warnings: we chose it knowingly (module docstring)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*torch.ao.quantization is deprecated.*")
        warnings.filterwarnings("ignore", ".*quantized tensor creation functions.*")
        yield


# ---- one quantized Linear <-> plain tensors


def _kind(mod: nn.Module) -> str | None:
    """The backend a quantized Linear runs on, or None for anything else (by class name:
    asking needs no torchao import)."""
    if type(mod).__name__ == "Linear" and type(mod).__module__.startswith(
        "torch.ao.nn.quantized.dynamic"
    ):
        return AO_DYNAMIC
    if type(mod).__name__ == "Int8PackLinear":
        return INT8_PACK
    w = mod.__dict__.get("_parameters", {}).get("weight")
    cls = type(w).__name__
    if cls == "Int8Tensor":
        return TORCHAO_INT8_DYNAMIC if w.act_quant_kwargs is not None else TORCHAO_INT8_WEIGHT
    if cls == "Int4OpaqueTensor":
        return TORCHAO_INT4_CPU
    return None


def _export_linear(name: str, mod: nn.Module, backend: str) -> dict[str, torch.Tensor]:
    if backend == AO_DYNAMIC:
        with _quiet():
            w, bias = mod.weight(), mod.bias()
        if w.qscheme() != torch.per_channel_affine or w.q_per_channel_zero_points().any():
            raise ValueError(f"{name}: expected symmetric per-channel int8, got {w.qscheme()}")
        out = {
            f"{name}.weight_int8": w.int_repr(),
            f"{name}.weight_scale": w.q_per_channel_scales().to(torch.float32),
        }
    elif backend == INT8_PACK:
        scale = mod.weight_scale.float()  # model.to(bf16) made it bf16: the same values
        out = {f"{name}.weight_int8": mod.weight_int8, f"{name}.weight_scale": scale}
        bias = mod.bias
    elif backend in (TORCHAO_INT8_WEIGHT, TORCHAO_INT8_DYNAMIC):
        w, bias = mod.weight, mod.bias
        if w.zero_point is not None and w.zero_point.any():
            raise ValueError(f"{name}: expected symmetric int8 weights")
        out = {f"{name}.weight_int8": w.qdata, f"{name}.weight_scale": w.scale.reshape(-1)}
    else:
        w, bias = mod.weight, mod.bias
        scale, zero = w.scale_and_zero.unbind(-1)  # each (in/group, out)
        q = _unpack_int4_cpu(w)  # (out, in) values 0..15
        packed = (q[:, 0::2] | (q[:, 1::2] << 4)).to(torch.uint8)  # (out, in/2)
        out = {
            f"{name}.weight_int4": packed,
            f"{name}.weight_scale": scale.t(),
            f"{name}.weight_zero": zero.t(),
        }
    if bias is not None:
        out[f"{name}.bias"] = bias
    return {k: v.detach().contiguous() for k, v in out.items()}


def _unpack_int4_cpu(w) -> torch.Tensor:
    """The int4 values (out, in) of an Int4OpaqueTensor, whose packed layout depends on the
    CPU's vector width: run its own kernel on the identity with scale 1 and zero 8, so that it
    returns q exactly (integers 0..15 are exact in bf16, and the sums add only zeros). Costs
    one in x in x out bf16 matmul per Linear."""
    n, k = w.shape
    group = w.block_size[1]
    ones = torch.ones_like(w.scale_and_zero[..., 0])
    fake = torch.stack([ones, ones * 8], dim=-1)
    out = []
    for start in range(0, k, 1024):  # a slice of the identity at a time: (rows, in)
        rows = torch.arange(start, min(start + 1024, k))
        eye = torch.zeros(len(rows), k, dtype=w.scale_and_zero.dtype)
        eye[torch.arange(len(rows)), rows] = 1
        out.append(torch.ops.aten._weight_int4pack_mm_for_cpu(eye, w.qdata, group, fake)[:, :n])
    return torch.cat(out).t().round().to(torch.int32)  # (out, in)


def _import_linear(
    name: str, mod: nn.Linear | None, state: dict, backend: str, group_size: int | None
) -> nn.Module:
    """The quantized module for Linear `name` from its saved tensors: `mod` (the float Linear,
    its bias already loaded) with a quantized weight, or a new torch.ao module."""
    if backend == TORCHAO_INT4_CPU:
        _import_torchao()
        from torchao.prototype.quantization.int4 import Int4OpaqueTensor
        from torchao.quantization.utils import pack_tinygemm_scales_and_zeros

        packed = state[f"{name}.weight_int4"]
        q = torch.stack([packed & 0xF, packed >> 4], dim=-1).reshape(packed.shape[0], -1)
        scale, zero = state[f"{name}.weight_scale"], state[f"{name}.weight_zero"]
        w = Int4OpaqueTensor(
            torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), 1),
            pack_tinygemm_scales_and_zeros(scale, zero, scale.dtype),
            [1, group_size],
            q.shape,
        )
        mod.weight = nn.Parameter(w, requires_grad=False)
        return mod
    q, scale = state[f"{name}.weight_int8"], state[f"{name}.weight_scale"]
    if backend == AO_DYNAMIC:
        from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

        bias = state.get(f"{name}.bias")
        with _quiet():
            zeros = torch.zeros(q.shape[0], dtype=torch.long)
            qw = torch._make_per_channel_quantized_tensor(q, scale.double(), zeros, 0)
            qmod = DynamicLinear(q.shape[1], q.shape[0], bias_=bias is not None, dtype=torch.qint8)
            qmod.set_weight_bias(qw, bias)
        return qmod
    if backend == INT8_PACK:  # a file's fp32 scale is rounded to bf16 (exact when made so)
        from tunelab.compress.int8_linear import K_MULTIPLE, Int8PackLinear

        bias = state.get(f"{name}.bias")
        if q.shape[1] % K_MULTIPLE:  # made elsewhere; the CPU kernel cannot take this width
            mod.weight = nn.Parameter((q.float() * scale.float()[:, None]).to(mod.weight.dtype))
            return mod
        return Int8PackLinear(q, scale.to(torch.bfloat16).float(), bias)
    _import_torchao()
    from torchao.quantization import PerRow
    from torchao.quantization.quantize_.workflows import Int8Tensor
    from torchao.quantization.quantize_.workflows.int8.int8_tensor import (
        QuantizeTensorToInt8Kwargs,
    )

    act = (
        QuantizeTensorToInt8Kwargs(granularity=PerRow()) if backend != TORCHAO_INT8_WEIGHT else None
    )
    device = mod.weight.device
    scale = scale.to(device, torch.float32).reshape(-1, 1)
    w = Int8Tensor(
        q.to(device),
        scale,
        [1, q.shape[1]],
        mod.weight.dtype,
        zero_point=torch.zeros_like(scale, dtype=torch.int8),
        act_quant_kwargs=act,
    )
    mod.weight = nn.Parameter(w, requires_grad=False)
    return mod


# ---- module tree and state dict plumbing


def _owner(key: str, names) -> str | None:
    """The quantized module (one of `names`) that state-dict `key` belongs to, if any."""
    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        if ".".join(parts[:i]) in names:
            return ".".join(parts[:i])
    return None


def _dedupe(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Drop the second name of each tensor stored twice (tied weights: safetensors refuses
    shared memory), returning {dropped: kept}; other views of shared memory are copied."""
    seen: dict[tuple, str] = {}
    storages: set[int] = set()
    out, aliases = {}, {}
    for key, t in state.items():
        if t.numel() == 0:
            out[key] = t
            continue
        ptr = t.untyped_storage().data_ptr()
        ident = (ptr, t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if ident in seen:
            aliases[key] = seen[ident]
            continue
        seen[ident] = key
        out[key] = t.clone() if ptr in storages else t
        storages.add(ptr)
    return out, aliases


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)
