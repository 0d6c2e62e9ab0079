"""Tiny random generators for decoding tests: a Llama causal LM and a T5, built from config.

The fixtures' base models have no LM head, so these build full generation models from the
same tiny configs. Weights are scaled up (as a trained model's are peakier than the 0.02
init) and the EOS row of the LM head boosted, so sequences end at different lengths and beam
search meets finished hypotheses.
"""

from __future__ import annotations

import torch

from tests.conftest import build_tokenizer, tiny_config

EOS = 3


def tiny_lm(family: str, tmp_path, seed: int = 0, eos_boost: float = 3.0):
    from transformers import LlamaForCausalLM, T5ForConditionalGeneration

    tok = build_tokenizer(tmp_path / family)
    torch.manual_seed(seed)
    cfg = tiny_config(family, len(tok))
    model = (T5ForConditionalGeneration if family == "encoder-decoder" else LlamaForCausalLM)(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and "embed" not in name and "shared" not in name:
                p.mul_(4)
        head = model.get_output_embeddings().weight
        head[EOS] *= eos_boost
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = EOS
    return model.eval(), tok


def prompts(tok, n: int = 4, seed: int = 0) -> list[list[int]]:
    """Token-id prompts of different lengths (no special tokens in the middle)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = 2 + 3 * i
        out.append(torch.randint(5, len(tok), (length,), generator=g).tolist())
    return out


def hf_generate(
    model, prompts_ids: list[list[int]], padding_side: str, eos: int = EOS, **kw
) -> list[list[int]]:
    """transformers' generate() on a padded batch; generated ids cut at the first EOS."""
    longest = max(len(p) for p in prompts_ids)
    ids = torch.zeros(len(prompts_ids), longest, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts_ids):
        sl = slice(longest - len(p), longest) if padding_side == "left" else slice(0, len(p))
        ids[i, sl], mask[i, sl] = torch.tensor(p), 1
    with torch.inference_mode():
        seq = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, **kw)
    start = 1 if model.config.is_encoder_decoder else longest
    out = []
    for row in seq[:, start:].tolist():
        out.append(row[: row.index(eos)] if eos in row else row)
    return out
