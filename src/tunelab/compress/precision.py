"""Putting a loaded model on the device and in the precision `--dtype` names (see
`models.precision`), for inference.

- fp32: plain float32; classifiers also skip bf16 autocast (the exact mode).
- bf16 / fp16: every weight in that dtype; on a CPU with native bf16, bf16 Linears run with
  weights packed once for oneDNN (`models.packed`: 1.4-1.5x plain bf16 in a whole decode step,
  the same outputs). Projections that read the same input (q/k/v, gate/up) then run as one
  product each (`compress.fuse`), in bf16 and int8.
- int8: for language models, int8 weights and bf16 everything else (`quantize` "int8-weight":
  decoding at small batch reads every weight once per token, so bytes are the time, and the
  activations of small LMs have outliers that per-call int8 activations ruin: SmolLM2's title
  perplexity 61.7 -> 270 with int8-dynamic, docs/compression.md). For encoders (classifiers,
  embeddings), int8 weights and int8 activations ("int8-dynamic": a batch of long inputs is
  compute-bound, and MiniLM lost nothing, 2.8x fp32).
- int4: int4 weights (group 32) with bf16 activations, CPU only ("int4-weight").

The model records what it runs in as `model.tunelab_precision` ({"dtype", "device"}), which
the server reports and `tasks.classification.autocast_for` reads.
"""

from __future__ import annotations

from torch import nn

from tunelab.compress.fuse import fuse_projections
from tunelab.errors import TunelabError
from tunelab.models.packed import can_pack, pack_linears

PRECISION_ATTR = "tunelab_precision"


def apply_precision(model: nn.Module, dtype: str, device, kind: str = "lm") -> nn.Module:
    """`model` (a float model, modified in place) on `device` (a torch.device) in `dtype` (a
    resolved name: fp32, bf16, fp16, int8, int4); `kind` is "lm" or "encoder".

    Raises:
        TunelabError: int4 off the CPU, or a model with nothing the dtype can quantize.
    """
    import torch

    from tunelab.compress import quantize

    model.eval()
    if dtype == "int4" and device.type != "cpu":
        raise TunelabError(
            f"--dtype int4 runs on CPU only in this version (--device is {device}):"
            " use --dtype int8 or bf16 on the GPU"
        )
    if dtype == "int8" and device.type != "cpu":
        model.to(device)  # torchao's kernels quantize on the device
    try:
        if dtype == "int8":
            scheme = "int8-weight" if kind == "lm" else "int8-dynamic"
            model = quantize.quantize(model.float(), scheme)
        elif dtype == "int4":
            model = quantize.quantize(model.float(), "int4-weight")
        else:
            model.to({"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype, torch.float32))
    except TunelabError as exc:
        raise TunelabError(f"--dtype {dtype}: {exc}".replace("--methods", "--dtype")) from None
    model.to(device)
    if dtype in ("bf16", "int8", "int4") and can_pack(device):
        pack_linears(model)  # bf16 Linears (int8/int4: those the kernels could not take)
    if dtype in ("bf16", "int8", "int4") and device.type == "cpu":
        fuse_projections(model)  # q/k/v and gate/up as one product each (int8 or packed)
    setattr(model, PRECISION_ATTR, {"dtype": dtype, "device": str(device)})
    return model


def precision_of(model) -> dict:
    """What `model` runs in: what `apply_precision` recorded, else read from its weights."""
    recorded = getattr(model, PRECISION_ATTR, None)
    if recorded:
        return dict(recorded)
    p = next(model.parameters(), None) if isinstance(model, nn.Module) else None
    if p is None:
        return {"dtype": "unknown", "device": "cpu"}
    names = {"torch.float32": "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16"}
    return {"dtype": names.get(str(p.dtype), str(p.dtype)), "device": str(p.device)}
