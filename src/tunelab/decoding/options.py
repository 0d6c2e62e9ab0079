"""Decoding options and generation results: the dataclasses every decoding caller shares.

`DecodingOptions` attribute docstrings are the `tunelab generate --help` text; `check_options`
turns a bad combination into one TunelabError line that says how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunelab.decoding.constraints import Constraint
from tunelab.errors import TunelabError


@dataclass
class DecodingOptions:
    max_new_tokens: int = 64
    """Most tokens generated per sequence (EOS and stop strings can end it sooner)."""
    do_sample: bool = False
    """Sample from the (processed) distribution; false: greedy (num_beams 1) or beam search."""
    num_beams: int = 1
    """Beams for beam search (more than 1 turns it on; not combined with sampling)."""
    length_penalty: float = 1.0
    """Beam search: a finished hypothesis scores sum(logprobs) / length**length_penalty."""
    early_stopping: bool | str = False
    """Beam search: true stops once num_beams hypotheses are finished; false once no running
    beam can beat them at its current length; never: the same check at the longest possible
    length (when length_penalty > 0), as transformers does."""
    num_return_sequences: int = 1
    """Outputs per prompt (beam search: the best ones, at most num_beams; sampling: draws)."""
    temperature: float = 1.0
    """Divide the logits by this before sampling; 0 means greedy."""
    top_k: int = 0
    """Sample only from the k most likely tokens (0: off)."""
    top_p: float = 1.0
    """Nucleus sampling: sample from the smallest set of tokens whose mass is >= top_p."""
    min_p: float = 0.0
    """Drop tokens less likely than min_p times the most likely one (0: off)."""
    repetition_penalty: float = 1.0
    """>1 discourages tokens already in the prompt or output (logit / or * by this)."""
    no_repeat_ngram_size: int = 0
    """Never repeat an n-gram of this size (0: off)."""
    stop: list[str] = field(default_factory=list)
    """Stop strings: a sequence ends when its text contains one (not included in the text)."""
    seed: int | None = None
    """Seed for sampling (same seed, same outputs); none: nondeterministic."""
    context_window: int | None = None
    """Positions the model may see (default: the model's max positions); longer sequences
    slide: n_keep first tokens stay, the oldest of the rest are dropped."""
    n_keep: int = 0
    """Prompt tokens always kept (e.g. the instruction) when the context window slides."""
    ignore_eos: bool = False
    """Keep generating after EOS until max_new_tokens (benchmarks)."""
    constraint: Constraint | None = field(default=None, metadata={"flag": False})
    """What every output must be (a choice, a regex, a JSON schema, any JSON, a grammar):
    decoding.constraints; the CLI spells it --choice, --regex, --json-schema, --json, --grammar."""
    logprobs: int | None = field(default=None, metadata={"flag": False})
    """Report each generated token's logprob and the k most likely alternatives (0-20; None:
    nothing): the engine's StepEvent.logprobs (decoding.logprobs). Not with beam search."""


@dataclass
class GenerationOutput:
    text: str
    """The generated continuation only (not the prompt), cut before any stop string."""
    token_ids: list[int]
    """Generated token ids (EOS not included)."""
    finish_reason: str
    """eos, stop or length."""
    prompt_tokens: int
    """Tokens in the prompt (before any context-window sliding)."""
    prompt_index: int
    """Index of the prompt this output belongs to."""


def is_greedy(opts: DecodingOptions) -> bool:
    """True when decoding picks the argmax (no sampling, or temperature 0) with one beam."""
    return opts.num_beams == 1 and (not opts.do_sample or opts.temperature == 0)


def check_options(opts: DecodingOptions) -> None:
    """Raise a one-line TunelabError for an invalid option or combination."""

    def bad(msg: str) -> None:
        raise TunelabError(msg)

    if opts.max_new_tokens < 1:
        bad(f"max_new_tokens must be at least 1, got {opts.max_new_tokens}")
    if opts.num_beams < 1:
        bad(f"num_beams must be at least 1, got {opts.num_beams}")
    if opts.num_return_sequences < 1:
        bad(f"num_return_sequences must be at least 1, got {opts.num_return_sequences}")
    if opts.num_beams > 1 and opts.do_sample:
        bad("beam search does not sample: set do_sample false or num_beams 1")
    if opts.num_beams > 1 and opts.num_return_sequences > opts.num_beams:
        bad(
            f"num_return_sequences ({opts.num_return_sequences}) cannot exceed num_beams "
            f"({opts.num_beams}): raise num_beams or lower num_return_sequences"
        )
    if opts.num_beams == 1 and opts.num_return_sequences > 1 and is_greedy(opts):
        bad(
            "greedy decoding returns one sequence per prompt: set do_sample true or num_beams "
            f">= {opts.num_return_sequences} for num_return_sequences {opts.num_return_sequences}"
        )
    if opts.early_stopping not in (True, False, "never"):
        bad(f"early_stopping must be true, false or never, got {opts.early_stopping!r}")
    if opts.temperature < 0:
        bad(f"temperature must be >= 0 (0 is greedy), got {opts.temperature}")
    if opts.top_k < 0:
        bad(f"top_k must be >= 0 (0 is off), got {opts.top_k}")
    if not 0 < opts.top_p <= 1:
        bad(f"top_p must be in (0, 1] (1 is off), got {opts.top_p}")
    if not 0 <= opts.min_p < 1:
        bad(f"min_p must be in [0, 1) (0 is off), got {opts.min_p}")
    if opts.repetition_penalty <= 0:
        bad(f"repetition_penalty must be > 0 (1 is off), got {opts.repetition_penalty}")
    if opts.no_repeat_ngram_size < 0:
        bad(f"no_repeat_ngram_size must be >= 0 (0 is off), got {opts.no_repeat_ngram_size}")
    if any(not s for s in opts.stop):
        bad("stop strings must not be empty: drop the empty one")
    if opts.context_window is not None and opts.context_window < 2:
        bad(f"context_window must be at least 2, got {opts.context_window}")
    if opts.n_keep < 0:
        bad(f"n_keep must be >= 0, got {opts.n_keep}")
    if opts.constraint is not None and not isinstance(opts.constraint, Constraint):
        bad("decoding constraints are decoding.constraints.Constraint objects")
    if opts.logprobs is not None and not 0 <= opts.logprobs <= 20:
        bad(f"logprobs takes 0 to 20 alternatives per token, got {opts.logprobs}")
    if opts.logprobs is not None and opts.num_beams > 1:
        bad("logprobs are not reported for beam search: use num_beams 1 or drop logprobs")
    if opts.constraint is not None and opts.ignore_eos:
        bad("ignore_eos does not combine with constrained decoding: drop one")
    if opts.context_window is not None and opts.n_keep >= opts.context_window - 1:
        bad(
            f"n_keep ({opts.n_keep}) must be smaller than context_window - 1 "
            f"({opts.context_window - 1}) so the window can slide"
        )
