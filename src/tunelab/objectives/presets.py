"""Size presets for new models of each family, built from transformers configs.

| family  | preset | layers | hidden | heads | ffn  | parameters (vocab 8k, excl. embeddings) |
|---------|--------|--------|--------|-------|------|------------------------------------------|
| encoder | tiny   | 2      | 128    | 2     | 512  | ~0.4M (+1.0M embeddings)                 |
| encoder | small  | 4      | 256    | 4     | 1024 | ~3.2M (+2.2M embeddings)                 |
| decoder | tiny   | 2      | 128    | 4     | 384  | ~0.4M (+1.0M tied embeddings)            |
| decoder | small  | 4      | 256    | 4     | 768  | ~3.4M (+2.0M tied embeddings)            |

Encoders are BERT (`BertConfig`); RTD uses ELECTRA with a discriminator identical in shape
to that BERT and a generator of `generator_fraction` of its hidden size (1/4 as the ELECTRA
paper suggests) that shares its embeddings (~0.2M parameters besides them for `small`).
Decoders are Llama-style (`LlamaConfig`: RMSNorm, RoPE, SwiGLU).
Encoder-decoder models have no pre-training objective here (span corruption is not
implemented), which `family_for` refuses in one line.
"""

from __future__ import annotations

from tunelab.errors import TunelabError

SHAPES = {
    "encoder": {
        "tiny": {"layers": 2, "hidden": 128, "heads": 2, "ffn": 512},
        "small": {"layers": 4, "hidden": 256, "heads": 4, "ffn": 1024},
    },
    "decoder": {
        "tiny": {"layers": 2, "hidden": 128, "heads": 4, "ffn": 384},
        "small": {"layers": 4, "hidden": 256, "heads": 4, "ffn": 768},
    },
}
MAX_POSITIONS = 512


def family_for(objective: str, family: str | None) -> str:
    """The family an objective trains, checked against an explicit --family."""
    need = "decoder" if objective == "clm" else "encoder"
    if family == "encoder-decoder":
        raise TunelabError(
            "no pre-training objective for encoder-decoder models yet (span corruption is not "
            "implemented): use --family encoder or decoder"
        )
    if family is not None and family != need:
        raise TunelabError(
            f"objective {objective} trains {need} models, not {family}: "
            f"drop --family or pick {'clm' if family == 'decoder' else 'mlm, nsp or rtd'}"
        )
    return need


def bert_config(preset: str, tok, seq_len: int, dropout: float = 0.0):
    from transformers import BertConfig

    s = SHAPES["encoder"][preset]
    return BertConfig(
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        vocab_size=len(tok),
        hidden_size=s["hidden"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"],
        intermediate_size=s["ffn"],
        max_position_embeddings=max(seq_len, MAX_POSITIONS),
        pad_token_id=tok.pad_token_id,
        type_vocab_size=2,
    )


def electra_configs(
    preset: str, tok, seq_len: int, generator_fraction: float, dropout: float = 0.0
):
    """(discriminator, generator) ElectraConfigs; both embed at the discriminator's width."""
    from transformers import ElectraConfig

    s = SHAPES["encoder"][preset]
    common = {
        "vocab_size": len(tok),
        "embedding_size": s["hidden"],
        "max_position_embeddings": max(seq_len, MAX_POSITIONS),
        "pad_token_id": tok.pad_token_id,
        "type_vocab_size": 2,
        "num_hidden_layers": s["layers"],
        "hidden_dropout_prob": dropout,
        "attention_probs_dropout_prob": dropout,
    }
    disc = ElectraConfig(
        hidden_size=s["hidden"],
        num_attention_heads=s["heads"],
        intermediate_size=s["ffn"],
        **common,
    )
    g_hidden = max(16, int(s["hidden"] * generator_fraction))
    heads = max(1, round(s["heads"] * generator_fraction))
    while g_hidden % heads:
        heads -= 1
    gen = ElectraConfig(
        hidden_size=g_hidden,
        num_attention_heads=heads,
        intermediate_size=max(64, int(s["ffn"] * generator_fraction)),
        **common,
    )
    return disc, gen


def llama_config(preset: str, tok, seq_len: int):
    from transformers import LlamaConfig

    s = SHAPES["decoder"][preset]
    return LlamaConfig(
        vocab_size=len(tok),
        hidden_size=s["hidden"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"],
        num_key_value_heads=s["heads"],
        intermediate_size=s["ffn"],
        max_position_embeddings=max(seq_len, MAX_POSITIONS),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
