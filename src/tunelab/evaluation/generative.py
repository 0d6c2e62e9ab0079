"""Evaluation of generative models and runs: generate for every prompt, compare with references.

    m = evaluate_generative("runs/chat-lora", "chatterbot", DecodingOptions(max_new_tokens=48))
    print(format_generation_report(m))

For every (prompt, reference) pair: the model's output under the given decoding options
(greedy by default) is scored against the reference with `TextMetrics` (BLEU, chrF, ROUGE,
exact match, distinct-n), and the reference itself is scored under the model given the prompt
(`tunelab.scoring.score`), whose token-weighted perplexity says how well the model predicts
the answers it should give, independent of decoding. Work goes in chunks of `batch_size`
prompts, so metrics accumulate as it runs and memory does not grow with the data set.

Prompts are shown to a decoder the way its training showed them (`tasks.causal_lm.
prompt_text`): in the chat template when the run's marker says `chat_template: true` (for a
plain model: when its tokenizer has one, unless turned off), else as `prompt + separator`.
Encoder-decoders read the prompt as it is.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError
from tunelab.evaluation.text_metrics import TextMetrics
from tunelab.models import RUN_MARKER

GENERATIVE_TASKS = ("causal_lm", "seq2seq")


def run_marker(name: str) -> dict[str, Any] | None:
    """The tunelab_run.json of `name` when it is a run folder, else None."""
    path = Path(name).expanduser() / RUN_MARKER
    return json.loads(path.read_text()) if path.is_file() else None


def load_generative(name: str):
    """(Loaded, marker or None) of a model or generative run folder; a run that keeps only an
    adapter or its trained tensors is rebuilt on its base model (`tunelab.generative.open_run`).
    """
    from tunelab.models import load_lm

    marker = run_marker(name)
    path = Path(name).expanduser()
    if marker and marker.get("task") in GENERATIVE_TASKS and not (path / "config.json").is_file():
        from tunelab.generative import open_run

        return open_run(path, marker), marker
    return load_lm(name), marker


def load_eval_pairs(
    source: str,
    prompt_column: str = "prompt",
    response_column: str = "response",
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Non-empty prompt/response pairs of `source` (any `load_pairs` source), the first `limit`.

    Raises:
        TunelabError: no usable pair, or a bad limit.
    """
    from tunelab.data.pairs import clean_pairs, load_pairs

    if limit is not None and limit < 1:
        raise TunelabError(f"--limit must be at least 1, got {limit}")
    pairs, _ = clean_pairs(load_pairs(source, prompt_column, response_column), dedupe=False)
    if not pairs:
        raise TunelabError(
            f"{source} has no pair with both a prompt and a response: check --prompt-column and "
            "--response-column"
        )
    return pairs[:limit] if limit else pairs


def format_prompts(
    pairs: list[dict[str, Any]],
    tokenizer,
    family: str,
    marker: dict[str, Any] | None,
    chat_template: bool | None = None,
) -> list[str]:
    """What the model reads for each pair (see the module docstring)."""
    if family == "encoder-decoder":
        return [p["prompt"] for p in pairs]
    from tunelab.tasks.causal_lm import has_chat_template, prompt_text

    if chat_template is None:
        chat_template = (
            bool(marker.get("chat_template", False)) if marker else has_chat_template(tokenizer)
        )
    if chat_template and not has_chat_template(tokenizer):
        raise TunelabError("this tokenizer has no chat template: run without --chat-template")
    sep = (marker or {}).get("separator", "\n")
    return [prompt_text(p, tokenizer, chat_template, sep) for p in pairs]


