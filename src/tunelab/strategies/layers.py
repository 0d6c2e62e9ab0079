"""A transformer split into layer groups, bottom to top: what freeze and gradual work with.

Not a strategy (it defines no `STRATEGY`): `layer_groups(model)` finds the blocks of any of
the three families generically, as the outermost `nn.ModuleList`s of same-class modules whose
length is one of the config's layer counts (num_hidden_layers, num_layers, ...), with no
per-architecture name table, and puts every other parameter before, between or after them.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from tunelab.errors import TunelabError
from tunelab.models.families import detect_family, head_module_names

LAYER_COUNT_KEYS = (
    "num_hidden_layers",
    "num_layers",
    "num_decoder_layers",
    "encoder_layers",
    "decoder_layers",
    "n_layer",
    "n_layers",
)
"""Config attributes that may hold the length of a stack of blocks."""


@dataclass(frozen=True)
class LayerGroup:
    """Parameters that train (or stay frozen) together."""

    name: str
    """`embeddings`, `STACK.I` for block I (from 0 at the bottom) of stack `encoder` or
    `decoder`, or `head`."""
    params: tuple[str, ...]
    """Parameter names as `model.named_parameters()` gives them (a tied weight once)."""
    kind: str
    """`embeddings`, `block` or `head`."""
    stack: str | None = None
    """`encoder` or `decoder` for a block, else None."""


def _layer_counts(config) -> set[int]:
    counts = set()
    for key in LAYER_COUNT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            counts.add(value)
    return counts


def _find_stacks(model: nn.Module) -> list[str]:
    """Paths of the outermost ModuleLists of same-class blocks with a config's layer count."""
    counts = _layer_counts(getattr(model, "config", None))
    found: list[str] = []
    # named_modules is pre-order: a list nested in a stack comes after the stack itself
    for path, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) not in counts:
            continue
        if len({type(block) for block in module}) != 1:
            continue
        if next(module.parameters(), None) is None:
            continue
        if any(path.startswith(f"{outer}.") for outer in found):
            continue
        found.append(path)
    return found


def _single_stack_label(config) -> str:
    try:
        family = detect_family(config)
    except AttributeError:  # a config without the attributes detect_family reads
        return "layer"
    return "encoder" if family == "encoder" else "decoder"


def _stack_labels(paths: list[str], config) -> list[str]:
    """`encoder` / `decoder` for each stack: from its path, else from the family or order."""
    labels = []
    for i, path in enumerate(paths):
        parts = path.split(".")
        if "encoder" in parts and "decoder" not in parts:
            labels.append("encoder")
        elif "decoder" in parts and "encoder" not in parts:
            labels.append("decoder")
        elif len(paths) == 1:
            labels.append(_single_stack_label(config))
        else:
            labels.append(("encoder", "decoder")[i] if i < 2 else f"stack{i}")
    return labels


def _embedding_like(
    name: str, param_id: int, embedding_ids: set[int], stack_parts: set[str]
) -> bool:
    """An nn.Embedding's weight, or a parameter of a module whose path names an embedding
    (BERT's embeddings.LayerNorm, BART's layernorm_embedding), not counting the names of
    the modules that hold the stacks (a base model attribute called `embedder`)."""
    modules = [part for part in name.split(".")[:-1] if part not in stack_parts]
    return param_id in embedding_ids or any("emb" in part.lower() for part in modules)


def _root(path: str) -> str:
    """The prefix of the names inside the module that holds the stack at `path`."""
    return path.rsplit(".", 1)[0] + "." if "." in path else ""


