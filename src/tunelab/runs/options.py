"""The `run` section: where a run folder goes, its name, resuming and merging."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunOptions:
    output_dir: str = "runs"
    """Folder that receives run folders."""
    name: str | None = None
    """Run folder name (default: model-strategy-timestamp)."""
    resume: bool = False
    """Continue the unfinished run `name` (or the newest one) from its last checkpoint."""
    merge: bool = False
    """For adapter strategies (lora): also write the merged full model into the run folder."""
    predict: list[str] = field(default_factory=list)
    """Texts to classify with the finished model (printed after the metrics)."""
