"""Export: ONNX run by onnxruntime (classifiers and encoders), GGUF for llama.cpp (Llama decoders).

What lives where:
  - `onnx_export`: `to_onnx`, `check_onnx`, `quantize_onnx_int8`, `onnx_info` (writing an ONNX
    file, checking it against the torch model, int8 quantization, reading its metadata), and
    the hidden-folder-then-rename writing both formats use;
  - `onnx_run`: `OnnxClassifier` (an onnxruntime session with a transformers classifier's
    calling convention) and the session helpers;
  - `gguf_export`: `to_gguf` and the llama.cpp conventions (tensor names, rope permutation,
    byte-level BPE vocabulary).

This module only re-exports those public names, so `from tunelab.compress.export import ...`
keeps working.
"""

from __future__ import annotations

from tunelab.compress.gguf_export import to_gguf
from tunelab.compress.onnx_export import check_onnx, onnx_info, quantize_onnx_int8, to_onnx
from tunelab.compress.onnx_run import OnnxClassifier

__all__ = ["OnnxClassifier", "check_onnx", "onnx_info", "quantize_onnx_int8", "to_gguf", "to_onnx"]
