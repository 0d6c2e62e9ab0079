"""GGUF export for llama.cpp: Llama-family causal LMs, f32 / f16 / q8_0.

`gguf.GGUFWriter` and `gguf.quants.quantize` write the file. What is written here is the glue
that library leaves to its callers: the llama.cpp conventions for metadata, tensor names, q/k
rope permutation and the byte-level BPE vocabulary. Like the ONNX export, the file is written
to a hidden folder beside its destination and renamed into place (`onnx_export._commit`).

gguf is optional: imported inside `to_gguf`, with a one-line error naming it when missing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from torch import nn

from tunelab.compress.onnx_export import _commit, _merged, _partial_dir
from tunelab.errors import TunelabError

GGUF_QTYPES = ("f32", "f16", "q8_0")


def _gguf():
    try:
        import gguf
    except ImportError:
        raise TunelabError("GGUF export needs the gguf package: pip install gguf") from None
    return gguf


def _check_llama(model: nn.Module) -> None:
    config = model.config
    kind = getattr(config, "model_type", "?")
    if kind != "llama" or not type(model).__name__.endswith("ForCausalLM"):
        raise TunelabError(
            f"GGUF export takes a Llama-family causal LM (SmolLM2, TinyLlama, Llama 3 ...), not "
            f"{type(model).__name__} ({kind}): use --methods onnx or a quantize method instead"
        )
    rope = getattr(config, "rope_parameters", None) or {}
    odd = [
        what
        for what, bad in (
            ("attention biases", getattr(config, "attention_bias", False)),
            ("MLP biases", getattr(config, "mlp_bias", False)),
            (f"activation {config.hidden_act}", config.hidden_act != "silu"),
            (
                f"rope scaling {rope.get('rope_type')}",
                rope.get("rope_type", "default") != "default",
            ),
        )
        if bad
    ]
    if odd:
        raise TunelabError(
            f"GGUF export writes plain Llama blocks; this model has {', '.join(odd)}, which the "
            "GGUF llama layout (as transformers reads it back) does not carry"
        )


def _rope_permute(w, n_head: int):
    """llama.cpp's q/k row order for its rope kernel (transformers' GGUF reader undoes it).

    Per head, the (even, odd) interleaved halves of convert_hf_to_gguf.py's `permute`.
    """
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def _tensor(gguf, data, qtype):
    """(array, raw_dtype) for GGUFWriter.add_tensor: 1-D norms stay f32, as llama.cpp keeps them."""
    kind = gguf.GGMLQuantizationType
    if data.ndim == 1 or qtype == kind.F32:
        return data.astype("float32"), None
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if qtype not in (kind.F16, kind.F32) and data.shape[-1] % block:
        qtype = kind.F16  # rows not a whole number of blocks: llama.cpp falls back the same way
    packed = gguf.quants.quantize(data, qtype)
    return packed, None if qtype == kind.F16 else qtype


def to_gguf(model: nn.Module, tokenizer, path: Path, qtype: str = "f16") -> Path:
    """Write a Llama-family causal LM (adapters merged) as one GGUF file for llama.cpp.

    `qtype`: f16 or q8_0 for the matrices (f32 too); norms stay f32. Metadata under `llama.*`,
    tensors under llama.cpp's names (via gguf's own name map) with q/k permuted for its rope,
    the output matrix omitted when tied to the embedding. The tokenizer (byte-level BPE only:
    GPT-2 / SmolLM / Llama-3 style) goes in as `tokenizer.ggml.*`; with `tokenizer=None` the
    file holds weights only (transformers loads it; llama.cpp needs a vocabulary).
    """
    gguf = _gguf()
    if qtype not in GGUF_QTYPES:
        raise TunelabError(f"GGUF type {qtype!r} is not supported: pick one of {GGUF_QTYPES}")
    path = Path(path)
    model = _merged(model)
    _check_llama(model)
    config = model.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    layers = config.num_hidden_layers
    state = model.state_dict()
    embed = state["model.embed_tokens.weight"]
    vocab = embed.shape[0]
    tied = "lm_head.weight" not in state or state["lm_head.weight"].data_ptr() == embed.data_ptr()
    tied = tied or bool(getattr(config, "tie_word_embeddings", False))

    kind = gguf.GGMLQuantizationType
    wanted = {"f32": kind.F32, "f16": kind.F16, "q8_0": kind.Q8_0}[qtype]
    file_type = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[qtype]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, layers)
    tmp = _partial_dir(path)
    writer = gguf.GGUFWriter(str(tmp / path.name), "llama")
    try:
        writer.add_type("model")
        writer.add_name(path.stem)
        writer.add_context_length(config.max_position_embeddings)
        writer.add_embedding_length(config.hidden_size)
        writer.add_block_count(layers)
        writer.add_feed_forward_length(config.intermediate_size)
        writer.add_head_count(heads)
        writer.add_head_count_kv(kv_heads)
        writer.add_rope_dimension_count(head_dim)
        writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
        writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
        writer.add_vocab_size(vocab)
        if head_dim != config.hidden_size // heads:
            writer.add_key_length(head_dim)
            writer.add_value_length(head_dim)
        writer.add_file_type(int(file_type))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        if tokenizer is not None:
            _write_tokenizer(gguf, writer, tokenizer, config, vocab)

        for hf_name, tensor in state.items():
            if hf_name == "lm_head.weight" and tied:
                continue
            base, _, suffix = hf_name.rpartition(".")
            gguf_name = names.get_name(base)
            if gguf_name is None or not tensor.is_floating_point():
                raise TunelabError(
                    f"GGUF export cannot place tensor {hf_name} ({tensor.dtype}): export from "
                    "an unquantized, unpruned Llama run"
                )
            data = tensor.detach().to("cpu", torch.float32).numpy()
            if gguf_name.endswith(".attn_q"):
                data = _rope_permute(data, heads)
            elif gguf_name.endswith(".attn_k"):
                data = _rope_permute(data, kv_heads)
            packed, raw = _tensor(gguf, data, wanted)
            writer.add_tensor(f"{gguf_name}.{suffix}", packed, raw_dtype=raw)

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return _commit(tmp, path)
    finally:
        writer.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _pre_tokenizer_name(spec: dict) -> str | None:
    """llama.cpp's `tokenizer.ggml.pre` for a byte-level pre-tokenizer, None if not byte-level."""
    pre = spec.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel":
        return "gpt-2" if pre.get("use_regex", True) else None
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else []
    if len(steps) == 2 and steps[0].get("type") == "Split" and steps[1].get("type") == "ByteLevel":
        pattern = (steps[0].get("pattern") or {}).get("Regex")
        try:  # the split patterns transformers' GGUF reader knows, by llama.cpp's names
            from transformers.integrations.gguf.gguf_tokenizer_mapping import (
                GGUF_PRE_TOKENIZER_SPLITS,
            )
        except ImportError:
            return None
        return next((n for n, p in GGUF_PRE_TOKENIZER_SPLITS.items() if p == pattern), None)
    return None


