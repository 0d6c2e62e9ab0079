"""Serving under load: `tunelab serve` (continuous batching) against one-at-a-time generate(),
transformers' continuous-batching manager and `transformers serve`, in one run.

What is measured
    The embedded SmolLM2-135M-Instruct (`smollm2-135m`; tunelab serve with `--dtype`, default
    fp32; the baselines in fp32), greedy, `--max-tokens` (64)
    new tokens at most per request (the server has no ignore-EOS field, so every figure counts
    the tokens actually produced), prompts = the 16 chat-templated questions of
    bench/generate_throughput.py, sent as text to /v1/completions with `stream: true`.

    - `tunelab serve smollm2-135m` runs as a subprocess on 127.0.0.1 (a free port). For each
      concurrency C in --concurrency (1, 4, 16, 32), C client tasks (httpx.AsyncClient) each
      send --requests (4) requests one after another. Per level: aggregate tokens/s (completion
      tokens of all requests / wall time of the level), p50/p95 latency (send to last byte),
      p50/p95 time to first token (send to the first chunk with text), and tokens per
      CPU-second of the server process (its user+system time over the level: on a shared,
      busy machine the steadier figure).
    - baseline: one-at-a-time `model.generate()` (transformers, greedy) on the same prompts in
      this process, while the server is idle: tokens/s and tokens per CPU-second.
    - transformers' continuous batching: `model.generate_batch(16 prompts)` (the
      ContinuousBatchingManager, paged attention) in this process: tokens/s, compared with
      tunelab at concurrency 16.
    - `transformers serve FOLDER --continuous-batching --device cpu` (subprocess), the same
      client load at each concurrency (--hf-concurrency; skipped with --no-hf-serve).

    The server and the in-process runs never overlap, so they do not share the CPUs. --threads
    sets the torch threads of everything (default: torch's).

Replicas (--replicas 1 2)
    Instead of the above: `tunelab serve smollm2-135m` with one plain process (1) and with
    `--replicas N` on Ray Serve (N > 1, torch threads = cores / N in each), the same client
    load at 16 and 32 clients (--concurrency): aggregate tokens/s and p95 latency per replica
    count, and their ratios to 1 replica. On a 2-core machine two replicas share the same two
    cores (one thread each instead of two for one), so expect little or no gain, maybe a loss
    to Ray's proxy hop: the point there is that it works; a many-core server or a GPU box,
    where one process cannot use the whole machine, is where replicas add throughput.

Run
    .venv/bin/python bench/serve_load.py                 # full: writes docs/bench-serve-load.json
    .venv/bin/python bench/serve_load.py --quick         # a check: small counts, short outputs
    .venv/bin/python bench/serve_load.py --replicas 1 2  # docs/bench-serve-replicas.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate_throughput import QUESTIONS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 32])
    p.add_argument("--requests", type=int, default=4, help="requests per client")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--baseline-requests", type=int, default=8, help="one-at-a-time generate()s")
    p.add_argument("--max-running", type=int, default=32, help="tunelab serve --max-running")
    p.add_argument("--dtype", default="fp32", help="tunelab serve --dtype (default: fp32)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--hf-concurrency", type=int, nargs="+", default=[1, 16])
    p.add_argument("--no-hf-serve", action="store_true", help="skip `transformers serve`")
    p.add_argument("--no-hf-cb", action="store_true", help="skip transformers' generate_batch")
    p.add_argument("--quick", action="store_true", help="a check: 1 request per client, 16 tokens")
    p.add_argument(
        "--replicas", type=int, nargs="+", help="compare these replica counts instead (1 2)"
    )
    p.add_argument("--model", default="smollm2-135m", help="--replicas: the model served")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--plot", type=Path, default=DOCS / "serving" / "load.png")
    a = p.parse_args(argv)
    if a.replicas and a.concurrency == [1, 4, 16, 32]:
        a.concurrency = [16, 32]
    if a.json is None:
        a.json = DOCS / ("bench-serve-replicas.json" if a.replicas else "bench-serve-load.json")
    if a.quick:
        a.requests, a.max_tokens, a.baseline_requests = 1, 16, 2
        a.hf_concurrency = [1, 4]
    return a


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children so far."""
    import psutil

    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


