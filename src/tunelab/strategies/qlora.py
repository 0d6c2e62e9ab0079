"""qlora: LoRA (peft) over a frozen base whose linear weights are stored in 4-bit NF4 (torchao).

QLoRA (Dettmers et al., 2023, "QLoRA: Efficient Finetuning of Quantized LLMs"): the frozen
base's linear weights are kept as 4-bit NormalFloat with double-quantized block scales
(torchao's `NF4Tensor`, about 4.1 bits a weight instead of 32), and LoRA matrices in full
precision train beside them. The options are LoRA's (`--qlora.r`, `--qlora.alpha` ...).

How it is built: each quantized weight stays an `nn.Linear` whose `.weight` is an
`NF4Tensor`; torchao's `__torch_function__` sends `F.linear` on it to `linear_nf4`, which
dequantizes block by block in the forward and passes gradients to the input only. So peft's
own LoRA layer wraps it unchanged (peft targets `nn.Linear`), as torchtune's QLoRA does.
bitsandbytes is not used: its 4-bit layers need a CUDA build.

What stays in full precision: embeddings, norms, the new classification head (it trains) and
a BERT pooler before it, a language model's output layer (often tied to the embeddings), and
any linear weight whose size is not a multiple of the 64-value block.

The run folder holds the LoRA adapter like a `lora` run. The adapter trained against the
NF4-rounded weights, so `runs.open` rebuilds them (`quantize_base` on the freshly loaded base,
then the adapter): predict / eval / serve reproduce the trained model exactly, at the cost of
quantizing at every open (seconds to tens of seconds for a 135M model on 2 cores); over the
full-precision base the outputs would differ by that rounding (small, not zero). `--merge` is
refused: the update cannot be folded into 4-bit weights (torchao's NF4 has no in-place add),
and folding it into the full-precision base would give a model that was never tested.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tunelab.errors import TunelabError
from tunelab.strategies.base import Strategy, first_doc_line
from tunelab.strategies.lora import lora_model
from tunelab.strategies.options import LoraOptions
from tunelab.strategies.peft_common import trained_modules

BLOCK_SIZE = 64
"""Weights per NF4 block (one absmax scale each), as in the QLoRA paper."""
SCALER_BLOCK_SIZE = 256
"""Block scales per double-quantization block (the paper's 256), or the largest divisor of a
weight's block count below it: torchao needs the block count to be a multiple."""


@dataclass(frozen=True)
class QuantizedBase:
    """What `quantize_base` turned to NF4."""

    layers: int
    """Linear weights now stored in NF4."""
    dense_bytes: int
    """Their bytes before (in their original dtype)."""
    nf4_bytes: int
    """Their bytes now (packed 4-bit codes, block scales, double-quantization constants)."""


def _torchao_nf4():
    try:
        from torchao.quantization import to_nf4
        from torchao.quantization.quantize_.workflows.nf4.nf4_tensor import NF4Tensor
    except ImportError:
        raise TunelabError(
            "--strategy qlora needs torchao: pip install tunelab[compress] (or pip install torchao)"
        ) from None
    return to_nf4, NF4Tensor


def is_nf4(t: torch.Tensor) -> bool:
    """Whether `t` is a torchao NF4 tensor."""
    return type(t).__name__ == "NF4Tensor"


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor holds; a tensor subclass (NF4) counts its inner tensors."""
    if type(t) not in (torch.Tensor, nn.Parameter) and hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def _scaler_block(n_blocks: int) -> int:
    return max(d for d in range(1, min(SCALER_BLOCK_SIZE, n_blocks) + 1) if n_blocks % d == 0)


def base_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The frozen base's linear layers QLoRA quantizes: every `nn.Linear` outside the
    trained head (and pooler) and the output layer, whose weight splits into 64-value
    blocks."""
    trained = set(trained_modules(model))  # module names, matched as a part of the path
    out_layer = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    found = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or module is out_layer:
            continue
        if trained & set(name.split(".")):
            continue
        if module.weight.numel() % BLOCK_SIZE or not module.weight.is_floating_point():
            continue
        found.append((name, module))
    return found


@torch.no_grad()
def quantize_base(model: nn.Module) -> QuantizedBase:
    """Replace the weights of `base_linears(model)` by frozen NF4 tensors, in place.

    Also what rebuilds a QLoRA run's trained model exactly: quantize a freshly loaded base,
    then load the run's adapter over it (`peft.PeftModel.from_pretrained`).

    Raises:
        TunelabError: torchao is not installed, or no linear weight can be quantized.
    """
    to_nf4, _ = _torchao_nf4()
    layers, dense, packed = 0, 0, 0
    for _, module in base_linears(model):
        weight = module.weight
        if is_nf4(weight):
            continue
        n_blocks = weight.numel() // BLOCK_SIZE
        nf4 = to_nf4(weight.detach().contiguous(), BLOCK_SIZE, _scaler_block(n_blocks))
        dense += tensor_bytes(weight)
        packed += tensor_bytes(nf4)
        module.weight = nn.Parameter(nf4, requires_grad=False)
        layers += 1
    if layers == 0 and not any(is_nf4(p) for p in model.parameters()):
        raise TunelabError(
            f"{type(model).__name__} has no linear weights qlora can store in 4 bits (sizes "
            f"in multiples of {BLOCK_SIZE}): use --strategy lora"
        )
    return QuantizedBase(layers, dense, packed)


def apply(model: nn.Module, options: LoraOptions, family: str, total_steps: int) -> nn.Module:
    """Quantize the base's linear weights to NF4 (`quantize_base`), then wrap the model in
    peft LoRA exactly as the `lora` strategy does (the head trains in full)."""
    quantize_base(model)
    return lora_model(model, options, strategy="qlora")


STRATEGY = Strategy("qlora", LoraOptions, apply, first_doc_line(__doc__), can_merge=False)
