"""`tunelab compare`: every chosen strategy on the same data, seed and step budget, side by side.

Each strategy runs in its own process (`python -m tunelab.recipes.compare --worker ...`), so its
peak memory is its own, a crash or an out-of-memory kill ends only that strategy, and the next one
starts from a clean slate. Report folder layout:

    base.yaml              the shared configuration (data, model, budget, seed)
    runs/STRATEGY/         each strategy's run folder (as `tunelab finetune` writes it)
    results/STRATEGY.json  what the worker measured (or why it failed)
    report.md, report.json the table (with the majority-class and TF-IDF + logistic-regression
                           baselines of the same split as rows); tradeoff-params.png,
                           tradeoff-time.png the plots (the baselines as horizontal lines)

Re-running the same command skips strategies whose result is already there (failed ones are
retried); an interrupted strategy resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tunelab.config.compare import CompareConfig
from tunelab.config.parse import saved_overrides
from tunelab.errors import TunelabError
from tunelab.evaluation.tables import with_failures


def _write_json(path: Path, obj: Any) -> None:
    from tunelab.runs.workdir import write_json

    write_json(path, obj)


def folder_bytes(run_dir: Path) -> int:
    """Size of the weights a run saved (full model, adapter or trained tensors)."""
    from tunelab.runs.save import WEIGHT_FILES

    return sum(p.stat().st_size for p in run_dir.rglob("*") if p.name in WEIGHT_FILES)


def measure_latency(run_dir: Path, texts: list[str]) -> dict[str, float]:
    """Milliseconds per example classifying `texts` one at a time (batch 1), after warm-up."""
    import torch

    from tunelab.runs.open import open_classifier
    from tunelab.tasks.classification import EncodedDataset, autocast_for, make_collate

    model, tok, marker = open_classifier(run_dir)
    model.eval()
    collate = make_collate(tok)
    data = EncodedDataset(texts, tok, marker.context_length)
    times = []
    with torch.inference_mode(), autocast_for(model):
        for i in range(len(data)):
            batch = collate([data[i]])
            if i < 3:  # warm-up: first calls allocate and pick kernels
                model(**batch)
            t0 = time.perf_counter()
            model(**batch)
            times.append((time.perf_counter() - t0) * 1000)
    return {
        "latency_ms_median": round(statistics.median(times), 2),
        "latency_ms_p90": round(sorted(times)[int(0.9 * (len(times) - 1))], 2),
    }


def finetuned_row(spec: dict[str, Any], strategy: str, runs: Path) -> dict[str, Any]:
    """Fine-tune one strategy into `runs/STRATEGY` (resuming a partial run; a finished one is
    only measured) and return what the report shows of it."""
    from tunelab.config.finetune import build_config
    from tunelab.recipes.finetune import finetune
    from tunelab.tasks.classification import load_splits

    overrides = saved_overrides(spec["base"]) | spec["overrides"].get(strategy, {})
    overrides |= {"strategy": strategy, "run.output_dir": str(runs), "run.name": strategy}
    overrides["run.predict"] = []
    if (runs / f".{strategy}.partial" / "config.yaml").is_file():
        overrides["run.resume"] = True
    cfg = build_config(overrides=overrides)
    if (runs / strategy / "metrics.json").is_file():  # trained; only measuring was lost
        metrics = json.loads((runs / strategy / "metrics.json").read_text())
    else:
        metrics = finetune(cfg).metrics
    run_dir = runs / strategy
    test = load_splits(cfg.data, cfg.train.seed, quiet=True)["test"]
    test_texts = [e["text"] for e in test]
    lat = measure_latency(run_dir, test_texts[: spec["latency_examples"]])
    train = metrics["train"]
    return dict(
        status="ok",
        accuracy=metrics["test"]["accuracy"],
        macro_f1=metrics["test"]["macro_f1"],
        trainable_params=train["trainable_params"],
        total_params=train["total_params"],
        trainable_pct=round(100 * train["trainable_params"] / train["total_params"], 4),
        train_seconds=train["seconds"],
        peak_memory_mib=train.get("peak_memory_mib"),
        checkpoint_mib=round(folder_bytes(run_dir) / 2**20, 2),
        steps=train["steps"],
        best_validation=train.get("best_validation"),
        **lat,
        warnings=metrics.get("warnings", []),
        baselines=metrics.get("baselines"),
    )


def run_worker(report: Path, strategy: str) -> None:
    """Fine-tune one strategy into `report/runs/STRATEGY` (or, for a zero-shot row, ask the
    shared model untrained: `recipes.zero_shot.compare_row`) and write its result JSON."""
    from tunelab.tasks.zero_shot import ROWS

    spec = json.loads((report / "plan.json").read_text())
    result_path = report / "results" / f"{strategy}.json"
    t0 = time.perf_counter()
    record: dict[str, Any] = {"strategy": strategy, "status": "failed"}
    try:
        if strategy in ROWS:
            from tunelab.recipes.finetune import peak_memory_mib
            from tunelab.recipes.zero_shot import compare_row

            record.update(compare_row(spec, strategy), peak_memory_mib=peak_memory_mib())
        else:
            record.update(finetuned_row(spec, strategy, report / "runs"))
    except TunelabError as exc:
        record["reason"] = str(exc)
    except Exception as exc:  # a strategy's bug must not stop the comparison: record it
        record["reason"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    record["wall_seconds"] = round(time.perf_counter() - t0, 1)
    _write_json(result_path, record)
    if record["status"] != "ok":
        print(f"tunelab compare: {strategy} failed: {record['reason']}", file=sys.stderr)


def compare(
    cc: CompareConfig, base: dict[str, Any], quiet: bool = False
) -> tuple[Path, list[dict[str, Any]]]:
    """Run every strategy not yet done, then write the report; returns (folder, rows)."""
    report = Path(cc.output_dir)
    (report / "results").mkdir(parents=True, exist_ok=True)
    plan = {
        "base": base,
        "overrides": cc.overrides,
        "latency_examples": cc.latency_examples,
        "strategies": cc.strategies,
    }
    plan_path = report / "plan.json"
    if plan_path.is_file():
        old = json.loads(plan_path.read_text())
        if old["base"] != base:
            raise TunelabError(
                f"{report} holds a comparison with another shared config: pick another "
                "--output (or delete the folder) to start a new one"
            )
    _write_json(plan_path, plan)
    (report / "base.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    for i, strategy in enumerate(cc.strategies, 1):
        result = report / "results" / f"{strategy}.json"
        if result.is_file() and json.loads(result.read_text()).get("status") == "ok":
            if not quiet:
                print(f"[{i}/{len(cc.strategies)}] {strategy}: done before, skipped", flush=True)
            continue
        if not quiet:
            print(f"\n[{i}/{len(cc.strategies)}] {strategy}", flush=True)
        cmd = [sys.executable, "-m", "tunelab.recipes.compare", "--worker", str(report), strategy]
        proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL if quiet else None)
        if proc.returncode != 0 and not result.is_file():
            _write_json(
                result,
                {
                    "strategy": strategy,
                    "status": "failed",
                    "reason": f"worker exited with code {proc.returncode} (killed: out of memory?)",
                },
            )
    rows = [
        json.loads((report / "results" / f"{s}.json").read_text())
        for s in cc.strategies
        if (report / "results" / f"{s}.json").is_file()
    ]
    write_report(report, base, rows, report_baselines(base, rows))
    return report, rows


def report_baselines(base: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The baselines of the shared split: as a strategy's finetune measured them, else (every
    strategy failed, or their results predate baselines) fitted here on the same split."""
    for r in rows:
        if r.get("status") == "ok" and r.get("baselines"):
            return r["baselines"]
    from tunelab.data.split import check_labels
    from tunelab.evaluation.baselines import fit_baselines
    from tunelab.tasks.classification import load_splits

    cfg = resolved(base)
    try:
        splits = load_splits(cfg.data, cfg.train.seed, quiet=True)
        if not splits["test"]:
            return {}
        return fit_baselines(splits["train"], splits["test"], check_labels(splits["train"]))[0]
    except TunelabError:  # the data fails every strategy too: their rows say why
        return {}