def layer_groups(model: nn.Module) -> list[LayerGroup]:
    """The model's parameters as layer groups ordered bottom -> top; each in exactly one.

    - `embeddings`: what sits before the first block (token, position and token-type
      embeddings, the embedding norm), and, wherever they are registered, any
      `nn.Embedding` outside a block and any parameter of a module whose path names an
      embedding (a decoder's own position embeddings, BART's layernorm_embedding);
    - one group per block, encoder blocks before decoder blocks; the final norm of a stack
      below another (T5's encoder final norm) joins that stack's top block, and any other
      parameter registered between two stacks joins the block just before it;
    - `head`: the classification head, the final norm of the top stack (wherever it is
      registered) and whatever comes after the last block (a BERT pooler).

    A tied weight (an embedding shared by encoder and decoder) is one parameter, in one group.

    Raises:
        TunelabError: the blocks cannot be found (no ModuleList of the config's layer count).
    """
    cls = type(model).__name__
    config = getattr(model, "config", None)
    paths = _find_stacks(model) if config is not None else []
    if not paths:
        raise TunelabError(
            f"cannot find the transformer blocks of {cls} (no nn.ModuleList of "
            "num_hidden_layers identical layers): use another strategy, e.g. full or lora"
        )
    named = list(model.named_parameters())
    pos = {n: i for i, (n, _) in enumerate(named)}

    block_of: dict[str, tuple[int, int]] = {}
    for name, _ in named:
        for s, path in enumerate(paths):
            if name.startswith(f"{path}."):
                block_of[name] = (s, int(name[len(path) + 1 :].split(".")[0]))
                break
    # stacks in the order their parameters are registered (encoder before decoder)
    first_pos = {
        s: min(pos[n] for n, (t, _) in block_of.items() if t == s) for s in range(len(paths))
    }
    order = sorted(range(len(paths)), key=first_pos.__getitem__)
    labels = _stack_labels([paths[s] for s in order], config)
    if len(set(labels)) != len(labels):
        raise TunelabError(f"cannot tell the stacks of blocks of {cls} apart: use another strategy")
    label = {s: labels[k] for k, s in enumerate(order)}

    heads = head_module_names(model)
    embedding_ids = {
        id(p)
        for m in model.modules()
        if isinstance(m, nn.Embedding)
        for p in m.parameters(recurse=False)
    }
    norm_ids = {
        id(p)
        for m in model.modules()
        if "Norm" in type(m).__name__
        for p in m.parameters(recurse=False)
    }
    block_positions = sorted((pos[n], key) for n, key in block_of.items())
    first_block, last_block = block_positions[0][0], block_positions[-1][0]
    stack_parts = {part for path in paths for part in path.split(".")}
    top_block = {s: max(i for t, i in block_of.values() if t == s) for s in order}

    def after_stack(name: str) -> tuple[int, int] | None:
        """The top block of the stack whose root module holds `name` (a final norm), or None
        (the head) when that is the last stack or no stack's root holds it."""
        roots = [(len(paths[s]), s) for s in order if name.startswith(_root(paths[s]))]
        if not roots:
            return None
        s = max(roots)[1]
        return None if s == order[-1] else (s, top_block[s])

    embeddings: list[str] = []
    head: list[str] = []
    blocks: dict[tuple[int, int], list[str]] = {}
    for name, p in named:
        if name in block_of:
            key = block_of[name]
        elif name.split(".")[0] in heads:
            key = None
        elif _embedding_like(name, id(p), embedding_ids, stack_parts):
            key = "embeddings"
        elif id(p) in norm_ids:
            # a norm outside the blocks that is not the embeddings' is a stack's final norm,
            # wherever it is registered (OPT registers its final norm before its layers)
            key = after_stack(name)
        elif pos[name] < first_block:
            key = "embeddings"
        elif pos[name] > last_block:
            key = None
        else:  # between two stacks: with the block registered just before it
            key = max((at, k) for at, k in block_positions if at < pos[name])[1]
        if key is None:
            head.append(name)
        elif key == "embeddings":
            embeddings.append(name)
        else:
            blocks.setdefault(key, []).append(name)

    groups = [LayerGroup("embeddings", tuple(embeddings), "embeddings")] if embeddings else []
    for s in order:
        n_blocks = 1 + max(i for t, i in blocks if t == s)
        groups += [
            LayerGroup(f"{label[s]}.{i}", tuple(blocks[(s, i)]), "block", label[s])
            for i in range(n_blocks)
            if (s, i) in blocks
        ]
    if head:
        groups.append(LayerGroup("head", tuple(head), "head"))
    return groups


def block_groups(groups: list[LayerGroup]) -> list[LayerGroup]:
    """The block groups of `groups`, bottom -> top."""
    return [g for g in groups if g.kind == "block"]
