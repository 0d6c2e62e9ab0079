"""Which precision and device an inference verb runs a model in: `--dtype` and `--device`.

    dtype   auto | fp32 | bf16 | fp16 | int8 | int4
    device  auto | cpu | cuda | cuda:N | mps

`auto` dtype is bf16 where the device computes bf16 natively (a CPU with AVX512-BF16 or AMX,
a CUDA GPU that supports it), else fp32; `auto` device is the first CUDA GPU when there is one,
else the CPU. fp32 is the exact mode: the same tokens as transformers' `generate()`. What each
mode costs in quality and gains in speed is measured in docs/generation.md.

`check` needs no torch, so a typo is answered before any model loads; `resolve` and `torch_dtype`
import torch. Applying a dtype to a model (quantized ones included) is `compress.precision`.
"""

from __future__ import annotations

import re

from tunelab.errors import TunelabError

DTYPES = ("auto", "fp32", "bf16", "fp16", "int8", "int4")
DTYPE_HELP = (
    "auto (bf16 where the hardware has native bf16, else fp32), fp32 (exact), bf16, fp16, "
    "int8 (int8 weights), int4 (int4 weights, CPU)"
)
DEVICE_HELP = "auto (a CUDA GPU if there is one, else cpu), cpu, cuda, cuda:N or mps"
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}


def check(dtype: str, device: str) -> tuple[str, str]:
    """(dtype, device) spelled as tunelab spells them, or a one-line error naming the flag."""
    d = ALIASES.get(str(dtype).lower(), str(dtype).lower())
    if d not in DTYPES:
        raise TunelabError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}: {DTYPE_HELP}")
    dev = str(device).lower()
    if not _DEVICE.match(dev):
        raise TunelabError(f"--device {device!r} is not a device: use {DEVICE_HELP}")
    return d, dev


def resolve_device(device: str):
    """The torch.device `device` names, checked to exist here."""
    import torch

    _, dev = check("fp32", device)
    if dev == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TunelabError(
                f"--device {device}: this machine has no CUDA GPU (or this torch has no CUDA):"
                " use --device cpu or auto"
            )
        index = int(dev.split(":")[1]) if ":" in dev else 0
        if index >= torch.cuda.device_count():
            raise TunelabError(
                f"--device {device}: there are {torch.cuda.device_count()} CUDA devices:"
                " pick one of cuda:0 to cuda:N-1"
            )
    if dev == "mps" and not torch.backends.mps.is_available():
        raise TunelabError("--device mps: MPS is not available here: use --device cpu or auto")
    return torch.device(dev)


def native_bf16(device) -> bool:
    """Whether `device` (a torch.device) computes bf16 natively (not emulated)."""
    import torch

    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return False


def resolve(dtype: str, device: str):
    """(dtype name other than auto, torch.device) for `--dtype` and `--device`."""
    d, _ = check(dtype, device)
    dev = resolve_device(device)
    if d == "auto":
        d = "bf16" if native_bf16(dev) else "fp32"
    return d, dev


def torch_dtype(dtype: str):
    """The torch dtype a model's float weights are loaded in for `dtype` (resolved): the
    quantized dtypes start from fp32 weights, the scales are computed from them."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype, torch.float32)
