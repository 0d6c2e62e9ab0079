"""Zero-shot classification as a verb: `tunelab eval|predict MODEL --zero-shot`, and the rows of
`tunelab compare` that train nothing (`zero_shot`, `zero_shot_likelihood`).

A decoder (an embedded one such as smollm2-135m, a hub / local causal LM, or a causal_lm run
folder) labels texts with a prompt and the label names (`tasks.zero_shot`): what a prompt gets
before anyone fine-tunes. The metrics are a fine-tuned eval's (accuracy, macro-F1, per class),
so the numbers compare; in `compare` the row sits in the same table as the strategies, with a
training time of 0, on the same test split, beside the same baselines.

    m = evaluate_zero_shot("smollm2-135m", "bbc-news", "choice", limit=100)
    print(m["accuracy"], m["invalid"])
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError
from tunelab.logs import say
from tunelab.runs.marker import RunMarker, find_marker
from tunelab.tasks.zero_shot import (
    ROWS,
    ZeroShotOptions,
    check_mode,
    check_options,
    classify,
    metrics_of,
)

HINT = "try another prompt (--zero_shot.prompt, chat_template) or a larger instruct model"
"""What a zero-shot row that loses to its baselines can try (training hints do not apply)."""
NOT_A_DECODER = "--zero-shot needs a decoder (a causal LM such as smollm2-135m, or a causal_lm run)"


def check_source(name: str) -> RunMarker | None:
    """The run marker of `name` (None: a model name), or a one-line error naming --zero-shot
    when it is a run or model that is no decoder; a hub id is checked once it has loaded."""
    from tunelab.defaults import EMBEDDED_MODELS

    marker = find_marker(name)
    if marker is not None:
        if marker.task != "causal_lm":
            raise TunelabError(
                f"{NOT_A_DECODER}: {name} is a {marker.task} run"
                + (" (drop --zero-shot to evaluate it)" if marker.task == "classification" else "")
            )
        return marker
    family = None
    if name in EMBEDDED_MODELS:
        family = EMBEDDED_MODELS[name].family
    elif (Path(name).expanduser() / "config.json").is_file():
        from tunelab.models.families import detect_family
        from tunelab.models.sources import load_config

        family = detect_family(load_config(name, str(Path(name).expanduser())))
    if family is not None and family != "decoder":
        raise TunelabError(f"{NOT_A_DECODER}: {name} is an {family}")
    return None


def open_decoder(name: str, dtype: str = "auto", device: str = "auto"):
    """(Loaded causal LM, its run marker or None) for zero-shot use."""
    from tunelab.runs.open import open_lm

    check_source(name)
    loaded, marker = open_lm(name, dtype, device)
    if loaded.family != "decoder":
        raise TunelabError(f"{NOT_A_DECODER}: {name} is an {loaded.family}")
    return loaded, marker


def _options(opts: ZeroShotOptions, marker: RunMarker | None, tokenizer) -> ZeroShotOptions:
    """`opts` with the chat template decided: asked for, else as a causal_lm run trained,
    else when the tokenizer has one (so the result records what the model read)."""
    from dataclasses import replace

    from tunelab.tasks.zero_shot import uses_chat

    wanted = opts.chat_template
    if wanted is None and marker is not None and marker.chat_template is not None:
        wanted = bool(marker.chat_template)
    return replace(opts, chat_template=uses_chat(tokenizer, wanted))


def _sample(examples: list[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    """A stratified sample of `limit` examples (as data.limit draws one), or all of them."""
    from tunelab.data.split import stratified_split

    if limit is not None and limit < 1:
        raise TunelabError(f"--limit must be at least 1, got {limit}")
    if not limit or limit >= len(examples):
        return examples
    return stratified_split(examples, test_size=limit / len(examples), val_size=0.0, seed=0)["test"]


def _label_set(opts: ZeroShotOptions, examples: list[dict[str, Any]]) -> list[str]:
    """The labels to choose from: --labels, else the data's; every data label must be one."""
    from tunelab.data.split import check_labels

    labels = opts.labels or check_labels(examples)
    foreign = sorted({str(e["label"]) for e in examples} - set(labels))
    if foreign:
        raise TunelabError(
            f"the data has labels {foreign[:5]} that are not in --labels {','.join(labels)}: "
            "add them (or drop --labels to use the data's own)"
        )
    return labels


