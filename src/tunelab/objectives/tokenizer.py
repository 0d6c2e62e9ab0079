"""Tokenizers for pre-training: train a new one on the corpus, or reuse a model's.

New tokenizers are trained with the `tokenizers` library from the streaming document iterator
and wrapped as a `PreTrainedTokenizerFast`, saved with the run so `tunelab finetune --model RUN`
finds it:
- encoders: BERT-style WordPiece (lower-cased, [PAD] [UNK] [CLS] [SEP] [MASK], '##' pieces);
- decoders: byte-level BPE (GPT-2 style: every byte string encodes, no [UNK]), with
  `<|endoftext|>` as BOS/EOS and `<pad>` for padding.
"""

from __future__ import annotations

from collections.abc import Iterable

from tunelab.errors import TunelabError

WORDPIECE_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BPE_SPECIALS = ["<|endoftext|>", "<pad>"]


def train_wordpiece(texts: Iterable[str], vocab_size: int):
    """A BERT-style WordPiece tokenizer trained on `texts` (an iterator is read once)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.decoder = decoders.WordPiece()
    trainer = WordPieceTrainer(vocab_size=vocab_size, special_tokens=WORDPIECE_SPECIALS)
    tk.train_from_iterator(texts, trainer)
    cls, sep = tk.token_to_id("[CLS]"), tk.token_to_id("[SEP]")
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def train_bpe(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE tokenizer (GPT-2 style) trained on `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=BPE_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tk.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<pad>",
        model_input_names=["input_ids", "attention_mask"],
    )


def train_tokenizer(texts: Iterable[str], family: str, vocab_size: int):
    """WordPiece for encoders, byte-level BPE for decoders."""
    if family == "decoder":
        return train_bpe(texts, vocab_size)
    return train_wordpiece(texts, vocab_size)


def check_tokenizer(tok, objective: str) -> None:
    """The special tokens an objective needs, or a one-line error naming the missing one."""
    need = {"clm": ["eos_token"], "nsp": ["cls_token", "sep_token"]}.get(
        objective, ["mask_token", "cls_token", "sep_token"]
    )
    if objective == "mlm+nsp":
        need = ["mask_token", "cls_token", "sep_token"]
    for attr in need:
        if getattr(tok, attr, None) is None:
            raise TunelabError(
                f"the tokenizer has no {attr.removesuffix('_token')} token, which {objective} "
                "needs: use --tokenizer train or a BERT-style tokenizer"
            )