def evaluate_generative(
    model_or_run: str,
    source: str,
    opts=None,
    batch_size: int = 16,
    limit: int | None = None,
    prompt_column: str = "prompt",
    response_column: str = "response",
    chat_template: bool | None = None,
    show_progress: bool = True,
    samples: int = 3,
) -> dict[str, Any]:
    """Text metrics of the outputs and the perplexity of the references, as a JSON-able dict.

    Args:
        model_or_run: a generative run folder or any model `load_lm` accepts.
        source: prompt/response data (a file or an embedded data set, see `load_pairs`).
        opts: DecodingOptions (default: greedy, 64 new tokens); one output per prompt.
        batch_size: prompts generated (and references scored) together.
        limit: evaluate only the first `limit` pairs.
        chat_template: force the chat template on or off (default: see format_prompts).
        samples: how many (prompt, reference, output) examples to keep in the result.
    """
    from tqdm.auto import tqdm

    from tunelab.decoding import DecodingOptions, generate
    from tunelab.scoring import corpus_perplexity, score

    opts = opts or DecodingOptions()
    if opts.num_return_sequences != 1:
        raise TunelabError("eval scores one output per prompt: set num_return_sequences to 1")
    if batch_size < 1:
        raise TunelabError(f"--batch-size must be at least 1, got {batch_size}")
    marker = run_marker(model_or_run)
    if marker and marker.get("task") not in GENERATIVE_TASKS:
        raise TunelabError(
            f"{model_or_run} is a {marker.get('task')} run: generative eval needs a causal_lm "
            "or seq2seq run (tunelab finetune --task causal_lm)"
        )
    pairs = load_eval_pairs(source, prompt_column, response_column, limit)
    loaded, marker = load_generative(model_or_run)
    model, tok = loaded.model, loaded.tokenizer
    prompts = format_prompts(pairs, tok, loaded.family, marker, chat_template)
    refs = [p["response"] for p in pairs]
    metrics, scored, kept = TextMetrics(), [], []
    generated, seconds = 0, 0.0
    chunks = range(0, len(pairs), batch_size)
    bar = tqdm(total=len(pairs), desc="evaluating", unit="pair", disable=not show_progress)
    for lo in chunks:
        hi = lo + batch_size
        t0 = time.perf_counter()
        outs = generate(model, tok, prompts[lo:hi], opts, batch_size=batch_size)
        seconds += time.perf_counter() - t0
        texts = [o.text.strip() for o in outs]
        generated += sum(len(o.token_ids) for o in outs)
        metrics.update(texts, refs[lo:hi])
        scored += score(model, tok, refs[lo:hi], prompts=prompts[lo:hi], batch_size=batch_size)
        for p, r, t in zip(pairs[lo:hi], refs[lo:hi], texts, strict=True):
            if len(kept) < samples:
                kept.append({"prompt": p["prompt"], "reference": r, "output": t})
        bar.update(len(outs))
    bar.close()
    ppl = corpus_perplexity(scored)
    return {
        **metrics.compute(),
        "reference_perplexity": ppl if ppl == ppl else None,  # nan (no tokens) -> null
        "reference_tokens": sum(r.tokens for r in scored),
        "generated_tokens": generated,
        "generation_seconds": round(seconds, 3),
        "tokens_per_second": round(generated / seconds, 2) if seconds else 0.0,
        "model": model_or_run,
        "data": source,
        "decoding": {k: v for k, v in vars(opts).items() if k != "stop" or v},
        "samples": kept,
    }


def format_generation_report(m: dict[str, Any]) -> str:
    """A plain-text table of `evaluate_generative`'s result, with its sample outputs."""
    ppl = m["reference_perplexity"]
    lines = [
        f"n            {m['n']}",
        f"BLEU         {m['bleu']:.2f}    chrF {m['chrf']:.2f}",
        f"ROUGE F      1 {m['rouge1']:.4f}  2 {m['rouge2']:.4f}  L {m['rougeL']:.4f}",
        f"exact match  {m['exact_match']:.4f}",
        f"distinct     1 {m['distinct_1']:.4f}  2 {m['distinct_2']:.4f}",
        f"perplexity   {'n/a' if ppl is None else f'{ppl:.3f}'} "
        f"(references given prompts, {m['reference_tokens']} tokens)",
        f"speed        {m['tokens_per_second']:.1f} tokens/s "
        f"({m['generated_tokens']} tokens in {m['generation_seconds']:.1f} s)",
    ]
    for s in m["samples"]:
        lines += [
            "",
            f"prompt     {s['prompt'][:100]!r}",
            f"reference  {s['reference'][:100]!r}",
            f"output     {s['output'][:100]!r}",
        ]
    return "\n".join(lines)
