"""--dtype / --device: spelled one way everywhere, resolved per machine, checked before loading."""

from __future__ import annotations

import pytest
import torch

from tunelab.errors import TunelabError
from tunelab.models.precision import check, native_bf16, resolve, torch_dtype


def test_names_and_aliases():
    assert check("AUTO", "cpu") == ("auto", "cpu")
    assert check("bfloat16", "cuda:1") == ("bf16", "cuda:1")
    assert check("float32", "auto") == ("fp32", "auto")


@pytest.mark.parametrize(
    ("dtype", "device", "flag"),
    [("int3", "cpu", "--dtype"), ("fp32", "gpu", "--device"), ("fp32", "cuda:x", "--device")],
)
def test_unknown_values_name_the_flag(dtype, device, flag):
    with pytest.raises(TunelabError, match=flag):
        check(dtype, device)


def test_auto_is_bf16_exactly_where_the_cpu_has_native_bf16():
    d, dev = resolve("auto", "cpu")
    assert dev == torch.device("cpu")
    assert d == ("bf16" if native_bf16(dev) else "fp32")
    assert resolve("int8", "cpu")[0] == "int8"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine has the device")
def test_a_missing_gpu_is_one_line_naming_the_flag():
    with pytest.raises(TunelabError, match="--device cuda: this machine has no CUDA GPU"):
        resolve("fp32", "cuda")
    assert resolve("fp32", "auto")[1] == torch.device("cpu")


def test_quantized_dtypes_start_from_fp32_weights():
    assert torch_dtype("int8") == torch_dtype("fp32") == torch.float32
    assert torch_dtype("bf16") == torch.bfloat16
