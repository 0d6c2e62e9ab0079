"""The unigram reference line of docs/pretraining.md: cross-entropy of the held-out documents'
tokens under the training documents' token frequencies (add-one smoothed) — what a model that
ignores context scores. For an encoder run it is the masked-token reference (special tokens
excluded), for a decoder run the next-token one (each document followed by its EOS).

usage: python docs/pretraining/unigram.py RUN
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter

from transformers import AutoTokenizer

from tunelab.objectives.corpus import iter_documents, split_stream

run = sys.argv[1]
tok = AutoTokenizer.from_pretrained(run)
decoder = tok.eos_token_id is not None and tok.mask_token_id is None


def counts(want: str) -> Counter:
    c: Counter = Counter()
    docs = split_stream(iter_documents("news-articles", "title,text"), 20, want)
    for doc in docs:
        ids = tok(doc, add_special_tokens=False)["input_ids"]
        c.update(ids + [tok.eos_token_id] if decoder else ids)
    return c


train, val = counts("train"), counts("validation")
total, vocab = sum(train.values()), len(tok)
nll = -sum(n * math.log((train[t] + 1) / (total + vocab)) for t, n in val.items())
loss = nll / sum(val.values())
print(
    json.dumps({"run": run, "unigram_loss": round(loss, 4), "perplexity": round(math.exp(loss), 1)})
)
