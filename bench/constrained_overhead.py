"""Constrained generation's cost: tokens/s with and without a JSON-schema constraint.

SmolLM2-135M-Instruct (embedded), greedy, up to `--new-tokens` new tokens per row, at batch 1
and 16, in one run: the same 16 chat prompts asking for a JSON description, decoded (a) free
(`ignore_eos`, exactly N tokens) and (b) under a JSON schema (`decoding.constraints`,
llguidance: one bitmask per step for all rows). A constrained row ends when its JSON is
complete, so rates are generated tokens / wall seconds of the whole call (prefill included).
Each configuration: a warm-up, then `--repeats` runs in alternating order, medians. Also
checks that every finished constrained output parses and validates (jsonschema); rows cut by
the token limit are counted apart. A constrained batch thins out as rows finish while the free
rows all run the full length, which lowers its aggregate rate beyond the per-step cost; so a
third mode, "free, same lengths", decodes free rows that stop at exactly the token counts the
constrained rows reached (each request its own `max_new_tokens`, through the engine): the
same tokens, batch shapes and steps, only the constraint missing. json-schema / that is the
per-token overhead the issue asks about; json-schema / free is what a user sees end to end.

Run (alone on the machine):
    .venv/bin/python bench/constrained_overhead.py                 # --dtype auto (bf16 here)
    .venv/bin/python bench/constrained_overhead.py --dtype fp32
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DOCS = Path(__file__).resolve().parents[1] / "docs"
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "colour": {"type": "string", "maxLength": 20},
        "legs": {"type": "integer", "minimum": 0, "maximum": 100},
        "facts": {"type": "array", "items": {"type": "string", "maxLength": 60}, "maxItems": 3},
    },
    "required": ["name", "colour", "legs", "facts"],
    "additionalProperties": False,
}
ANIMALS = "cat dog horse spider octopus eagle shark frog bee cow owl snake crab bat ant whale"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtype", default="auto")
    p.add_argument("--new-tokens", type=int, default=96)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path, default=DOCS / "bench-constrained-overhead.json")
    args = p.parse_args(argv)

    import jsonschema
    import transformers

    from tunelab.decoding import DecodingOptions, chat_prompt, generate
    from tunelab.decoding.constraints import Constraint
    from tunelab.decoding.driver import encode_prompts
    from tunelab.decoding.engine import Engine, Request
    from tunelab.runs.open import open_lm

    transformers.logging.set_verbosity_error()
    loaded, _ = open_lm("smollm2-135m", args.dtype, "cpu")
    model, tok = loaded.model, loaded.tokenizer
    prompts = [
        chat_prompt(tok, f"Describe a {a} as a JSON object with name, colour, legs and facts.")
        for a in ANIMALS.split()
    ]
    modes = {
        "free": DecodingOptions(max_new_tokens=args.new_tokens, ignore_eos=True),
        "json-schema": DecodingOptions(
            max_new_tokens=args.new_tokens, constraint=Constraint.json_schema(SCHEMA)
        ),
    }

    def same_lengths(ps: list[str], counts: list[int]) -> int:
        """Free rows stopping at `counts` tokens each, one batch like generate(): tokens."""
        engine = Engine(model, tok, max_batch=len(ps))
        for ids, n in zip(encode_prompts(tok, ps), counts, strict=True):
            engine.add(Request(ids, DecodingOptions(max_new_tokens=n, ignore_eos=True)))
        made = 0
        while engine.has_work():
            made += len(engine.step())
        return made

    rows, invalid, truncated, lengths = [], 0, 0, []
    for batch in args.batches:
        ps = [prompts[i % len(prompts)] for i in range(batch)]
        for opts in modes.values():  # warm-up
            outs = generate(model, tok, ps, opts, batch_size=batch)
        counts = [len(o.token_ids) for o in outs]  # the constrained run's (greedy: every run's)
        same_lengths(ps, counts)
        names = [*modes, "free-same-lengths"]
        rates: dict[str, list[float]] = {m: [] for m in names}
        for rep in range(args.repeats):
            for mode in names if rep % 2 == 0 else names[::-1]:
                start = time.perf_counter()
                if mode == "free-same-lengths":
                    made = same_lengths(ps, counts)
                    rates[mode].append(made / (time.perf_counter() - start))
                    print(f"  batch {batch:>2} {mode:<18} {rates[mode][-1]:7.1f} tokens/s")
                    continue
                outs = generate(model, tok, ps, modes[mode], batch_size=batch)
                wall = time.perf_counter() - start
                rates[mode].append(sum(len(o.token_ids) for o in outs) / wall)
                if mode == "json-schema":
                    lengths += [len(o.token_ids) for o in outs]
                    for o in outs:
                        if o.finish_reason == "length":  # cut by --new-tokens: unfinished JSON
                            truncated += 1
                            continue
                        try:
                            jsonschema.validate(json.loads(o.text), SCHEMA)
                        except (ValueError, jsonschema.ValidationError):
                            invalid += 1
                print(f"  batch {batch:>2} {mode:<18} {rates[mode][-1]:7.1f} tokens/s", flush=True)
        free, con, same = (statistics.median(rates[m]) for m in names)
        rows.append(
            {
                "batch": batch,
                "free": round(free, 2),
                "json_schema": round(con, 2),
                "free_same_lengths": round(same, 2),
                "per_token_ratio": round(con / same, 3),
                "end_to_end_ratio": round(con / free, 3),
            }
        )
        print(
            f"batch {batch:>2}: free {free:.1f}, json-schema {con:.1f}, free at the same lengths"
            f" {same:.1f} tokens/s: per-token overhead {con / same:.2f}x (target >= 0.9x),"
            f" end to end {con / free:.2f}x"
        )
    print(
        f"constrained outputs: {invalid} invalid among the finished, {truncated} cut at"
        f" {args.new_tokens} tokens; median length {statistics.median(lengths):.0f} tokens"
        " (free rows all run the full length, so a constrained batch thins out at its end)"
    )
    result = {"dtype": args.dtype, "rows": rows, "invalid": invalid, "truncated": truncated}
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
