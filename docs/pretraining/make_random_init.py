"""The random-initialisation baseline of docs/pretraining.md: a `small` (or `tiny`) BERT (the same
architecture and WordPiece tokenizer as the MLM run) with untrained weights, saved as a model
folder that `tunelab finetune --model` opens.

usage: python docs/pretraining/make_random_init.py PRETRAIN_RUN OUT_DIR [PRESET]
"""

from __future__ import annotations

import sys

import torch
from transformers import AutoTokenizer, BertModel

from tunelab.objectives.presets import bert_config

run, out = sys.argv[1], sys.argv[2]
preset = sys.argv[3] if len(sys.argv) > 3 else "small"
tok = AutoTokenizer.from_pretrained(run)
torch.manual_seed(0)
BertModel(bert_config(preset, tok, 128)).save_pretrained(out)
tok.save_pretrained(out)
print(f"random-init {preset} BERT ({len(tok)} vocab) saved to {out}")