class Server:
    """A server subprocess on 127.0.0.1, ready when `ready_path` answers 200."""

    def __init__(self, cmd: list[str], port: int, ready_path: str, env: dict, log: Path) -> None:
        import httpx

        self.base = f"http://127.0.0.1:{port}"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.proc = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.tail()}")
            try:
                if httpx.get(self.base + ready_path, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server not ready after 300 s: {self.tail()}")
            time.sleep(0.5)

    def tail(self) -> str:
        lines = self.log.read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-3:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


async def one_request(client, base: str, prompt: str, max_tokens: int) -> dict:
    body = {
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    first, chunks, usage = None, 0, None
    async with client.stream("POST", base + "/v1/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            data = json.loads(line[6:])
            if "error" in data:
                raise RuntimeError(f"stream error: {data['error']}")
            if data.get("usage"):
                usage = data["usage"].get("completion_tokens")
            for c in data.get("choices") or []:
                if c.get("text"):
                    chunks += 1
                    if first is None:
                        first = time.perf_counter() - start
    latency = time.perf_counter() - start
    return {
        "latency": latency,
        "ttft": first if first is not None else latency,
        "tokens": usage if usage is not None else chunks,
    }


async def load_level(
    base: str, prompts: list[str], clients: int, per_client: int, max_tokens: int
) -> tuple[list[dict], float]:
    import httpx

    async def client_task(c: int, client) -> list[dict]:
        out = []
        for k in range(per_client):
            prompt = prompts[(c * per_client + k) % len(prompts)]
            out.append(await one_request(client, base, prompt, max_tokens))
        return out

    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(900.0), limits=limits) as client:
        start = time.perf_counter()
        results = await asyncio.gather(*(client_task(c, client) for c in range(clients)))
        wall = time.perf_counter() - start
    return [r for rs in results for r in rs], wall


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def drive(server: Server, name: str, prompts: list[str], levels: list[int], args) -> list[dict]:
    from tqdm import tqdm

    asyncio.run(load_level(server.base, prompts, 1, 1, 4))  # warm-up
    rows = []
    for clients in tqdm(levels, desc=name, unit="level"):
        cpu0 = cpu_seconds(server.proc.pid)
        reqs, wall = asyncio.run(
            load_level(server.base, prompts, clients, args.requests, args.max_tokens)
        )
        cpu = cpu_seconds(server.proc.pid) - cpu0
        tokens = sum(r["tokens"] for r in reqs)
        lat, ttft = [r["latency"] for r in reqs], [r["ttft"] for r in reqs]
        row = {
            "server": name,
            "concurrency": clients,
            "requests": len(reqs),
            "tokens": tokens,
            "seconds": round(wall, 3),
            "tokens_per_s": round(tokens / wall, 2),
            "tokens_per_cpu_s": round(tokens / cpu, 2) if cpu > 0 else None,
            "latency_p50": round(pct(lat, 50), 3),
            "latency_p95": round(pct(lat, 95), 3),
            "ttft_p50": round(pct(ttft, 50), 3),
            "ttft_p95": round(pct(ttft, 95), 3),
        }
        tqdm.write(
            f"  {name:<18} C={clients:>2}  {row['tokens_per_s']:7.1f} tok/s "
            f"({row['tokens_per_cpu_s']} per CPU-s)  latency p50 {row['latency_p50']:.2f} s "
            f"p95 {row['latency_p95']:.2f} s  TTFT p50 {row['ttft_p50']:.2f} s p95 "
            f"{row['ttft_p95']:.2f} s"
        )
        rows.append(row)
    return rows


def baseline(model, tok, prompts: list[str], args) -> dict:
    """One request at a time through transformers' generate(), greedy."""
    import torch

    model.generate(**tok(prompts[0], return_tensors="pt"), max_new_tokens=4, do_sample=False)
    tokens, wall, cpu = 0, 0.0, 0.0
    for i in range(args.baseline_requests):
        enc = tok(prompts[i % len(prompts)], return_tensors="pt")
        t, c = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            out = model.generate(
                **enc,
                max_new_tokens=args.max_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )
        wall += time.perf_counter() - t
        cpu += time.process_time() - c
        tokens += out.shape[1] - enc["input_ids"].shape[1]
    return {
        "requests": args.baseline_requests,
        "tokens": tokens,
        "seconds": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 2),
        "tokens_per_cpu_s": round(tokens / cpu, 2),
    }


def hf_continuous(model, tok, prompts: list[str], n: int, args) -> dict:
    """transformers' ContinuousBatchingManager through model.generate_batch (n prompts)."""
    from transformers import GenerationConfig

    ids = [list(tok(prompts[i % len(prompts)])["input_ids"]) for i in range(n)]
    cfg = GenerationConfig(
        max_new_tokens=args.max_tokens,
        do_sample=False,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model.generate_batch(ids[:2], generation_config=cfg, max_new_tokens=4, warmup=False)
    t, c = time.perf_counter(), time.process_time()
    out = model.generate_batch(
        ids, generation_config=cfg, max_new_tokens=args.max_tokens, warmup=False
    )
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    tokens = sum(len(o.generated_tokens) for o in out.values())
    return {
        "requests": n,
        "tokens": tokens,
        "seconds": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 2),
        "tokens_per_cpu_s": round(tokens / cpu, 2),
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    cb = results.get("hf_generate_batch")
    for ax, key, label in (
        (axes[0], "tokens_per_s", "aggregate generated tokens/s"),
        (axes[1], "tokens_per_cpu_s", "generated tokens per server CPU-second"),
    ):
        levels = sorted({r["concurrency"] for r in results["load"]})
        for name in sorted({r["server"] for r in results["load"]}):
            rows = [r for r in results["load"] if r["server"] == name]
            ax.plot([r["concurrency"] for r in rows], [r[key] for r in rows], "o-", label=name)
        ax.axhline(
            results["baseline_generate"][key],
            color="grey",
            ls="--",
            lw=1,
            label="generate(), one at a time",
        )
        if isinstance(cb, dict):
            ax.plot(
                [cb["requests"]],
                [cb[key]],
                "s",
                color="black",
                label=f"transformers generate_batch ({cb['requests']})",
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"SmolLM2-135M, tunelab {results['dtype']}, greedy, max_tokens {results['max_tokens']}, "
        f"{results['threads']} thread(s)"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def compare_replicas(args) -> None:
    """`--replicas 1 2`: the same load against 1 plain process and N Ray Serve replicas."""
    from tunelab.decoding import chat_prompt
    from tunelab.models.load import load_lm

    tok = load_lm(args.model).tokenizer
    prompts = [chat_prompt(tok, q) for q in QUESTIONS]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cores = os.cpu_count() or 1
    results: dict = {"model": args.model, "dtype": args.dtype, "max_tokens": args.max_tokens}
    results |= {"cpus": cores, "load_average": os.getloadavg(), "quick": args.quick, "rows": []}
    for n in args.replicas:
        port = free_port()
        cmd = [sys.executable, "-m", "tunelab.cli", "serve", args.model, "--port", str(port)]
        cmd += ["--max-queue", "1024", "--request-timeout", "3600", "--dtype", args.dtype]
        cmd += ["--max-running", str(args.max_running), "--replicas", str(n)]
        cmd += ["--log-level", "warning"]
        started = time.perf_counter()
        server = Server(cmd, port, "/ready", env, ROOT / "reports" / "serve-load" / f"r{n}.log")
        print(f"{n} replica(s) ready in {time.perf_counter() - started:.1f} s", flush=True)
        try:
            for row in drive(server, f"{n} replica(s)", prompts, args.concurrency, args):
                results["rows"].append(row | {"replicas": n})
        finally:
            server.stop()
    one = {r["concurrency"]: r for r in results["rows"] if r["replicas"] == args.replicas[0]}
    print(f"\n{'replicas':>8} {'clients':>7} {'tok/s':>8} {'x':>6} {'p95 s':>7} {'x':>6}")
    for r in results["rows"]:
        base = one[r["concurrency"]]
        r["tokens_per_s_ratio"] = round(r["tokens_per_s"] / base["tokens_per_s"], 2)
        r["latency_p95_ratio"] = round(r["latency_p95"] / base["latency_p95"], 2)
        print(
            f"{r['replicas']:>8} {r['concurrency']:>7} {r['tokens_per_s']:>8.1f} "
            f"{r['tokens_per_s_ratio']:>5.2f}x {r['latency_p95']:>7.2f} "
            f"{r['latency_p95_ratio']:>5.2f}x"
        )
    print(
        f"\nnote: {cores} cores here; N replicas split them (torch threads = cores / N), so "
        "on a small CPU box replicas cannot add throughput and Ray's proxy adds a hop; they "
        "pay off where one process leaves cores or GPUs idle."
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {args.json}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.replicas:
        compare_replicas(args)
        return
    import torch
    import transformers

    from tunelab.decoding import chat_prompt
    from tunelab.models.load import load_lm
    from tunelab.models.sources import resolve_source

    transformers.logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    logs = ROOT / "reports" / "serve-load"
    loaded = load_lm("smollm2-135m")
    model, tok = loaded.model, loaded.tokenizer
    prompts = [chat_prompt(tok, q) for q in QUESTIONS]
    results: dict = {
        "model": "smollm2-135m (fp32)",
        "dtype": args.dtype,
        "max_tokens": args.max_tokens,
        "requests_per_client": args.requests,
        "quick": args.quick,
        "threads": torch.get_num_threads(),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    }

    print("one-at-a-time generate() ...", flush=True)
    results["baseline_generate"] = base = baseline(model, tok, prompts, args)
    print(f"  {base['tokens_per_s']} tok/s ({base['tokens_per_cpu_s']} per CPU-s)")

    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "tunelab.cli",
        "serve",
        "smollm2-135m",
        "--port",
        str(port),
        "--max-queue",
        "1024",
        "--request-timeout",
        "3600",
        "--max-running",
        str(args.max_running),
        "--dtype",
        args.dtype,
        "--log-level",
        "warning",
    ]
    server = Server(cmd, port, "/ready", env, logs / "tunelab-serve.log")
    try:
        results["load"] = drive(server, "tunelab serve", prompts, args.concurrency, args)
    finally:
        server.stop()

    if not args.no_hf_cb:
        n = 16 if 16 in args.concurrency else max(args.concurrency)
        print(f"transformers generate_batch ({n} requests) ...", flush=True)
        try:
            results["hf_generate_batch"] = cb = hf_continuous(model, tok, prompts, n, args)
            print(f"  {cb['tokens_per_s']} tok/s ({cb['tokens_per_cpu_s']} per CPU-s)")
        except Exception as exc:  # noqa: BLE001 - recorded as the reason it does not run
            results["hf_generate_batch"] = f"failed: {type(exc).__name__}: {exc}"[:300]
            print(" ", results["hf_generate_batch"])
    del model

    if not args.no_hf_serve:
        port = free_port()
        folder = str(resolve_source("smollm2-135m"))
        cli = Path(sys.executable).with_name("transformers")
        cmd = [
            str(cli),
            "serve",
            folder,
            "--continuous-batching",
            "--device",
            "cpu",
            "--dtype",
            "float32",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        try:
            hf = Server(cmd, port, "/health", env, logs / "transformers-serve.log")
            try:
                results["load"] += drive(
                    hf, "transformers serve", prompts, args.hf_concurrency, args
                )
            finally:
                hf.stop()
        except Exception as exc:  # noqa: BLE001 - recorded as the reason it does not run
            results["hf_serve"] = f"failed: {type(exc).__name__}: {exc}"[:400]
            print(" ", results["hf_serve"])

    ours = {r["concurrency"]: r for r in results["load"] if r["server"] == "tunelab serve"}
    print(f"\n{'clients':>7}  {'tok/s':>7}  {'x generate()':>12}  {'per CPU-s x':>11}")
    for c, r in ours.items():
        ratio = r["tokens_per_s"] / base["tokens_per_s"]
        cpu_ratio = (r["tokens_per_cpu_s"] or 0) / base["tokens_per_cpu_s"]
        results[f"ratio_c{c}"] = round(ratio, 2)
        results[f"cpu_ratio_c{c}"] = round(cpu_ratio, 2)
        print(f"{c:>7}  {r['tokens_per_s']:>7.1f}  {ratio:>11.2f}x  {cpu_ratio:>10.2f}x")
    cb = results.get("hf_generate_batch")
    if isinstance(cb, dict) and cb["requests"] in ours:
        r = ours[cb["requests"]]
        results["ratio_vs_generate_batch"] = round(r["tokens_per_s"] / cb["tokens_per_s"], 2)
        print(
            f"tunelab serve at {cb['requests']} clients / transformers generate_batch: "
            f"{results['ratio_vs_generate_batch']}x"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.plot)
    print(f"results written to {args.json} and {args.plot}")


if __name__ == "__main__":
    main()
