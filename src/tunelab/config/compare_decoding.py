"""The configuration of `tunelab compare-decoding`: one model, one set of prompt/response
pairs, several decoding strategies on the same token budget."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_STRATEGIES = ["greedy", "beam4", "sample-t0.7", "top-k40", "top-p0.9", "min-p0.05"]


@dataclass
class CompareDecodingConfig:
    model: str
    """A model name, folder, .gguf file or generative run folder."""
    data: str
    """Prompt/response pairs: a .jsonl/.csv file or an embedded set (chatterbot, news-headlines)."""
    out: str = "reports/compare-decoding"
    """Report folder."""
    strategies: list[str] = field(default_factory=lambda: list(DEFAULT_STRATEGIES))
    """Strategy specs (see the module docstring)."""
    limit: int | None = 50
    """Use the first N pairs (none: all)."""
    max_new_tokens: int = 32
    """Token budget of every strategy."""
    batch_size: int = 8
    """Prompts decoded together (the same for every strategy)."""
    template: str = "{prompt}"
    """How a pair's prompt becomes the instruction, e.g. 'Write a headline for: {prompt}'."""
    max_prompt_words: int = 0
    """Cut each prompt to its first N words before the template (0: keep all)."""
    chat_template: bool | None = None
    """Wrap prompts in the chat template (default: a run's setting, else when there is one)."""
    seed: int = 0
    """Seed of the sampling strategies."""
    dtype: str = "auto"
    """What the model runs in: auto, fp32 (exact), bf16, fp16, int8 or int4 (docs/generation.md)."""
    device: str = "auto"
    """Where it runs: auto, cpu, cuda, cuda:N or mps."""
    prompt_column: str = "prompt"
    """Prompt column of a data file."""
    response_column: str = "response"
    """Reference column of a data file."""
