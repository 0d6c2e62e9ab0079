"""What a compression method starts from: the source run's model as one plain module, its
tokenizer and marker, and its data (the run's own splits, re-read from its config.yaml)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tunelab.errors import TunelabError
from tunelab.runs.marker import RunMarker, read_marker
from tunelab.strategies import strategy_info


@dataclass
class Source:
    """A source run, opened once per method."""

    run: Path
    marker: RunMarker
    config: dict[str, Any]
    """Its config.yaml (the finetune config it was trained with)."""
    _splits: dict[str, list] | None = field(default=None, repr=False)

    @property
    def generative(self) -> bool:
        return self.marker.generative

    def finetune_config(self):
        """The run's finetune Config, rebuilt from its config.yaml."""
        from tunelab.config.finetune import build_config
        from tunelab.config.parse import saved_overrides

        c = self.config
        extra = {"strategy": c.get("strategy", "full"), "task": c.get("task", self.marker.task)}
        return build_config(overrides={**saved_overrides(c), **extra})

    def splits(self) -> dict[str, list]:
        """train / validation / test rows of the run, split as its training split them."""
        if self._splits is None:
            from tunelab.tasks.base import get_task

            cfg = self.finetune_config()
            self._splits = get_task(self.marker.task).read_splits(
                cfg.data, cfg.train.seed, quiet=True
            )
        return self._splits

    def plain_model(self, dtype=None):
        """(model, tokenizer): the run's model as one plain transformers module (a peft adapter
        merged into its base; a strategy that adds modules of its own is refused)."""
        import torch

        from tunelab.runs.open import open_classifier, open_lm

        strategy = self.marker.strategy or "full"
        if not strategy_info(strategy).can_merge and self.marker.weights != "merged":
            raise TunelabError(
                f"{self.run} holds {self.marker.strategy} modules that do not fold into the base "
                "weights: compress a full or merged run (finetune with --merge, or strategy full)"
            )
        if self.marker.task == "classification":
            model, tok, _ = open_classifier(self.run)
        else:
            loaded, _ = open_lm(str(self.run))
            model, tok = loaded.model, loaded.tokenizer
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        model = model.float() if dtype is None else model.to(dtype)
        torch.manual_seed(0)
        return model.eval(), tok


def open_source(run: str | Path) -> Source:
    """The source run of `tunelab compress`, or a one-line error."""
    path = Path(run).expanduser()
    marker = read_marker(path)
    if marker.task == "pretrain":
        raise TunelabError(
            f"{path} is a pre-training run: fine-tune it first (tunelab finetune --model {path}), "
            "then compress the fine-tuned run"
        )
    if marker.compression is not None:
        raise TunelabError(
            f"{path} is already compressed ({marker.compression.get('method')}): compress the "
            "run it came from"
        )
    file = path / "config.yaml"
    config = yaml.safe_load(file.read_text()) if file.is_file() else {}
    return Source(path, marker, config or {})


def derived_marker(source: Source, compression: dict[str, Any], weights: str) -> RunMarker:
    """The output run's marker: the source's, with what was done to it."""
    return dataclasses.replace(
        source.marker,
        weights=weights,
        compression={**compression, "source": str(source.run)},
    )
