"""Representation-collapse check of docs/pretraining.md: on 64 NewsArticles documents, the mean
cosine similarity between an encoder's final token vectors (over 500 tokens) and between its
[CLS] vectors (over the documents). Near 1.0 for tokens means every token is mapped to the
same direction: nothing for a classifier to read.

usage: python docs/pretraining/collapse.py RUN_OR_MODEL [RUN_OR_MODEL ...]
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging

from tunelab.objectives.corpus import iter_documents

logging.set_verbosity_error()
docs = [d for _, d in zip(range(64), iter_documents("news-articles", "title,text"), strict=False)]
print("| model | mean token cosine | mean [CLS] cosine |\n|---|---:|---:|")
for run in sys.argv[1:]:
    tok, model = AutoTokenizer.from_pretrained(run), AutoModel.from_pretrained(run).eval()
    batch = tok(docs, truncation=True, max_length=128, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    tokens = hidden[batch["attention_mask"].bool()][:500]
    tcos = F.cosine_similarity(tokens.unsqueeze(1), tokens.unsqueeze(0), -1).mean()
    cls = hidden[:, 0]
    ccos = F.cosine_similarity(cls.unsqueeze(1), cls.unsqueeze(0), -1).mean()
    print(f"| {run.rstrip('/').split('/')[-1]} | {tcos:.3f} | {ccos:.3f} |")
