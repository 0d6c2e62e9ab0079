"""Five samples from the CLM run of docs/pretraining.md, from headline-like prompts (top-p
sampling with transformers' generate), as Markdown on stdout.

usage: python docs/pretraining/sample_clm.py CLM_RUN
"""

from __future__ import annotations

import sys

import torch

from tunelab.models.load import load_lm

PROMPTS = [
    "President Trump said on Tuesday that",
    "The stock market",
    "Police said the suspect",
    "The European Union",
    "In a statement on Monday, the company",
]

loaded = load_lm(sys.argv[1])
tok, model = loaded.tokenizer, loaded.model
torch.manual_seed(0)
print("| prompt | continuation (top-p 0.9, temperature 0.8, 60 new tokens) |\n|---|---|")
for prompt in PROMPTS:
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    out = model.generate(
        ids,
        do_sample=True,
        top_p=0.9,
        temperature=0.8,
        max_new_tokens=60,
        pad_token_id=tok.pad_token_id,
    )
    text = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).replace("\n", " ")
    print(f"| {prompt} | {text.replace('|', '/')} |")