def resolved(base: dict[str, Any]):
    """The shared finetune Config of a comparison (defaults filled in: batch size, budget)."""
    from tunelab.config.finetune import build_config

    return build_config(overrides=saved_overrides(base))


def data_title(d) -> str:
    """The data a comparison really ran on, as file names (DataOptions `d`)."""

    def name(source: str) -> str:
        return source if source.startswith("hub:") or "/" not in source else Path(source).name

    if not d.train_file:
        return name(d.source) + (f" (a sample of {d.limit})" if d.limit else "")
    files = [name(d.train_file)]
    files += [name(f) for f in (d.validation_file, d.test_file) if f]
    return " + ".join(files) + ("" if d.test_file else " (test cut from the training file)")


def machine() -> str:
    import torch

    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {dev}, "
        f"torch {torch.__version__}"
    )


def _fmt(v: Any, spec: str) -> str:
    return "" if v is None else format(v, spec)


def markdown_table(rows: list[dict[str, Any]], baselines: dict[str, Any] | None = None) -> str:
    """The comparison as a Markdown table: the strategies, the baselines of the same split
    (majority class, TF-IDF + logistic regression), then failed strategies with their reason."""
    from tunelab.evaluation.baselines import MAJORITY, TFIDF, TITLES

    head = (
        "| strategy | accuracy | macro-F1 | trainable params | trainable % | train time (s) "
        "| whole run (s) | peak memory (MiB) | checkpoint (MiB) | latency (ms/example) |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in rows:
        if r["status"] != "ok":
            continue
        lines.append(
            f"| {r['strategy']} | {100 * r['accuracy']:.2f}% | {r['macro_f1']:.4f} "
            f"| {r['trainable_params']:,} | {r['trainable_pct']:.2f} "
            f"| {_fmt(r['train_seconds'], '.0f')} | {_fmt(r.get('wall_seconds'), '.0f')} "
            f"| {_fmt(r['peak_memory_mib'], ',.0f')} "
            f"| {r['checkpoint_mib']:.2f} | {r['latency_ms_median']:.1f} |"
        )
    for key in (TFIDF, MAJORITY):
        b = (baselines or {}).get(key)
        if not b:
            continue
        title = TITLES[key] + (f" ({b['predicts']!r})" if key == MAJORITY else "")
        lines.append(
            f"| *baseline: {title}* | {100 * b['accuracy']:.2f}% | {b['macro_f1']:.4f} "
            f"| | | {_fmt(b.get('fit_seconds'), '.1f')} | | | | |"
        )
    return with_failures(head, lines, rows, "strategy")


def report_meta(base: dict[str, Any]) -> dict[str, Any]:
    """What the comparison really ran on: model, data files, budget, batch size, seed."""
    cfg = resolved(base)
    t, d = cfg.train, cfg.data
    budget = f"{t.max_steps} steps" if t.max_steps else f"{t.epochs:g} epochs"
    batch = f"{t.batch_size}" + (f" x {t.grad_accum} accumulated" if t.grad_accum > 1 else "")
    files = {"train": d.train_file, "validation": d.validation_file, "test": d.test_file}
    files = {k: v for k, v in files.items() if v} if d.train_file else {"source": d.source}
    return {
        "model": cfg.model.name,
        "data": data_title(d),
        "data_files": {k: v for k, v in files.items() if v}
        if d.train_file
        else {"source": d.source},
        "budget": budget,
        "batch_size": t.batch_size,
        "batch": batch,
        "seed": t.seed,
        "machine": machine(),
        "written": time.strftime("%Y-%m-%d %H:%M"),
    }


def write_report(
    report: Path,
    base: dict[str, Any],
    rows: list[dict[str, Any]],
    baselines: dict[str, Any] | None = None,
) -> None:
    """report.md, report.json and the two trade-off plots (baselines as reference lines)."""
    from tunelab.evaluation.baselines import MAJORITY, TFIDF, TITLES
    from tunelab.evaluation.plots import plot_tradeoffs

    meta = report_meta(base)
    baselines = baselines or {}
    shown = [{k: v for k, v in r.items() if k != "baselines"} for r in rows]
    _write_json(report / "report.json", {"meta": meta, "results": shown, "baselines": baselines})
    ok = [r for r in shown if r["status"] == "ok"]
    lines = {
        f"{TITLES[k]}" + (" (chance level)" if k == MAJORITY else ""): baselines[k]["macro_f1"]
        for k in (TFIDF, MAJORITY)
        if k in baselines
    }
    # a zero-shot row trains no parameter: it has no place on a log axis, only on the time one
    points = [r | {"trainable_params": None} if r["trainable_params"] == 0 else r for r in ok]
    plots = plot_tradeoffs(points, report, lines) if ok else []
    zero = [r["strategy"] for r in ok if r.get("zero_shot")]
    sources = ", ".join(f"{k} `{v}`" for k, v in meta["data_files"].items())
    warned = [f"- **{r['strategy']}**: {w}" for r in ok for w in r.get("warnings") or []]
    text = (
        f"# Strategy comparison: {meta['model']} on {meta['data']}, {meta['budget']} of batch "
        f"{meta['batch']}\n\n"
        f"Same data split ({sources}), seed {meta['seed']} and budget ({meta['budget']}, batch "
        f"{meta['batch']}) for every strategy; accuracy and macro-F1 on the held-out "
        f"test split. Machine: {meta['machine']}. Written {meta['written']}.\n\n"
        + markdown_table(shown, baselines)
        + ("\nWarnings:\n\n" + "\n".join(warned) + "\n" if warned else "")
        + "\nColumns: *train time*, the training loop (for `features`, with the one pass that "
        "extracts the features; for the TF-IDF baseline, fitting it); *whole run*, the "
        "strategy's process from loading the model to "
        "the saved run folder and the latency timing; *peak memory*, that process's peak "
        "resident memory (on a GPU, the allocator's peak); *checkpoint*, the weight files the "
        "run saved; *latency*, the median time to classify one test example at batch 1 with "
        "the run loaded from its folder as saved (adapters not merged). *Baselines*: fitted "
        "on the same training split and scored on the same test split; a strategy below "
        "the TF-IDF line has not earned its cost.\n"
        + (
            f"\n*Zero-shot rows* ({', '.join(zero)}) train nothing: the model as it is labels "
            "each test text from a prompt with the label names (`zero_shot`: greedy, "
            "constrained to the names; `zero_shot_likelihood`: the likeliest name after the "
            "prompt); their latency is one text at a time, prompt included.\n"
            if zero
            else ""
        )
        + "".join(f"\n![{p.stem}]({p.name})\n" for p in plots)
    )
    (report / "report.md").write_text(text)


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "--worker":
        from tunelab.logs import quiet_libraries

        quiet_libraries()
        run_worker(Path(argv[1]), argv[2])
        return 0
    print("usage: python -m tunelab.recipes.compare --worker REPORT_DIR STRATEGY", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))


__all__ = ["compare"]
