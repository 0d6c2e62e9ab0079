"""Where a training run stands: the counters the loop advances and a checkpoint stores.

`LoopState` travels between the loop and `checkpoint/state.json`. Its JSON form keeps the
key names that checkpoints have always had, so a run checkpointed by an earlier tunelab (when
this was a plain dict) still resumes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from tunelab.errors import TunelabError

_REQUIRED = ("step", "epoch", "batch")
"""Keys without which a state.json is not a checkpoint of the loop (the rest have defaults:
`stopped_early`, for one, was written only once a run had stopped early)."""


@dataclass
class LoopState:
    """Counters of one training run; a fresh run starts from `LoopState()`."""

    step: int = 0
    """Optimizer steps taken."""
    epoch: int = 0
    """The epoch under way (0-based)."""
    batch: int = 0
    """Batches of that epoch already trained on: a resumed run skips them."""
    seen: int = 0
    """Training examples passed through the model, over all epochs."""
    seconds: float = 0.0
    """Training time up to the last checkpoint (a resumed run adds its own to it)."""
    best: float | None = None
    """The best value of the validation metric so far (None before the first evaluation)."""
    best_step: int | None = None
    """The step at which `best` was measured."""
    bad_evals: int = 0
    """Evaluations in a row without improvement (early stopping compares it to patience)."""
    stopped_early: bool = False
    """Early stopping ended the run: resuming it trains no more."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """One record per evaluation: {"step", "epoch", "eval": {metric: value}}."""

    def improves(self, value: float, higher_is_better: bool) -> bool:
        """Whether `value` of the validation metric beats the best so far."""
        if self.best is None:
            return True
        return value > self.best if higher_is_better else value < self.best

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (a copy: later training does not change it)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoopState:
        """The state `to_dict` (or an earlier tunelab's checkpoint) wrote; unknown keys are
        ignored."""
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise TunelabError(
                f"the checkpoint's state.json lacks {', '.join(missing)}: it was not written "
                "by tunelab's training loop; delete the checkpoint folder or run without --resume"
            )
        known = {f.name for f in fields(cls)}
        state = cls(**{k: v for k, v in data.items() if k in known})
        state.history = list(state.history)
        return state