def evaluate_zero_shot(
    model_or_run: str,
    source: str,
    mode: str = "choice",
    options: ZeroShotOptions | None = None,
    text_column: str = "text",
    label_column: str = "label",
    batch_size: int = 16,
    limit: int | None = None,
    max_length: int = 256,
    quiet: bool = False,
    dtype: str = "auto",
    device: str = "auto",
    baselines: bool = True,
) -> dict[str, Any]:
    """Classification metrics of a decoder answering a prompt on labelled data (any source
    finetune reads; `limit`: a stratified sample), with the majority class of the data beside
    them (nothing was trained, so there are no training rows for a TF-IDF baseline: `tunelab
    compare` fits one on a real split). `invalid` counts answers that were no label (0 in
    choice mode: the constraint allows only labels)."""
    from tunelab.data.clean import clean_examples
    from tunelab.data.readers import load_examples
    from tunelab.evaluation.baselines import baseline_report
    from tunelab.models.precision import check

    check_mode(mode)
    opts = check_options(options or ZeroShotOptions())  # before the model loads (seconds)
    check(dtype, device)
    check_source(model_or_run)
    examples = load_examples(source, text_column, label_column)
    examples, report = clean_examples(examples, dedupe=False)
    examples = _sample(examples, limit)
    say(f"eval data {source}: {report.summary()}; {len(examples)} classified", quiet)
    labels = _label_set(opts, examples)
    loaded, marker = open_decoder(model_or_run, dtype, device)
    opts = _options(opts, marker, loaded.tokenizer)
    texts, truth = [e["text"] for e in examples], [str(e["label"]) for e in examples]
    result = classify(
        loaded.model, loaded.tokenizer, texts, labels, mode, opts, max_length, batch_size, not quiet
    )
    m = metrics_of(result.labels, truth, labels)
    m |= _facts(model_or_run, mode, opts, labels, max_length, result)
    m["data"] = source
    if not baselines:
        return m
    note = (
        "zero-shot: nothing was trained, so the majority class is the eval data's own and "
        "there is no TF-IDF baseline (tunelab compare fits one on a training split)"
    )
    return m | baseline_report(examples, examples, m, split="eval", tfidf=False, notes=[note])


def _facts(name, mode, opts, labels, max_length, result) -> dict[str, Any]:
    n = len(result.labels)
    return {
        "model": name,
        "zero_shot": {
            "mode": mode,
            "prompt": opts.prompt,
            "labels": labels,
            "chat_template": opts.chat_template,
            "max_length": max_length,
        },
        "seconds": round(result.seconds, 3),
        "ms_per_example": round(1000 * result.seconds / n, 2) if n else None,
        "example_prompt": result.prompts[0] if result.prompts else None,
    }


def predict_zero_shot(
    model_or_run: str,
    texts: list[str],
    labels: list[str] | str,
    mode: str = "choice",
    options: ZeroShotOptions | None = None,
    batch_size: int = 16,
    max_length: int = 256,
    quiet: bool = False,
    dtype: str = "auto",
    device: str = "auto",
) -> list[dict[str, Any]]:
    """{text, label} of each text, in input order; likelihood mode adds `score` (the chosen
    label's probability) and `probs` (every label's), as a classifier's predict does."""
    from dataclasses import replace

    from tunelab.models.precision import check
    from tunelab.tasks.zero_shot import parse_labels

    if not texts:
        raise TunelabError("no texts to classify: pass TEXT arguments or --file")
    check_mode(mode)
    names = parse_labels(labels) or parse_labels(options.labels if options else None)
    if not names:
        raise TunelabError("predict --zero-shot needs the label names: --labels a,b,c")
    opts = check_options(replace(options or ZeroShotOptions(), labels=names))
    check(dtype, device)
    loaded, marker = open_decoder(model_or_run, dtype, device)
    opts = _options(opts, marker, loaded.tokenizer)
    result = classify(
        loaded.model, loaded.tokenizer, texts, names, mode, opts, max_length, batch_size, not quiet
    )
    out = []
    for i, (text, label) in enumerate(zip(texts, result.labels, strict=True)):
        row: dict[str, Any] = {"text": text, "label": label}
        if result.probs is not None:
            p = result.probs[i]
            row["score"] = round(max(p), 6)
            row["probs"] = {lab: round(q, 6) for lab, q in zip(names, p, strict=True)}
        out.append(row)
    return out