def _write_tokenizer(gguf, writer, tokenizer, config, vocab_size: int) -> None:
    """Byte-level BPE as llama.cpp's "gpt2" vocabulary: tokens by id, types, merges, special ids."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = json.loads(backend.to_str()) if backend is not None else {}
    model = spec.get("model", {})
    pre = _pre_tokenizer_name(spec) if model.get("type") == "BPE" else None
    if pre is None:
        raise TunelabError(
            "GGUF export writes byte-level BPE vocabularies (GPT-2 / SmolLM / Llama-3 style); "
            f"this tokenizer is {model.get('type', type(tokenizer).__name__)} with pre-tokenizer "
            f"{(spec.get('pre_tokenizer') or {}).get('type')}: pass tokenizer=None for a "
            "weights-only file"
        )
    tokens: dict[int, str] = {i: t for t, i in model["vocab"].items()}
    types = {i: gguf.TokenType.NORMAL for i in tokens}
    for added in spec.get("added_tokens", []):
        tokens[added["id"]] = added["content"]
        special = added.get("special", False)
        types[added["id"]] = gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED
    if max(tokens) >= vocab_size:
        raise TunelabError(
            f"the tokenizer has ids up to {max(tokens)} but the model only {vocab_size} "
            "embeddings: resize the model's embeddings to the tokenizer first"
        )
    # llama.cpp wants one entry per embedding row: rows no token uses become unused [PADn]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list([tokens.get(i, f"[PAD{i}]") for i in range(vocab_size)])
    writer.add_token_types([int(types.get(i, gguf.TokenType.UNUSED)) for i in range(vocab_size)])
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_token_merges(merges)

    def token_id(name: str) -> int | None:
        value = getattr(tokenizer, f"{name}_token_id", None)
        return value if isinstance(value, int) else getattr(config, f"{name}_token_id", None)

    for name, add in (
        ("bos", writer.add_bos_token_id),
        ("eos", writer.add_eos_token_id),
        ("pad", writer.add_pad_token_id),
        ("unk", writer.add_unk_token_id),
    ):
        value = token_id(name)
        if isinstance(value, int) and 0 <= value < vocab_size:
            add(value)
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    bos, eos = token_id("bos"), token_id("eos")
    writer.add_add_bos_token(len(full) > len(plain) and full[0] == bos)
    writer.add_add_eos_token(len(full) > len(plain) and full[-1] == eos)
    pre_spec = spec.get("pre_tokenizer") or {}
    steps = pre_spec.get("pretokenizers", [pre_spec])
    writer.add_add_space_prefix(any(s.get("add_prefix_space", False) for s in steps))
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str):
        writer.add_chat_template(template)
