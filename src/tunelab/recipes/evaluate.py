"""`tunelab eval`: a classification run on labelled data, or a generative run (or a plain
language model) on prompt/response pairs; with `zero_shot`, a decoder on labelled data, untrained
(`recipes.zero_shot`).

Generative: for every (prompt, reference) pair, the model's output under the given decoding
options (greedy by default) is scored against the reference with `TextMetrics` (BLEU, chrF,
ROUGE, exact match, distinct-n), and the reference itself is scored under the model given the
prompt (`evaluation.scoring.score`), whose token-weighted perplexity says how well the model
predicts the answers it should give, independent of decoding. Work goes in chunks of
`batch_size` prompts, so metrics accumulate as it runs and memory does not grow with the data.
Prompts are shown as training showed them (`tasks.generative.format_prompts`).

    m = evaluate_generative("runs/chat-lora", "chatterbot", DecodingOptions(max_new_tokens=48))
    print(format_generation_report(m))
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError
from tunelab.evaluation.text_metrics import TextMetrics
from tunelab.logs import say
from tunelab.runs.marker import find_marker


def is_generative(name: str) -> bool:
    """A causal_lm / seq2seq run folder, or a decoder / encoder-decoder model (a name, folder
    or .gguf) that is no run folder."""
    from tunelab.defaults import EMBEDDED_MODELS

    marker = find_marker(name)
    if marker is not None:
        return marker.generative
    emb = EMBEDDED_MODELS.get(name)
    if emb is not None:
        return emb.family != "encoder"
    path = Path(name).expanduser()
    if (path / "config.json").is_file():  # a plain encoder is no generator: eval wants a run
        from tunelab.models.families import detect_family
        from tunelab.models.sources import load_config

        return detect_family(load_config(name, str(path))) != "encoder"
    return path.suffix == ".gguf"


def evaluate_run(
    run_dir: str | Path,
    source: str,
    text_column: str = "text",
    label_column: str = "label",
    batch_size: int = 64,
    quiet: bool = False,
    dtype: str = "auto",
    device: str = "auto",
    baselines: bool = True,
    zero_shot: str | None = None,
    zero_shot_options: Any = None,
    limit: int | None = None,
    max_length: int = 256,
) -> dict[str, Any]:
    """Metrics of a finished classification run on labelled data (any source finetune reads),
    with the model on `device` in `dtype` (`models.precision`), and with `baselines` the
    majority-class and TF-IDF baselines beside them (`run_baselines`).

    With `zero_shot` ("choice" or "likelihood"), `run_dir` is a decoder (a model name or a
    causal_lm run) that labels each text from a prompt, untrained: `zero_shot_options` (a
    `tasks.zero_shot.ZeroShotOptions`: prompt, labels, chat template), `limit` (a stratified
    sample) and `max_length` (tokens of each text) apply then (`recipes.zero_shot`)."""
    if zero_shot is not None:
        from tunelab.recipes.zero_shot import evaluate_zero_shot

        return evaluate_zero_shot(
            str(run_dir),
            source,
            zero_shot,
            zero_shot_options,
            text_column,
            label_column,
            batch_size,
            limit,
            max_length,
            quiet,
            dtype,
            device,
            baselines,
        )
    from tunelab.data.clean import clean_examples
    from tunelab.data.readers import load_examples
    from tunelab.runs.open import open_classifier
    from tunelab.tasks.classification import encode_examples, evaluate, make_collate

    if batch_size < 1:
        raise TunelabError(f"--batch-size must be at least 1, got {batch_size}")
    model, tok, marker = open_classifier(run_dir, dtype=dtype, device=device)
    examples = load_examples(source, text_column, label_column)
    examples, report = clean_examples(examples, dedupe=False)
    say(f"eval data {source}: {report.summary()}", quiet)
    labels = marker.labels or []
    data = encode_examples(examples, tok, labels, marker.context_length)
    m = evaluate(model, data, make_collate(tok), labels, batch_size, progress=not quiet)
    return {**m, **run_baselines(run_dir, examples, m)} if baselines else m


def run_baselines(
    run_dir: str | Path, examples: list[dict[str, Any]], model: dict[str, Any]
) -> dict[str, Any]:
    """`baselines` and `warnings` of a run's metrics `model` on eval `examples`, fitted on the
    run's own training rows (its config.yaml's data section, split as finetune split it).
    Without them (no config.yaml, the data unreadable here), only the majority class of the
    eval rows themselves, with a note saying so: an optimistic constant predictor."""
    from tunelab.evaluation.baselines import baseline_report

    train, metric, why = _training_rows(Path(run_dir).expanduser())
    if train is not None:
        return baseline_report(train, examples, model, metric, split="eval")
    note = (
        f"no training data for the baselines ({why}): the majority class is the eval "
        "data's own, and there is no TF-IDF baseline"
    )
    return baseline_report(examples, examples, model, metric, "eval", tfidf=False, notes=[note])


def _training_rows(run: Path) -> tuple[list[dict[str, Any]] | None, str | None, str]:
    """(the run's training rows or None, its selection metric, why there are no rows)."""
    import yaml

    from tunelab.config.parse import update_dataclass
    from tunelab.data.options import DataOptions
    from tunelab.runs.workdir import CONFIG_FILE
    from tunelab.tasks.classification import load_splits

    file = run / CONFIG_FILE
    if not file.is_file():
        return None, None, f"{run} has no {CONFIG_FILE}"
    try:
        saved = yaml.safe_load(file.read_text())
        saved = saved if isinstance(saved, dict) else {}
    except (OSError, yaml.YAMLError) as exc:
        return None, None, f"its {CONFIG_FILE} is unreadable: {exc}"
    train = saved.get("train") or {}
    metric = train.get("metric")
    try:
        data = update_dataclass(DataOptions(), saved.get("data") or {}, "data")
        return load_splits(data, int(train.get("seed", 0)), quiet=True)["train"], metric, ""
    except Exception as exc:  # whatever the reader raises, eval still reports the model
        what = "" if isinstance(exc, TunelabError) else f"{type(exc).__name__}: "
        return None, metric, f"the run's training data is not readable here: {what}{exc}"


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
    dtype: str = "auto",
    device: str = "auto",
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
        dtype, device: what the model runs in and on (`models.precision`).
    """
    from tqdm.auto import tqdm

    from tunelab.decoding import DecodingOptions, generate
    from tunelab.evaluation.scoring import corpus_perplexity, score
    from tunelab.runs.open import open_lm, run_prompts
    from tunelab.tasks.generative import load_eval_pairs

    opts = opts or DecodingOptions()
    if opts.num_return_sequences != 1:
        raise TunelabError("eval scores one output per prompt: set num_return_sequences to 1")
    if batch_size < 1:
        raise TunelabError(f"--batch-size must be at least 1, got {batch_size}")
    marker = find_marker(model_or_run)
    if marker is not None and not marker.generative:
        raise TunelabError(
            f"{model_or_run} is a {marker.task} run: generative eval needs a causal_lm "
            "or seq2seq run (tunelab finetune --task causal_lm)"
        )
    pairs = load_eval_pairs(source, prompt_column, response_column, limit)
    loaded, marker = open_lm(model_or_run, dtype, device)
    model, tok = loaded.model, loaded.tokenizer
    prompts = run_prompts(pairs, loaded, marker, chat_template)
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
