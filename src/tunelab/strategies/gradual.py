"""gradual: ULMFiT gradual unfreezing, top block down, with optional layer-wise learning rates.

At step 0 the head and the top `start_groups` blocks train; every epoch (or every `every`
optimizer steps) the next lower block joins them, and after the lowest block the embeddings.
Which groups train is a function of (step, epoch) alone, so a resumed run picks up exactly
where it was. The optimizer holds every group from the start (AdamW skips a parameter with no
gradient, so a frozen group stays bit-identical until it is unfrozen), each with its own
learning rate when `decay` > 1 (Howard & Ruder 2018, "Universal Language Model Fine-tuning").
"""

from __future__ import annotations

from torch import nn

from tunelab.errors import TunelabError
from tunelab.strategies.base import Strategy, first_doc_line
from tunelab.strategies.layers import LayerGroup, layer_groups
from tunelab.strategies.options import GradualOptions
from tunelab.training import optim


def unfreeze_every(options: GradualOptions) -> int | None:
    """Steps between two unfreezings, or None for once per epoch.

    Raises:
        TunelabError: `every` is neither `epoch` nor a positive whole number.
    """
    every = str(options.every).strip().lower()
    if every == "epoch":
        return None
    if every.isdigit() and int(every) > 0:
        return int(every)
    raise TunelabError(
        f"gradual.every must be epoch or a positive number of steps, got {options.every!r}"
    )


def unfreeze_order(model: nn.Module, options: GradualOptions) -> list[LayerGroup]:
    """The groups in the order they start training: head, blocks top-down, embeddings.

    Embeddings come last only with `options.embeddings`; otherwise they are not listed.
    """
    groups = layer_groups(model)
    head = [g for g in groups if g.kind == "head"]
    blocks = [g for g in groups if g.kind == "block"][::-1]
    embeddings = [g for g in groups if g.kind == "embeddings"] if options.embeddings else []
    return head + blocks + embeddings


def n_open(options: GradualOptions, step: int, epoch: int) -> int:
    """How many block / embedding groups train (beside the head) at (step, epoch)."""
    every = unfreeze_every(options)
    return options.start_groups + (epoch if every is None else step // every)


def _set_state(model: nn.Module, options: GradualOptions, step: int, epoch: int) -> None:
    order = unfreeze_order(model, options)
    head = [g for g in order if g.kind == "head"]
    below_head = [g for g in order if g.kind != "head"]
    due = head + below_head[: n_open(options, step, epoch)]
    open_names = {name for g in due for name in g.params}
    for name, p in model.named_parameters():
        p.requires_grad_(name in open_names)


def _check(options: GradualOptions) -> None:
    unfreeze_every(options)
    if options.start_groups < 0:
        raise TunelabError(f"gradual.start_groups must be >= 0, got {options.start_groups}")
    if not options.decay > 0:
        raise TunelabError(f"gradual.decay must be positive (e.g. 2.6), got {options.decay}")


def apply(model: nn.Module, options: GradualOptions, family: str, total_steps: int) -> nn.Module:
    """Set the step-0 state: only the head and the top `start_groups` blocks train.

    Raises:
        TunelabError: bad options, a model whose blocks cannot be found, or no head.
    """
    _check(options)
    _set_state(model, options, 0, 0)
    if not any(p.requires_grad for p in model.parameters()):
        raise TunelabError(
            f"gradual found no head on {type(model).__name__} to train first: use another "
            "strategy, e.g. freeze"
        )
    return model


def before_step(model: nn.Module, options: GradualOptions, step: int, epoch: int) -> None:
    """Unfreeze the groups due by (step, epoch); the state depends on nothing else."""
    _set_state(model, options, step, epoch)


def _no_decay_ids(model: nn.Module) -> set[int]:
    """Parameters the default AdamW split does not decay (biases, norms), whether they train
    now or not: the split of `optim.param_groups`, taken with every parameter trainable."""
    saved = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in saved:
            p.requires_grad_(True)
        groups = optim.param_groups(model, 1.0)
    finally:
        for p, was in saved:
            p.requires_grad_(was)
    return {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}


def param_groups(
    model: nn.Module, options: GradualOptions, lr: float, weight_decay: float
) -> list[dict]:
    """Two AdamW groups (decayed, not decayed) per layer group that will train during the run,
    frozen ones included, the i-th from the top (the head is 0) at lr / decay**i; each group
    carries its layer group's `name`."""
    no_decay = _no_decay_ids(model)
    params = dict(model.named_parameters())
    out = []
    order = unfreeze_order(model, options)
    below_head = [g for g in order if g.kind != "head"]
    for group in order:
        # the head is group 0; the blocks count from 1 down to the embeddings
        depth = 0 if group.kind == "head" else 1 + below_head.index(group)
        members = [params[name] for name in group.params]
        for decayed in (True, False):
            ps = [p for p in members if (id(p) not in no_decay) == decayed]
            if ps:
                out.append(
                    {
                        "params": ps,
                        "weight_decay": weight_decay if decayed else 0.0,
                        "lr": lr / options.decay**depth,
                        "name": group.name,
                    }
                )
    return out


STRATEGY = Strategy(
    "gradual",
    GradualOptions,
    apply,
    first_doc_line(__doc__),
    before_step=before_step,
    param_groups=param_groups,
)