def compare_row(spec: dict[str, Any], row: str) -> dict[str, Any]:
    """What `tunelab compare` reports for a zero-shot row (`ROWS`): the shared model asked on
    the shared test split (labels: the training split's; texts cut to data.max_length), with
    train time 0, the latency of one example at a time, and the baselines of the split (the
    worker adds the process's peak memory)."""
    from tunelab.config.finetune import build_config
    from tunelab.config.parse import saved_overrides, update_dataclass
    from tunelab.data.split import check_labels
    from tunelab.evaluation.baselines import baseline_warnings, fit_baselines, hint
    from tunelab.tasks.classification import load_splits

    mode = ROWS[row]
    cfg = build_config(overrides=saved_overrides(spec["base"]))
    own = {k.split(".", 1)[1]: v for k, v in spec["overrides"].get("zero_shot", {}).items()}
    opts = check_options(update_dataclass(ZeroShotOptions(), own, "zero_shot"), "--zero_shot.")
    splits = load_splits(cfg.data, cfg.train.seed, quiet=True)
    train, test = splits["train"], splits["test"]
    if not test:
        raise TunelabError("the shared split has no test rows: set data.test_size above 0")
    labels = _label_set(opts, train + test) if opts.labels else check_labels(train)
    name = cfg.model.name
    if cfg.model.gguf_file:
        name = str(Path(name).expanduser() / cfg.model.gguf_file)
    # fp32, as the fine-tuned rows' runs are timed; on a GPU when there is one
    loaded, marker = open_decoder(name, "fp32", "auto")
    opts = _options(opts, marker, loaded.tokenizer)
    model, tok = loaded.model, loaded.tokenizer
    texts, truth = [e["text"] for e in test], [str(e["label"]) for e in test]
    batch, length = cfg.train.batch_size, cfg.data.max_length
    result = classify(model, tok, texts, labels, mode, opts, length, batch, progress=True)
    m = metrics_of(result.labels, truth, labels)
    times = []
    for i, text in enumerate(texts[: spec["latency_examples"]]):
        one = classify(model, tok, [text], labels, mode, opts, length, 1)
        if i:  # the first call warms up (allocations, the constraint's tokenizer)
            times.append(1000 * one.seconds)
    times = times or [1000 * one.seconds]
    baselines, _ = fit_baselines(train, test, labels)
    return {
        "status": "ok",
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "invalid": m["invalid"],
        "trainable_params": 0,
        "total_params": sum(p.numel() for p in model.parameters()),
        "trainable_pct": 0.0,
        "train_seconds": 0.0,
        "inference_seconds": round(result.seconds, 2),
        "checkpoint_mib": 0.0,
        "steps": 0,
        "latency_ms_median": round(statistics.median(times), 2),
        "latency_ms_p90": round(sorted(times)[int(0.9 * (len(times) - 1))], 2),
        "zero_shot": _facts(name, mode, opts, labels, length, result)["zero_shot"],
        "example_prompt": result.prompts[0],
        "warnings": [
            w.replace(hint(), HINT) for w in baseline_warnings(m, baselines, cfg.train.metric)
        ],
        "baselines": baselines,
    }


__all__ = ["check_source", "compare_row", "evaluate_zero_shot", "predict_zero_shot"]
