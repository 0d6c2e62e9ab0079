"""`tunelab score`: log-probability and perplexity of texts under a model (or a run), optionally
conditional on a prompt, or of the responses of prompt/response pairs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunelab.errors import TunelabError


@dataclass
class Scored:
    texts: list[str]
    prompts: list[str] | None
    """What each text was scored after (None: scored on its own)."""
    results: list[Any]
    """One `evaluation.scoring.ScoreResult` per text."""
    perplexity: float
    """Token-weighted perplexity over all texts (nan when no token was scored)."""


def score(
    model_or_run: str,
    texts: list[str] | None = None,
    prompt: str | None = None,
    data: str | None = None,
    prompt_column: str = "prompt",
    response_column: str = "response",
    limit: int | None = None,
    chat_template: bool | None = None,
    batch_size: int = 8,
    window: int | None = None,
    stride: int | None = None,
    token_logprobs: bool = False,
    dtype: str = "auto",
    device: str = "auto",
) -> Scored:
    """Score `texts` (after `prompt` when given), or the responses of the pairs in `data`
    given their prompts (shown as the run's training showed them), with the model on `device`
    in `dtype` (`models.precision`).

    Raises:
        TunelabError: nothing to score, both texts and data, a model that cannot score.
    """
    from tunelab.evaluation.scoring import corpus_perplexity
    from tunelab.evaluation.scoring import score as score_texts
    from tunelab.runs.open import open_lm, run_prompts
    from tunelab.tasks.generative import load_eval_pairs

    texts = list(texts or [])
    if data and (texts or prompt is not None):
        raise TunelabError("--data scores its own responses: drop TEXT, --file and --prompt")
    if not data and not texts:
        raise TunelabError("nothing to score: pass TEXT arguments, --file or --data")
    pairs = load_eval_pairs(data, prompt_column, response_column, limit) if data else None
    loaded, marker = open_lm(model_or_run, dtype, device)
    if pairs is not None:
        texts = [p["response"] for p in pairs]
        prompts = run_prompts(pairs, loaded, marker, chat_template)
    else:
        prompts = [prompt] * len(texts) if prompt is not None else None
    results = score_texts(
        loaded.model,
        loaded.tokenizer,
        texts,
        prompts,
        batch_size,
        window,
        stride,
        token_logprobs=token_logprobs,
        show_progress=len(texts) > batch_size,
    )
    return Scored(texts, prompts, results, corpus_perplexity(results))
