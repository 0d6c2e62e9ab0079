"""`tunelab compare-decoding`: several decoding strategies on the same prompts, quality vs speed.

Every strategy decodes the same prompts with the same model, batch size and token budget;
each is then measured against the references (corpus BLEU, chrF, ROUGE-L), for diversity
(distinct-1/2 over all outputs), by the perplexity of its outputs under the model itself (low
= the model's most likely text, not necessarily better text) and by speed (generated tokens
per second of generation wall time, after one warm-up call). Report folder layout:

    report.md, report.json       the table and the setup
    quality-vs-speed.png         BLEU, chrF and ROUGE-L (with 95% bars) against tokens/s
    outputs/STRATEGY.jsonl       every prompt's reference and output
    results/STRATEGY.json        one strategy's row; re-running reuses rows of the same setup

Strategy specs: greedy, beamN, sample-tT (temperature T), top-kK, top-pP, min-pP (sampling at
temperature 1 with that filter), or custom `key=value:key=value` DecodingOptions fields (e.g.
`do_sample=true:temperature=0.7:top_k=50`). Sampling strategies use a fixed seed.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from tunelab.config.compare_decoding import CompareDecodingConfig
from tunelab.errors import TunelabError

PRESETS = {
    r"greedy": lambda v: {},
    r"beam(\d+)": lambda v: {"num_beams": int(v)},
    r"sample-t([\d.]+)": lambda v: {"do_sample": True, "temperature": float(v)},
    r"top-k(\d+)": lambda v: {"do_sample": True, "top_k": int(v)},
    r"top-p([\d.]+)": lambda v: {"do_sample": True, "top_p": float(v)},
    r"min-p([\d.]+)": lambda v: {"do_sample": True, "min_p": float(v)},
}


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_strategy(spec: str, max_new_tokens: int, seed: int):
    """DecodingOptions of one strategy spec.

    Raises:
        TunelabError: an unknown preset, unknown option name, or invalid values.
    """
    from tunelab.decoding.options import DecodingOptions, check_options

    kwargs: dict[str, Any] | None = None
    for pattern, build in PRESETS.items():
        m = re.fullmatch(pattern, spec)
        if m:
            kwargs = build(m.group(1) if m.groups() else None)
    if kwargs is None and "=" in spec:
        names = {f.name for f in fields(DecodingOptions)}
        kwargs = {}
        for item in spec.split(":"):
            key, _, val = item.partition("=")
            if key not in names:
                raise TunelabError(
                    f"unknown decoding option {key!r} in {spec!r}: use {', '.join(sorted(names))}"
                )
            kwargs[key] = _value(val)
    if kwargs is None:
        raise TunelabError(
            f"unknown strategy {spec!r}: use greedy, beamN, sample-tT, top-kK, top-pP, min-pP "
            "or key=value:key=value decoding options"
        )
    kwargs.setdefault("max_new_tokens", max_new_tokens)
    if kwargs.get("do_sample"):
        kwargs.setdefault("seed", seed)
    opts = DecodingOptions(**kwargs)
    try:
        check_options(opts)
    except TunelabError as exc:
        raise TunelabError(f"--strategies {spec}: {exc}") from None
    return opts


def prepare_pairs(cfg: CompareDecodingConfig) -> list[dict[str, Any]]:
    """The pairs to decode, with the template and word cut applied to each prompt."""
    from tunelab.tasks.generative import load_eval_pairs

    if "{prompt}" not in cfg.template:
        raise TunelabError(f"--template {cfg.template!r} has no {{prompt}} placeholder: add one")
    pairs = load_eval_pairs(cfg.data, cfg.prompt_column, cfg.response_column, cfg.limit)
    if cfg.template == "{prompt}" and not cfg.max_prompt_words:
        return pairs
    out = []
    for p in pairs:
        words = p["prompt"].split()
        text = " ".join(words[: cfg.max_prompt_words]) if cfg.max_prompt_words else p["prompt"]
        # the templated prompt replaces any chat context: it is the whole instruction
        out.append({"prompt": cfg.template.replace("{prompt}", text), "response": p["response"]})
    return out


def _write(path: Path, text: str) -> None:
    from tunelab.runs.workdir import write_text

    write_text(path, text)


def _setup(cfg: CompareDecodingConfig, n: int) -> dict[str, Any]:
    """What a strategy row depends on besides its own options (a saved row is reused when equal)."""
    keep = ("model", "data", "limit", "batch_size", "template", "max_prompt_words", "dtype")
    keep += ("device",)
    return {**{k: getattr(cfg, k) for k in keep}, "chat_template": cfg.chat_template, "n": n}


def uncertainty(texts: list[str], refs: list[str]) -> dict[str, float]:
    """95% half-widths: chrF by bootstrap over the prompts (sacrebleu's method: 1,000 resamples
    of the per-prompt statistics, seed 12345, the 2.5-97.5 percentile range; done here because
    sacrebleu 2.6's own `n_bootstrap` fails on mixed float types), ROUGE-L as 1.96 standard
    errors of the per-prompt F-measures."""
    import statistics

    import numpy as np
    from rouge_score.rouge_scorer import RougeScorer
    from sacrebleu.metrics import CHRF

    metric = CHRF()
    stats = np.array(metric._extract_corpus_statistics(texts, [refs]), dtype=np.float64)
    idx = np.random.default_rng(12345).choice(len(texts), size=(1000, len(texts)))
    boot = sorted(float(metric._compute_score_from_stats(stats[i].sum(0)).score) for i in idx)
    lo = len(boot) // 40
    scorer = RougeScorer(["rougeL"], use_stemmer=True)
    f = [scorer.score(r, t)["rougeL"].fmeasure for t, r in zip(texts, refs, strict=True)]
    se = statistics.stdev(f) / len(f) ** 0.5 if len(f) > 1 else 0.0
    return {"chrf_ci95": (boot[-lo - 1] - boot[lo]) / 2, "rougeL_ci95": 1.96 * se}


def run_strategy(model, tok, name: str, opts, prompts, refs, batch_size: int, show_progress: bool):
    """(row, outputs) of one strategy: generation timed, then metrics and output perplexity."""
    from tunelab.decoding import generate
    from tunelab.evaluation.scoring import corpus_perplexity, score
    from tunelab.evaluation.text_metrics import TextMetrics

    t0 = time.perf_counter()
    outs = generate(model, tok, prompts, opts, batch_size=batch_size, show_progress=show_progress)
    seconds = time.perf_counter() - t0
    texts = [o.text.strip() for o in outs]
    tokens = sum(len(o.token_ids) for o in outs)
    m = TextMetrics()
    m.update(texts, refs)
    q = m.compute()
    ppl = corpus_perplexity(score(model, tok, texts, prompts=prompts, batch_size=batch_size))
    row = {
        "strategy": name,
        "bleu": q["bleu"],
        "chrf": q["chrf"],
        "rouge1": q["rouge1"],
        "rougeL": q["rougeL"],
        "exact_match": q["exact_match"],
        "distinct_1": q["distinct_1"],
        "distinct_2": q["distinct_2"],
        "output_perplexity": ppl if ppl == ppl else None,
        "mean_tokens": tokens / len(outs),
        "eos_rate": sum(o.finish_reason != "length" for o in outs) / len(outs),
        "tokens_per_second": tokens / seconds if seconds else 0.0,
        "seconds": seconds,
        "n": len(outs),
        "options": {k: v for k, v in vars(opts).items()},
    }
    return row, texts


def compare_decoding(
    cfg: CompareDecodingConfig, show_progress: bool = True
) -> tuple[Path, list[dict]]:
    """Run every strategy (reusing finished ones of the same setup) and write the report."""
    from tunelab.decoding import DecodingOptions, generate
    from tunelab.runs.open import open_lm, run_prompts

    if not cfg.strategies:
        raise TunelabError("no strategies: pass --strategies greedy,beam4,...")
    if cfg.batch_size < 1:
        raise TunelabError(f"--batch-size must be at least 1, got {cfg.batch_size}")
    if cfg.max_new_tokens < 1:
        raise TunelabError(f"--max-new-tokens must be at least 1, got {cfg.max_new_tokens}")
    if cfg.max_prompt_words < 0:
        raise TunelabError(f"--max-prompt-words must be 0 or more, got {cfg.max_prompt_words}")
    report = Path(cfg.out)
    if report.exists() and not report.is_dir():
        raise TunelabError(f"--out {report} is a file: name a folder for the report")
    specs = {s: parse_strategy(s, cfg.max_new_tokens, cfg.seed) for s in cfg.strategies}
    pairs = prepare_pairs(cfg)
    setup = _setup(cfg, len(pairs))
    loaded = None
    rows = []
    for name, opts in specs.items():
        safe = re.sub(r"[^A-Za-z0-9._=-]+", "_", name)
        saved = report / "results" / f"{safe}.json"
        if saved.is_file():
            old = json.loads(saved.read_text())
            if old.get("setup") == setup and old["row"]["options"] == vars(opts):
                outs = (report / "outputs" / f"{safe}.jsonl").read_text().splitlines()
                texts = [json.loads(line)["output"] for line in outs if line]
                refs = [p["response"] for p in pairs]
                rows.append({**old["row"], **uncertainty(texts, refs)})
                print(f"{name}: reusing {saved}", flush=True)
                continue
        if loaded is None:
            loaded, marker = open_lm(cfg.model, cfg.dtype, cfg.device)
            (report / "outputs").mkdir(parents=True, exist_ok=True)  # once the model opens
            (report / "results").mkdir(exist_ok=True)
            prompts = run_prompts(pairs, loaded, marker, cfg.chat_template)
            refs = [p["response"] for p in pairs]
            # warm-up: the first forward pass pays for allocations no strategy should carry
            generate(loaded.model, loaded.tokenizer, prompts[:1], DecodingOptions(max_new_tokens=2))
        print(f"{name}: decoding {len(prompts)} prompts", flush=True)
        row, texts = run_strategy(
            loaded.model, loaded.tokenizer, name, opts, prompts, refs, cfg.batch_size, show_progress
        )
        lines = [
            json.dumps({"prompt": p["prompt"], "reference": p["response"], "output": t})
            for p, t in zip(pairs, texts, strict=True)
        ]
        _write(report / "outputs" / f"{safe}.jsonl", "\n".join(lines) + "\n")
        _write(saved, json.dumps({"setup": setup, "row": row}, indent=2) + "\n")
        rows.append({**row, **uncertainty(texts, refs)})
    write_report(report, cfg, setup, rows)
    return report, rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| strategy | BLEU | chrF (±95%) | ROUGE-L (±95%) | distinct-1 | distinct-2 | output ppl "
        "| mean tokens | EOS rate | tokens/s | wall (s) |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    body = ""
    for r in rows:
        ppl = r["output_perplexity"]
        body += (
            f"| {r['strategy']} | {r['bleu']:.2f} | {r['chrf']:.1f} ± {r['chrf_ci95']:.1f} "
            f"| {r['rougeL']:.3f} ± {r['rougeL_ci95']:.3f} "
            f"| {r['distinct_1']:.3f} | {r['distinct_2']:.3f} "
            f"| {'n/a' if ppl is None else f'{ppl:.2f}'} | {r['mean_tokens']:.1f} "
            f"| {r['eos_rate']:.2f} | {r['tokens_per_second']:.1f} | {r['seconds']:.1f} |\n"
        )
    return head + body


def plot_quality_vs_speed(rows: list[dict[str, Any]], path: Path) -> Path:
    """BLEU, chrF and ROUGE-L against tokens/s, one labelled point per strategy (with its 95%
    interval where the row has one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tunelab.evaluation.plots import save_figure

    panels = [("bleu", "BLEU"), ("chrf", "chrF"), ("rougeL", "ROUGE-L F")]
    fig, axes = plt.subplots(1, len(panels), figsize=(13, 4.2), dpi=110)
    for ax, (key, label) in zip(axes, panels, strict=True):
        for i, r in enumerate(sorted(rows, key=lambda r: r["tokens_per_second"])):
            # 95% bars where the row has them (chrF, ROUGE-L): n is small, differences often not
            err = r.get(f"{key}_ci95")
            ax.errorbar(r["tokens_per_second"], r[key], yerr=err, fmt="o", ms=6, capsize=3)
            ax.annotate(
                r["strategy"],
                (r["tokens_per_second"], r[key]),
                textcoords="offset points",
                xytext=(5, 5 if i % 2 == 0 else -12),
                fontsize=8,
            )
        ax.set_xlabel("generated tokens/s")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.set_title(f"{label} vs speed")
    return save_figure(fig, path)


def write_report(
    report: Path, cfg: CompareDecodingConfig, setup: dict[str, Any], rows: list[dict]
) -> None:
    """report.json, report.md and quality-vs-speed.png."""
    from tunelab.recipes.compare import machine

    meta = {
        **setup,
        "max_new_tokens": cfg.max_new_tokens,
        "seed": cfg.seed,
        "machine": machine(),
        "written": time.strftime("%Y-%m-%d %H:%M"),
    }
    _write(report / "report.json", json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    plot = plot_quality_vs_speed(rows, report / "quality-vs-speed.png")
    text = (
        f"# Decoding strategies: {cfg.model} on {cfg.data}\n\n"
        f"{setup['n']} prompts, up to {cfg.max_new_tokens} new tokens, batch {cfg.batch_size}, "
        f"sampling seed {cfg.seed}. Machine: {meta['machine']}. Written {meta['written']}.\n\n"
        + markdown_table(rows)
        + "\nColumns: BLEU and chrF (sacrebleu, corpus level) and ROUGE-L F (rouge_score, "
        "mean over prompts) against the references, with 95% half-widths (chrF: sacrebleu's "
        "bootstrap over the prompts; ROUGE-L: 1.96 standard errors); distinct-n, unique "
        "n-grams / all n-grams over every output; *output ppl*, the perplexity of the outputs "
        "under the model given the prompts (low = the model's own most likely text); *EOS "
        "rate*, outputs that ended before the token budget; tokens/s, generated tokens per "
        "second of generation wall time (the metrics afterwards not included).\n"
        f"\n![{plot.stem}]({plot.name})\n"
    )
    _write(report / "report.md", text)
