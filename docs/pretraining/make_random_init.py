"""The random-initialisation baselines of docs/pretraining.md: the architecture (config) and
tokenizer of a pre-training run with untrained weights, saved as a model folder that
`tunelab finetune --model` opens.

usage: python docs/pretraining/make_random_init.py PRETRAIN_RUN OUT_DIR

A BERT run (mlm) gives a `BertModel`, an ELECTRA run (rtd) an `ElectraForPreTraining`
discriminator, as the runs keep.
"""

from __future__ import annotations

import sys

import torch
from transformers import AutoConfig, AutoTokenizer, BertModel, ElectraForPreTraining

run, out = sys.argv[1], sys.argv[2]
config = AutoConfig.from_pretrained(run)
tok = AutoTokenizer.from_pretrained(run)
torch.manual_seed(0)
model = (ElectraForPreTraining if config.model_type == "electra" else BertModel)(config)
model.save_pretrained(out)
tok.save_pretrained(out)
print(f"random-init {config.model_type} ({len(tok)} vocab) saved to {out}")
