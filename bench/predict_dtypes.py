"""Classifier inference per `--dtype`: `tunelab predict`'s model in each precision against plain
fp32 transformers and onnxruntime, on the same texts, in one process, printing ratios.

What is measured
    For a classification run folder (default: the newest `runs/minilm-full-*`, what `make run`
    writes), on the first `--examples` texts of the run's own test split, truncated as the run
    was trained:
    - `transformers fp32`: the run's weights as `from_pretrained` gives a user (fp32, no
      autocast): the baseline every ratio is against;
    - `tunelab <dtype>` for each of --dtypes (default fp32 bf16 int8 auto): the model
      `open_classifier(run, dtype=...)` returns (what `tunelab predict --dtype` runs);
    - `onnxruntime fp32`: the run exported to ONNX (CPUExecutionProvider), what a user deploying
      to CPU picks instead.
    Each model classifies every text one at a time (batch 1), then all of them in batches of
    32 sorted by length (as `predict` batches them), in one block; --rounds rounds in alternating
    order; median ms per example at batch 1 and median examples/s at batch 32. Quality: the
    accuracy on those texts and the share of labels equal to fp32's.

Run
    .venv/bin/python bench/predict_dtypes.py [RUN] [--examples 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from compress_latency import time_blocks  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", nargs="?", help="a classification run folder")
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16", "int8", "auto"])
    ap.add_argument("--json", type=Path, default=ROOT / "docs" / "bench-predict-dtypes.json")
    a = ap.parse_args(argv)
    runs = sorted((ROOT / "runs").glob("minilm-full-*"))
    run = Path(a.run) if a.run else (runs[-1] if runs else None)
    if run is None:
        print("no run folder: pass one, or `make run` first")
        return 2
    import torch
    from transformers import AutoModelForSequenceClassification

    from tunelab.compress.export import OnnxClassifier, to_onnx
    from tunelab.logs import quiet_libraries
    from tunelab.recipes.compress_source import open_source
    from tunelab.runs.open import open_classifier
    from tunelab.tasks.classification import autocast_for

    quiet_libraries()
    source = open_source(str(run))
    test = source.splits()["test"][: a.examples]
    texts, gold = [e["text"] for e in test], [e["label"] for e in test]
    plain = AutoModelForSequenceClassification.from_pretrained(run, dtype=torch.float32).eval()
    _, tok, marker = open_classifier(run)
    labels, length = marker.labels or [], marker.context_length
    models = {"transformers fp32": plain}
    for d in a.dtypes:
        models[f"tunelab {d}"] = open_classifier(run, dtype=d, device="cpu")[0]
    tmp = tempfile.TemporaryDirectory()
    models["onnxruntime fp32"] = OnnxClassifier(
        to_onnx(plain, tok, Path(tmp.name) / "m.onnx"), plain.config
    )

    def encode(batch):
        return dict(
            tok(batch, truncation=True, max_length=length, padding=True, return_tensors="pt")
        )

    def call(name, batch):
        m = models[name]
        auto = name.startswith("tunelab")
        with torch.inference_mode(), autocast_for(m) if auto else nullcontext():
            return m(**batch).logits

    singles = [encode([t]) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: len(tok(texts[i])["input_ids"]))
    batches = [encode([texts[i] for i in order[s : s + 32]]) for s in range(0, len(order), 32)]
    preds = {n: [labels[int(call(n, b).argmax(-1))] for b in singles] for n in models}
    timed = time_blocks(list(models), call, singles, batches, len(texts), a.rounds)
    base = preds["transformers fp32"]
    rows = {}
    for n in models:
        rows[n] = {
            "ms_b1": round(timed[n]["ms_b1"], 2),
            "ex_per_s_b32": round(timed[n]["ex_per_s_b32"], 1),
            "accuracy": round(
                sum(p == g for p, g in zip(preds[n], gold, strict=True)) / len(gold), 4
            ),
            "same_label_as_fp32": round(
                sum(p == q for p, q in zip(preds[n], base, strict=True)) / len(base), 4
            ),
        }
    f = rows["transformers fp32"]
    threads = torch.get_num_threads()
    print(f"{run.name}: {len(texts)} test texts, max_length {length}, threads {threads}")
    head = ("model", "ms/ex b1", "speed-up", "ex/s b32", "speed-up", "acc", "=fp32")
    print("{:<18} {:>9} {:>8} {:>9} {:>8} {:>7} {:>6}".format(*head))
    for n, r in rows.items():
        ms, ex, same = r["ms_b1"], r["ex_per_s_b32"], r["same_label_as_fp32"]
        print(
            f"{n:<18} {ms:9.2f} {f['ms_b1'] / ms:7.2f}x {ex:9.1f}"
            f" {ex / f['ex_per_s_b32']:7.2f}x {r['accuracy']:7.2%} {same:6.1%}"
        )
    a.json.write_text(
        json.dumps({"run": run.name, "examples": len(texts), "rows": rows}, indent=2) + "\n"
    )
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
