"""Measuring a run as `tunelab compress` reports it: quality on the run's own test split, size
on disk, parameters, latency at batch 1 and throughput at batch 32 (tokens/s for language
models), and the peak memory of the process that loaded and ran it (each method is measured
in a fresh process, so the figure is its own)."""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from tunelab.config.compress import CompressOptions
from tunelab.recipes.compress_source import Source
from tunelab.recipes.finetune import peak_memory_mib

WEIGHT_SUFFIXES = (".safetensors", ".onnx", ".gguf", ".onnx.data", ".data")


def weight_bytes(run: Path) -> int:
    """Bytes of the weight files of a run folder (safetensors, ONNX and its data, GGUF)."""
    return sum(
        p.stat().st_size
        for p in run.rglob("*")
        if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES) and "training" not in p.parts
    )


def _params(model) -> int | None:
    """Parameters of the model, counting quantized weights by their logical shape (torch.ao's
    dynamic Linear packs its weight out of `parameters()`); None for an ONNX session."""
    if not isinstance(model, torch.nn.Module):
        return None
    total = sum(p.numel() for p in model.parameters())
    for m in model.modules():
        if hasattr(m, "_packed_params") and callable(getattr(m, "weight", None)):
            total += m.weight().numel() + (m.bias().numel() if m.bias() is not None else 0)
    return total


@torch.inference_mode()
def _classifier_speed(
    model, tok, texts: list[str], max_length: int, autocast: bool
) -> dict[str, float]:
    """Median ms per example at batch 1 (after 3 warm-up calls) and examples/s at batch 32."""
    from tunelab.tasks.classification import autocast_for

    def enc(batch: list[str]) -> dict[str, torch.Tensor]:
        return dict(
            tok(batch, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        )

    times = []
    with autocast_for(model) if autocast else nullcontext():
        for i, text in enumerate(texts):
            batch = enc([text])
            if i < 3:
                model(**batch)
            t0 = time.perf_counter()
            model(**batch)
            times.append((time.perf_counter() - t0) * 1000)
        big = (texts * (1 + 64 // max(1, len(texts))))[:64]
        batches = [enc(big[i : i + 32]) for i in range(0, len(big), 32)]
        model(**batches[0])
        t0 = time.perf_counter()
        for b in batches:
            model(**b)
        seconds = time.perf_counter() - t0
    return {
        "latency_ms_b1": round(statistics.median(times), 2),
        "latency_ms_b1_p90": round(sorted(times)[int(0.9 * (len(times) - 1))], 2),
        "examples_per_s_b32": round(len(big) / seconds, 1),
    }


def measure_classifier(
    run: Path, source: Source, opts: CompressOptions, autocast: bool = True
) -> dict[str, Any]:
    from tunelab.runs.open import open_classifier
    from tunelab.tasks.classification import encode_examples, evaluate, make_collate

    t0 = time.perf_counter()
    model, tok, marker = open_classifier(run)
    load_s = time.perf_counter() - t0
    test = source.splits()["test"][: opts.eval_limit or None]
    labels = marker.labels or []
    data = encode_examples(test, tok, labels, marker.context_length)
    m = evaluate(model, data, make_collate(tok), labels, 32, progress=False, autocast=autocast)
    texts = [e["text"] for e in test[: opts.latency_examples]]
    speed = _classifier_speed(model, tok, texts, marker.context_length, autocast)
    return {
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "test_examples": len(test),
        "load_seconds": round(load_s, 2),
        "params": _params(model),
        **speed,
    }


def _last_tokens(tok, text: str, n: int) -> str:
    """`text` cut to its last `n` tokens, as the run's training cut long prompts from the left
    (whole articles would measure a context the model was never tuned on, at many GB)."""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= n else tok.decode(ids[-n:])


def _generation_quality(loaded, prompts: list[str], refs: list[str], opts) -> dict[str, float]:
    """BLEU and chrF of greedy outputs against the references (the first 50 test pairs)."""
    from tunelab.decoding import generate
    from tunelab.evaluation.text_metrics import TextMetrics

    outs = generate(loaded.model, loaded.tokenizer, prompts, opts, batch_size=8)
    metrics = TextMetrics()
    metrics.update([o.text.strip() for o in outs], refs)
    m = metrics.compute()
    return {"bleu": m["bleu"], "chrf": m["chrf"], "generated_pairs": len(prompts)}


def measure_lm(run: Path, source: Source, opts: CompressOptions) -> dict[str, Any]:
    from tunelab.decoding import DecodingOptions, generate
    from tunelab.evaluation.scoring import corpus_perplexity, score
    from tunelab.runs.open import open_lm, run_prompts

    t0 = time.perf_counter()
    loaded, marker = open_lm(str(run))
    load_s = time.perf_counter() - t0
    pairs = source.splits()["test"][: opts.eval_limit or 200]
    tok = loaded.tokenizer
    limit = (marker.max_length if marker else None) or 512
    prompts = [
        _last_tokens(tok, p, max(8, limit - 32)) for p in run_prompts(pairs, loaded, marker, None)
    ]
    refs = [p["response"] for p in pairs]
    scored = score(loaded.model, loaded.tokenizer, refs, prompts, batch_size=8)
    opts_dec = DecodingOptions(max_new_tokens=32)
    quality = _generation_quality(loaded, prompts[:50], refs[:50], opts_dec)
    few = prompts[: max(1, min(8, opts.latency_examples))]
    generate(loaded.model, loaded.tokenizer, few[:1], DecodingOptions(max_new_tokens=2))
    speed = {}
    for bs in (1, len(few)):
        t0 = time.perf_counter()
        outs = generate(loaded.model, loaded.tokenizer, few, opts_dec, batch_size=bs)
        seconds = time.perf_counter() - t0
        speed[f"tokens_per_s_b{bs}"] = round(sum(len(o.token_ids) for o in outs) / seconds, 1)
    return {
        "perplexity": corpus_perplexity(scored),
        **quality,
        "test_examples": len(pairs),
        "load_seconds": round(load_s, 2),
        "params": _params(loaded.model),
        **speed,
    }


def measure(
    run: Path, source: Source, opts: CompressOptions, autocast: bool = True
) -> dict[str, Any]:
    """Everything the report shows for `run` (the source itself, or a compressed output);
    `autocast` False measures a classifier in plain fp32 (tunelab's default inference uses
    bf16 autocast where the CPU has native bf16)."""
    if opts.threads:
        torch.set_num_threads(opts.threads)
    if source.generative:
        row = measure_lm(run, source, opts)
    else:
        row = measure_classifier(run, source, opts, autocast)
    row["size_mib"] = round(weight_bytes(run) / 2**20, 2)
    row["peak_memory_mib"] = peak_memory_mib()
    return row
