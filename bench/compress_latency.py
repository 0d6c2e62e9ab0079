"""Inference speed of every output of `tunelab compress` against the fp32 run and against
onnxruntime, on the same inputs, in one process, printing ratios.

What is measured
    For a compress report folder (`tunelab compress RUN --output DIR`), on the first
    `--examples` texts of the run's own test split, truncated as the run was trained:
    - `fp32`: the source run, plain fp32 (no autocast), what `from_pretrained` gives a user;
    - `tunelab`: the source run as `tunelab predict` runs it (bf16 autocast where the CPU has
      native bf16);
    - `onnxruntime`: the run exported to ONNX and run by onnxruntime (CPUExecutionProvider) —
      what a user deploying to CPU would pick instead; the report's `onnx` output when it has
      one, else exported here into a temporary folder;
    - every output run of the report, opened as `tunelab predict` opens it.

    Each model, in turn, classifies every text one at a time (batch 1), then all of them in
    batches of 32, in one block (its weights stay in cache, as when it is deployed alone).
    The blocks repeat for `--rounds` rounds, every other round in reverse order, so drift on
    the shared machine hits every model alike: median ms per example at batch 1 and median
    examples/s at batch 32 over all rounds. Three warm-up calls per model first.

    Ratios are against `fp32` (>1: faster) and against `onnxruntime`.

Run
    .venv/bin/python bench/compress_latency.py reports/compress
    .venv/bin/python bench/compress_latency.py reports/compress --examples 32 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path


def time_blocks(names, call, singles, batches, n_texts: int, rounds: int) -> dict[str, dict]:
    """{name: {ms_b1, ex_per_s_b32}}: each model runs all its texts in one block (its weights
    stay in cache, as when it is deployed alone), one at a time then in `batches`; the blocks
    repeat for `rounds` rounds, every other round in reverse order, so drift on the shared
    machine hits every model alike; medians over everything."""
    b1: dict[str, list[float]] = {n: [] for n in names}
    b32: dict[str, list[float]] = {n: [] for n in names}
    for rnd in range(rounds):
        for name in names if rnd % 2 == 0 else list(reversed(names)):
            for b in singles:
                t0 = time.perf_counter()
                call(name, b)
                b1[name].append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            for b in batches:
                call(name, b)
            b32[name].append(n_texts / (time.perf_counter() - t0))
    return {
        n: {"ms_b1": statistics.median(b1[n]), "ex_per_s_b32": statistics.median(b32[n])}
        for n in names
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", help="a report folder written by tunelab compress")
    ap.add_argument("--examples", type=int, default=48, help="test texts timed (default 48)")
    ap.add_argument("--rounds", type=int, default=3, help="batch-32 rounds (default 3)")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args(argv)

    import torch

    from tunelab.logs import quiet_libraries
    from tunelab.recipes.compress_source import open_source
    from tunelab.runs.marker import MARKER_FILE, is_run
    from tunelab.runs.open import open_classifier
    from tunelab.tasks.classification import autocast_for

    quiet_libraries()
    report = Path(a.report)
    plan = json.loads((report / "plan.json").read_text())
    source = open_source(plan["run"])
    if source.generative:
        print("this bench times classifiers; for language models see bench/generate_throughput.py")
        return 2
    texts = [e["text"] for e in source.splits()["test"][: a.examples]]
    model, tok, marker = open_classifier(source.run)
    length = marker.context_length
    models: dict[str, tuple[object, bool]] = {"fp32": (model, False), "tunelab": (model, True)}
    onnx_run = report / "runs" / "onnx"
    tmp = None
    if not is_run(onnx_run):
        from tunelab.compress.export import OnnxClassifier, to_onnx

        tmp = tempfile.TemporaryDirectory()
        path = to_onnx(model, tok, Path(tmp.name) / "model.onnx")
        models["onnxruntime"] = (OnnxClassifier(path, model.config), False)
    else:
        models["onnxruntime"] = (open_classifier(onnx_run)[0], False)
    for run in sorted((report / "runs").glob(f"*/{MARKER_FILE}")):
        name = run.parent.name
        if name != "onnx":
            models[name] = (open_classifier(run.parent)[0], True)

    def encode(batch):
        return dict(
            tok(batch, truncation=True, max_length=length, padding=True, return_tensors="pt")
        )

    def call(name, batch):
        m, auto = models[name]
        with torch.inference_mode(), autocast_for(m) if auto else nullcontext():
            m(**batch)

    singles = [encode([t]) for t in texts]
    for name in models:
        for b in singles[:3]:
            call(name, b)
    batches = [encode(texts[i : i + 32]) for i in range(0, len(texts), 32)]
    rows = time_blocks(list(models), call, singles, batches, len(texts), a.rounds)
    f, o = rows["fp32"], rows["onnxruntime"]
    print(f"{len(texts)} texts, max_length {length}, torch threads {torch.get_num_threads()}")
    head = ("model", "ms/ex b1", "vs fp32", "vs ORT", "ex/s b32", "vs fp32", "vs ORT")
    print("{:<18} {:>9} {:>8} {:>7} {:>9} {:>8} {:>7}".format(*head))
    for n, r in rows.items():
        ms, ex = r["ms_b1"], r["ex_per_s_b32"]
        print(
            f"{n:<18} {ms:9.2f} {f['ms_b1'] / ms:7.2f}x {o['ms_b1'] / ms:6.2f}x "
            f"{ex:9.1f} {ex / f['ex_per_s_b32']:7.2f}x {ex / o['ex_per_s_b32']:6.2f}x"
        )
    if a.json:
        Path(a.json).write_text(json.dumps({"examples": len(texts), "rows": rows}, indent=2))
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
