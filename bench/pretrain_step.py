"""Pre-training step speed: tunelab's MLM step against transformers' BertForMaskedLM.

What is measured
    One optimizer step (forward, backward, AdamW) of a new BERT of the `--preset` shape
    (objectives/presets.py; vocab 8,000) on a random batch of `--batch` x `--seq-len` tokens
    with 15% of positions chosen, by:

    - `transformers`: `BertForMaskedLM(input_ids, attention_mask, labels).loss` — what a user
      gets from Trainer + DataCollatorForLanguageModeling: the vocabulary-wide output layer
      at every position;
    - `tunelab`: `objectives.heads.MaskedLM` around the same model (output layer at the
      chosen positions only), which is what `tunelab pretrain --objective mlm` trains.

    Same model object, same batch, same thread count, fp32 and bf16 autocast. Each
    configuration runs 2 warm-up steps, then `--steps` steps; the table shows the mean step
    time, tokens/s (all input tokens) and the achieved GFLOP/s — FLOPs of one step counted by
    torch.utils.flop_counter — beside this machine's matmul limits (/work/shared/BASELINES.md:
    ~190 GFLOP/s fp32, ~425 bf16).

Run
    .venv/bin/python bench/pretrain_step.py --preset small          # writes nothing, prints
    .venv/bin/python bench/pretrain_step.py --preset tiny --steps 2 # smoke test
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

LIMIT_GFLOPS = {"fp32": 190.0, "bf16": 425.0}  # /work/shared/BASELINES.md, large matmuls


class _Tok:
    """What presets.bert_config reads from a tokenizer."""

    pad_token_id = 0

    def __len__(self) -> int:
        return 8000


def main() -> None:
    from transformers import BertForMaskedLM

    from tunelab.objectives.heads import MaskedLM
    from tunelab.objectives.presets import bert_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small", choices=["tiny", "small"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.0, help="hidden + attention dropout")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = BertForMaskedLM(bert_config(a.preset, _Tok(), a.seq_len, a.dropout))
    paths = {"transformers": model, "tunelab": MaskedLM(model)}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(5, 8000, (a.batch, a.seq_len))
    labels = torch.where(torch.rand(ids.shape) < 0.15, ids, -100)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}

    def step(path: str, precision: str) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = paths[path](**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()

    print(
        f"preset {a.preset}, batch {a.batch} x {a.seq_len}, dropout {a.dropout}, "
        f"{a.threads} threads"
    )
    print("| precision | path | ms/step | tokens/s | GFLOP/step | GFLOP/s | of limit | speed-up |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for precision in ("fp32", "bf16"):
        base = None
        for path in paths:
            with FlopCounterMode(display=False) as fc:
                step(path, precision)
            gflop = fc.get_total_flops() / 1e9
            step(path, precision)
            t = time.perf_counter()
            for _ in range(a.steps):
                step(path, precision)
            sec = (time.perf_counter() - t) / a.steps
            base = base or sec
            rate = gflop / sec
            print(
                f"| {precision} | {path} | {sec * 1000:.0f} | {a.batch * a.seq_len / sec:,.0f} | "
                f"{gflop:.1f} | {rate:.0f} | {rate / LIMIT_GFLOPS[precision]:.0%} | "
                f"{base / sec:.2f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
