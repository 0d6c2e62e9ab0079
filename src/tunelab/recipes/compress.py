"""`tunelab compress RUN --methods ...`: quantize, prune, distill and export a run, and show what
each one costs and saves, beside the original.

Each method runs in processes of its own (one makes the output run folder, a fresh one loads
and measures it), so a method's peak memory is its own and a crash ends only that method.
Report folder:

    plan.json              the source run and the options
    runs/METHOD/           each method's output, a run folder predict / eval / serve open
    results/METHOD.json    what was measured (or why it failed)
    report.md, report.json the table, beside the original run's row
    quality-vs-latency.png, quality-vs-size.png

Re-running with the same options skips methods already measured.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tunelab.compress.options import DistillOptions
from tunelab.config.compress import CompressConfig, CompressOptions
from tunelab.errors import TunelabError
from tunelab.evaluation.tables import with_failures
from tunelab.logs import say
from tunelab.recipes.compress_source import Source, open_source
from tunelab.runs.workdir import write_json, write_text

ORIGINAL, ORIGINAL_FP32 = "original", "original-fp32"
"""The source run as tunelab runs it (bf16 autocast where the CPU has native bf16) and in
plain fp32: the two references every method is compared with."""


def _result(report: Path, spec: str) -> Path:
    return report / "results" / f"{spec}.json"


def run_worker(report: Path, spec: str, step: str) -> None:
    """One step of one method in this process: `produce` its run folder, or `measure` it."""
    from tunelab.compress import parse_method
    from tunelab.recipes.compress_apply import produce
    from tunelab.recipes.compress_measure import measure
    from tunelab.runs.marker import read_marker

    plan = json.loads((report / "plan.json").read_text())
    cfg = CompressConfig(
        CompressOptions(**plan["options"]["compress"]), DistillOptions(**plan["options"]["distill"])
    )
    opts = cfg.compress
    source = open_source(plan["run"])
    record: dict[str, Any] = {"method": spec, "status": "failed"}
    t0 = time.perf_counter()
    # a measure step's record (ok or failed) is the method's result; produce has its own
    path = (
        _result(report, spec) if step == "measure" else report / "results" / f"{spec}.{step}.json"
    )
    try:
        if step == "produce":
            produce(spec, source, report / "runs", cfg, quiet=False)
            record = {"method": spec, "status": "ok"}
        else:
            original = spec in (ORIGINAL, ORIGINAL_FP32)
            run = source.run if original else report / "runs" / spec
            record.update(measure(run, source, opts, spec != ORIGINAL_FP32), status="ok")
            if not original:
                comp = read_marker(run).compression or {}
                record["kind"] = parse_method(spec).name
                record["details"] = {k: v for k, v in comp.items() if k not in ("source",)}
    except TunelabError as exc:
        record["reason"] = str(exc)
    except Exception as exc:  # a method's bug must not stop the others: record it
        record["reason"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    record[f"{step}_seconds"] = round(time.perf_counter() - t0, 1)
    write_json(path, record)
    if record["status"] != "ok":
        print(f"tunelab compress: {spec} failed: {record['reason']}", file=sys.stderr)


def _spawn(report: Path, spec: str, step: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "tunelab.recipes.compress", "--worker", str(report), spec, step]
    subprocess.run(cmd, check=False)
    path = report / "results" / (f"{spec}.json" if step == "measure" else f"{spec}.{step}.json")
    if not path.is_file():
        return {"method": spec, "status": "failed", "reason": f"the {step} process died"}
    return json.loads(path.read_text())


def _without_methods(plan: dict[str, Any]) -> dict[str, Any]:
    """The plan less the method list (adding or dropping a method keeps the others' results)."""
    compress = {k: v for k, v in plan["options"]["compress"].items() if k != "methods"}
    return {**plan, "options": {**plan["options"], "compress": compress}}


def compress(run: str | Path, cfg: CompressConfig | None = None, quiet: bool = False):
    """Apply every method of `cfg` to `run` (skipping those already measured with the same
    options), measure each beside the original, write the report; returns (folder, rows).

    Raises:
        TunelabError: the source is not a finished fine-tuning run, or a bad option.
    """
    cfg = cfg or CompressConfig()
    opts = cfg.compress
    source = open_source(run)
    report = Path(opts.output_dir)
    try:
        (report / "results").mkdir(parents=True, exist_ok=True)
    except (NotADirectoryError, FileExistsError, PermissionError) as exc:
        raise TunelabError(f"cannot create --output {report} ({exc.strerror})") from None
    plan = {"run": str(source.run.resolve()), "options": dataclasses.asdict(cfg)}
    old = report / "plan.json"
    if old.is_file() and _without_methods(json.loads(old.read_text())) != _without_methods(plan):
        # another run or other options: nothing made or measured before still holds
        for path in (report / "results").glob("*.json"):
            path.unlink()
        shutil.rmtree(report / "runs", ignore_errors=True)
    write_json(old, plan)
    rows = []
    refs = [ORIGINAL] if source.generative else [ORIGINAL, ORIGINAL_FP32]
    for spec in [*refs, *opts.methods]:
        done = _result(report, spec)
        if done.is_file() and json.loads(done.read_text()).get("status") == "ok":
            say(f"{spec}: measured before, reusing {done}", quiet)
            rows.append(json.loads(done.read_text()))
            continue
        if spec not in refs:
            made = _spawn(report, spec, "produce")
            if made["status"] != "ok":
                rows.append({**made, "kind": spec})
                write_json(done, rows[-1])
                continue
        say(f"{spec}: measuring", quiet)
        rows.append(_spawn(report, spec, "measure"))
    write_report(report, source, rows)
    return report, rows


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else ""


def markdown_table(rows: list[dict[str, Any]], generative: bool) -> str:
    """The methods beside the original: quality, size, parameters, memory, speed (and ratios)."""
    ok = {r["method"]: r for r in rows if r["status"] == "ok"}
    base, fp32 = ok.get(ORIGINAL, {}), ok.get(ORIGINAL_FP32, {})
    if generative:
        head = (
            "| method | perplexity | BLEU | chrF | size (MiB) | smaller | params "
            "| peak memory (MiB) | tokens/s b1 | speed-up b1 | tokens/s batch | speed-up batch |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        )
    else:
        head = (
            "| method | accuracy | Δ points | macro-F1 | size (MiB) | smaller | params "
            "| peak memory (MiB) | latency b1 (ms) | speed-up b1 | vs fp32 b1 | b32 (examples/s) "
            "| speed-up b32 |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        )
    lines = []
    for r in rows:
        if r["status"] != "ok":
            continue
        n = r.get("params") or base.get("params")  # an ONNX session: the original's architecture
        params = f"{n:,}" if n else "—"
        smaller = _ratio(base.get("size_mib"), r["size_mib"])
        if generative:
            b = next(
                (k for k in r if k.startswith("tokens_per_s_b") and k != "tokens_per_s_b1"), None
            )
            lines.append(
                f"| {r['method']} | {r['perplexity']:.2f} | {r['bleu']:.2f} | {r['chrf']:.2f} "
                f"| {r['size_mib']:.1f} | {smaller} "
                f"| {params} | {r['peak_memory_mib']:,.0f} | {r['tokens_per_s_b1']:.1f} "
                f"| {_ratio(r['tokens_per_s_b1'], base.get('tokens_per_s_b1'))} "
                f"| {r.get(b, 0):.1f} | {_ratio(r.get(b), base.get(b))} |"
            )
            continue
        delta = 100 * (r["accuracy"] - base["accuracy"]) if base else 0.0
        lines.append(
            f"| {r['method']} | {100 * r['accuracy']:.2f}% | {delta:+.2f} | {r['macro_f1']:.4f} "
            f"| {r['size_mib']:.1f} | {smaller} | {params} | {r['peak_memory_mib']:,.0f} "
            f"| {r['latency_ms_b1']:.2f} | {_ratio(base.get('latency_ms_b1'), r['latency_ms_b1'])} "
            f"| {_ratio(fp32.get('latency_ms_b1'), r['latency_ms_b1'])} "
            f"| {r['examples_per_s_b32']:.1f} "
            f"| {_ratio(r['examples_per_s_b32'], base.get('examples_per_s_b32'))} |"
        )
    return with_failures(head, lines, rows, "method")


def write_report(report: Path, source: Source, rows: list[dict[str, Any]]) -> None:
    """report.md, report.json and the two plots (quality against latency and against size)."""
    from tunelab.evaluation.plots import plot_scatter
    from tunelab.recipes.compare import machine

    gen = source.generative
    meta = {
        "run": str(source.run),
        "task": source.marker.task,
        "base_model": source.marker.base_model,
        "machine": machine(),
        "written": time.strftime("%Y-%m-%d %H:%M"),
    }
    write_json(report / "report.json", {"meta": meta, "results": rows})
    ok = [r for r in rows if r["status"] == "ok"]
    y, ylabel = ("perplexity", "test perplexity") if gen else ("accuracy", "test accuracy")
    speed = (
        ("tokens_per_s_b1", "tokens/s at batch 1")
        if gen
        else ("latency_ms_b1", "latency at batch 1 (ms)")
    )
    plots = plot_scatter(
        ok,
        report,
        "method",
        y,
        ylabel,
        [
            (speed[0], speed[1], False, "quality-vs-latency.png"),
            ("size_mib", "size on disk (MiB)", False, "quality-vs-size.png"),
        ],
    )
    what = (
        "perplexity of the test responses, BLEU and chrF of greedy outputs on 50 of them"
        if gen
        else "accuracy and macro-F1"
    )
    text = (
        f"# Compression of {source.run.name} ({source.marker.base_model}, {source.marker.task})\n\n"
        f"Every method applied to the same run and measured the same way, beside the original: "
        f"{what} on the run's own test split, weight files on disk, parameters, the peak "
        "memory of the process that loaded and ran the model, and speed "
        + (
            "(greedy tokens/s, 32 new tokens)"
            if gen
            else "(median ms per example at batch 1; examples/s at batch 32)"
        )
        + f". Machine: {meta['machine']}. Written {meta['written']}.\n\n"
        + markdown_table(rows, gen)
        + "".join(f"\n![{p.stem}]({p.name})\n" for p in plots)
    )
    write_text(report / "report.md", text)


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "--worker":
        from tunelab.logs import quiet_libraries

        quiet_libraries()
        run_worker(Path(argv[1]), argv[2], argv[3])
        return 0
    print(
        "usage: python -m tunelab.recipes.compress --worker REPORT METHOD produce|measure",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
