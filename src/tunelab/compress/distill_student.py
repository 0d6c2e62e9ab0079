"""The student of knowledge distillation: `make_student` and `student_layers`.

`make_student` builds the student the DistilBERT way: the teacher's class and config with
fewer blocks in each stack, initialised by copying the kept blocks, the embeddings, the final
norms and the task head. Blocks are renumbered so generation with a KV cache works; per-block
config lists are sliced with them. Both are re-exported by `distill`, which trains the student.
"""

from __future__ import annotations

import copy
import math

from torch import nn

from tunelab.errors import TunelabError
from tunelab.strategies.layers import block_groups, layer_groups

PER_LAYER_KEYS = ("layer_types", "kv_sharing_modes")
"""Config lists with one entry per block (attention kind per layer, KV cache sharing): sliced
with the blocks, so the cache a generation builds from the config matches the student."""


def student_layers(depth: int, layers: int | str = "half") -> list[int]:
    """Teacher block indices a student keeps: `half` = 0, 2, 4, ...; N = N blocks spread
    evenly from the first to the last (N=1: the last one)."""
    if isinstance(layers, str) and layers.strip() == "half":
        kept = list(range(0, depth, 2))
    else:
        try:
            n = int(layers)
        except ValueError:
            raise TunelabError(
                f"distill layers take half or a number of blocks (distill-half, distill-4), "
                f"not {layers!r}"
            ) from None
        if n < 1:
            raise TunelabError(f"a student needs at least 1 block, not {n} (distill-N)")
        if n == 1:
            kept = [depth - 1]
        else:  # round half up, so the spread is symmetric and ends on the last block
            kept = sorted({math.floor(i * (depth - 1) / (n - 1) + 0.5) for i in range(n)})
    if len(kept) >= depth:
        raise TunelabError(
            f"the teacher has {depth} block(s) in a stack, so a {layers}-block student is no "
            "smaller: use distill-N with N below that"
        )
    return kept


def _stack_path(model: nn.Module, names: tuple[str, ...], index: int) -> str:
    """The path of the ModuleList that holds block `index`, found from its parameter names."""
    for name in names:
        parts = name.split(".")
        for k, part in enumerate(parts[:-1]):
            if part == str(index) and isinstance(
                model.get_submodule(".".join(parts[:k])), nn.ModuleList
            ):
                return ".".join(parts[:k])
    raise TunelabError(f"cannot find the blocks of {type(model).__name__} to distill")


def _stacks(model: nn.Module) -> list[tuple[str, str]]:
    """(stack label, ModuleList path) of each stack of blocks, bottom to top."""
    found: dict[str, str] = {}
    for group in block_groups(layer_groups(model)):
        if group.stack not in found:
            index = int(group.name.rsplit(".", 1)[1])
            found[group.stack] = _stack_path(model, group.params, index)
    return list(found.items())


def _set_depth(config, label: str, two_stacks: bool, depth: int, kept: list[int]) -> None:
    """Write a stack's new depth (and its per-block lists) into `config`."""
    if not two_stacks:
        keys = ("num_hidden_layers",)
    elif label == "encoder":
        keys = ("encoder_layers", "num_layers")
    else:
        keys = ("decoder_layers", "num_decoder_layers")
    key = next((k for k in keys if isinstance(getattr(config, k, None), int)), None)
    if key is None:
        raise TunelabError(
            f"cannot tell which {type(config).__name__} field counts its {label} blocks, so "
            "no smaller student can be built: pick another --methods entry"
        )
    setattr(config, key, len(kept))
    if not two_stacks:
        for per_layer in PER_LAYER_KEYS:
            values = getattr(config, per_layer, None)
            if isinstance(values, list) and len(values) == depth:
                setattr(config, per_layer, [values[i] for i in kept])


def make_student(teacher: nn.Module, layers: int | str = "half") -> nn.Module:
    """A new model of the teacher's class and config with fewer blocks in each stack
    (encoder and decoder of a T5 each), initialised from the teacher: the kept blocks, the
    embeddings, the final norms and the task head are copied (the DistilBERT recipe).

    Blocks are renumbered 0..N-1 (Llama's `layer_idx`, and `layer_types` is sliced), so
    generation with a KV cache works. A weight the kept blocks lack because only block 0 has
    it (T5's relative position bias) comes from the teacher's block 0.

    Raises:
        TunelabError: a model without a transformers config or findable blocks, or a
            `layers` value that leaves no fewer blocks.
    """
    config = getattr(teacher, "config", None)
    cls = type(teacher).__name__
    if config is None or not hasattr(config, "to_dict"):
        raise TunelabError(f"cannot distill {cls}: it is not a transformers model")
    if all(hasattr(getattr(config, k, None), "to_dict") for k in ("encoder", "decoder")):
        return _composite_student(teacher, layers)
    try:
        stacks = _stacks(teacher)
    except TunelabError:
        raise TunelabError(
            f"cannot find the transformer blocks of {cls}, so no smaller student can be "
            "built: pick another --methods entry (e.g. prune-30)"
        ) from None
    new_config = copy.deepcopy(config)
    kept: dict[str, list[int]] = {}
    for label, path in stacks:
        depth = len(teacher.get_submodule(path))
        kept[path] = student_layers(depth, layers)
        _set_depth(new_config, label, len(stacks) == 2, depth, kept[path])
    first = next(teacher.parameters())
    student = type(teacher)(new_config).to(device=first.device, dtype=first.dtype)
    for path, idx in kept.items():
        if len(student.get_submodule(path)) != len(idx):
            raise TunelabError(f"cannot build a smaller {cls}: its config ignores the new depth")

    source = teacher.state_dict()
    state = {}
    for name in student.state_dict():
        src = name
        for path, idx in kept.items():
            if name.startswith(f"{path}."):
                i, rest = name[len(path) + 1 :].split(".", 1)
                src = f"{path}.{idx[int(i)]}.{rest}"
                if src not in source:  # a weight only block 0 has (T5's position bias)
                    src = f"{path}.0.{rest}"
        if src not in source:
            raise TunelabError(f"cannot initialise the student of {cls}: no teacher {src}")
        state[name] = source[src]
    student.load_state_dict(state)
    if getattr(teacher, "generation_config", None) is not None:
        student.generation_config = copy.deepcopy(teacher.generation_config)
    return student.train(teacher.training)


def _composite_student(teacher: nn.Module, layers: int | str) -> nn.Module:
    """An EncoderDecoderModel (bert2bert) with its encoder and its decoder model each made
    smaller, joined again; what sits between them (a width projection) is copied."""
    encoder = make_student(teacher.encoder, layers)
    decoder = make_student(teacher.decoder, layers)
    config = copy.deepcopy(teacher.config)
    config.encoder, config.decoder = encoder.config, decoder.config
    student = type(teacher)(config=config, encoder=encoder, decoder=decoder)
    rest = {
        k: v for k, v in teacher.state_dict().items() if not k.startswith(("encoder.", "decoder."))
    }
    student.load_state_dict(rest, strict=False)
    if getattr(teacher, "generation_config", None) is not None:
        student.generation_config = copy.deepcopy(teacher.generation_config)
    return student.train(teacher.training)
