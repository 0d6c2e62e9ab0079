"""ONNX and GGUF export, checked against the torch model they came from.

The ONNX exports share one module-scoped tiny BERT classifier (an export takes seconds); GGUF
uses a tiny Llama with a byte-level BPE vocabulary trained here, since llama.cpp's "gpt2"
vocabulary is byte-level BPE and the fixture tokenizer is WordLevel.
"""

from __future__ import annotations

import copy
import sys

import pytest
import torch

from tests.conftest import build_tokenizer, distinct_features, toy_examples
from tests.unit.compress.conftest import tiny_model
from tunelab.compress import onnx_export
from tunelab.compress.export import (
    OnnxClassifier,
    check_onnx,
    onnx_info,
    quantize_onnx_int8,
    to_gguf,
    to_onnx,
)
from tunelab.errors import TunelabError

pytest.importorskip("onnxruntime")
gguf = pytest.importorskip("gguf")

INT8_AGREEMENT = 0.9
"""Share of toy rows whose argmax the int8 ORT model must keep (58/60 here; labels 23/16/21)."""


def _texts(n: int, seed: int = 1) -> list[str]:
    return [e["text"] for e in toy_examples(n, seed=seed)]


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """A tiny BERT classifier with spread-out logits, its tokenizer, and its ONNX export."""
    from transformers import BertForSequenceClassification

    root = tmp_path_factory.mktemp("onnx")
    tok = build_tokenizer(root / "tok")
    model = tiny_model(BertForSequenceClassification, "encoder", len(tok), num_labels=3)
    distinct_features(model)
    with torch.no_grad():  # default-init logits differ by ~0.01: too close for an argmax test
        model.classifier.weight.mul_(30)
        # centred on the toy texts, so the argmax spreads over all three labels
        model.classifier.bias.sub_(model(**_batch(tok, _texts(90, seed=0))).logits.mean(0))
    path = to_onnx(model, tok, root / "model.onnx")
    return model, tok, path


def _batch(tok, texts: list[str]) -> dict[str, torch.Tensor]:
    return dict(tok(texts, padding=True, return_tensors="pt"))


def test_onnx_export_matches_torch(bert):
    model, tok, path = bert
    info = onnx_info(path)
    assert info["exporter"] == "dynamo"
    assert info["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert info["output"] == "logits"
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx", "tok"]  # no leftovers
    diff = check_onnx(model, path, _batch(tok, _texts(12)), atol=1e-4)
    assert 0 <= diff <= 1e-4
    # the exporter's per-node stack traces hold this machine's paths: they are stripped
    assert str(sys.prefix).encode() not in path.read_bytes()


def test_check_onnx_raises_when_the_graph_differs(bert):
    model, tok, path = bert
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.classifier.bias.add_(0.5)
    with pytest.raises(TunelabError, match="differs from the torch model"):
        check_onnx(other, path, _batch(tok, _texts(4)))


@pytest.mark.parametrize("rows,words", [(1, 3), (3, 12), (3, 5)])
def test_onnx_classifier_acts_like_the_torch_model(bert, rows, words):
    model, tok, path = bert
    texts = [" ".join(t.split()[: words - i]) for i, t in enumerate(_texts(rows, seed=rows))]
    batch = _batch(tok, texts)  # rows of different lengths: padded
    assert rows == 1 or (batch["attention_mask"] == 0).any()
    labels = torch.arange(rows) % 3
    clf = OnnxClassifier(path, model.config)
    with torch.no_grad():
        want = model(**batch, labels=labels)
    got = clf(**batch, labels=labels)
    assert got.logits.shape == (rows, 3)
    torch.testing.assert_close(got.logits, want.logits, atol=1e-4, rtol=0)
    assert torch.equal(got.logits.argmax(-1), want.logits.argmax(-1))
    torch.testing.assert_close(got.loss, want.loss, atol=1e-4, rtol=0)
    # token_type_ids are optional, as they are for the transformers model
    no_types = {k: v for k, v in batch.items() if k != "token_type_ids"}
    torch.testing.assert_close(clf(**no_types).logits, want.logits, atol=1e-4, rtol=0)


def test_onnx_classifier_is_a_drop_in_model(bert):
    model, _, path = bert
    clf = OnnxClassifier(path, model.config)
    assert clf.eval() is clf and clf.train(True) is clf and clf.training is False
    assert next(clf.parameters()).device == torch.device("cpu")
    assert clf.config.num_labels == 3 and clf.config.id2label[2] == "LABEL_2"
    assert clf(input_ids=torch.tensor([[2, 9, 3]])).loss is None


def test_int8_onnx_is_smaller_and_mostly_agrees(bert, tmp_path, monkeypatch):
    model, tok, path = bert
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # onnxruntime's shape inference can drop temp files in the cwd
    small = quantize_onnx_int8(path, tmp_path / "int8.onnx")
    assert list(cwd.iterdir()) == []
    assert small.stat().st_size < 0.6 * path.stat().st_size
    assert onnx_info(small)["quantized"] == "int8-dynamic"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "int8.onnx"]
    batch = _batch(tok, _texts(60, seed=2))
    with torch.no_grad():
        want = model(**batch).logits.argmax(-1)
    got = OnnxClassifier(small, model.config)(**batch).logits.argmax(-1)
    # a constant answer must not pass: no label holds the agreement share on its own
    assert torch.bincount(want).max().item() < INT8_AGREEMENT * len(want)
    assert (got == want).float().mean().item() >= INT8_AGREEMENT


def test_torchscript_fallback_when_dynamo_fails(bert, tmp_path, monkeypatch):
    model, tok, _ = bert
    real = onnx_export._export

    def dynamo_breaks(*args, **kwargs):
        if args[5].startswith("dynamo"):
            raise RuntimeError("dynamo cannot trace this\nsecond line")
        return real(*args, **kwargs)

    monkeypatch.setattr(onnx_export, "_export", dynamo_breaks)
    path = to_onnx(model, tok, tmp_path / "ts.onnx")
    assert onnx_info(path)["exporter"] == "torchscript"
    for rows in (1, 3):  # the dynamic axes hold on this path too
        assert check_onnx(model, path, _batch(tok, _texts(rows, seed=rows))) <= 1e-4
    assert model.config._attn_implementation == "sdpa"  # restored after the eager retry


def test_all_exporters_failing_is_one_error_and_no_file(bert, tmp_path, monkeypatch):
    model, tok, _ = bert

    def broken(*args, **kwargs):
        raise RuntimeError("nope")

    monkeypatch.setattr(onnx_export, "_export", broken)
    with pytest.raises(TunelabError, match="dynamo: RuntimeError: nope.*torchscript"):
        to_onnx(model, tok, tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []


def test_decoder_classifier_exports(tmp_path):
    from transformers import LlamaForSequenceClassification

    tok = build_tokenizer(tmp_path / "tok")
    model = tiny_model(LlamaForSequenceClassification, "decoder", len(tok), num_labels=3)
    path = to_onnx(model, tok, tmp_path / "llama.onnx")
    assert onnx_info(path)["inputs"] == ["input_ids", "attention_mask"]
    for rows in (1, 3):  # padded rows: the head reads each row's last real token
        assert check_onnx(model, path, _batch(tok, _texts(rows, seed=rows))) <= 1e-4


def test_t5_classifier_exports_with_eager_attention(tmp_path):
    from transformers import T5ForSequenceClassification

    tok = build_tokenizer(tmp_path / "tok")
    model = tiny_model(T5ForSequenceClassification, "encoder-decoder", len(tok), num_labels=3)
    path = to_onnx(model, tok, tmp_path / "t5.onnx")
    # torch 2.13 fails on T5's SDPA path (a view after transpose under symbolic shapes); the
    # retry with eager attention stays on dynamo. Either is right once torch fixes it.
    assert onnx_info(path)["exporter"] in ("dynamo", "dynamo, eager attention")
    assert model.config._attn_implementation == "sdpa"
    for rows in (1, 3):
        assert check_onnx(model, path, _batch(tok, _texts(rows, seed=rows))) <= 1e-4


def test_onnx_takes_classifiers_and_encoders_only(tiny_models, tmp_path):
    from transformers import AutoModel, AutoModelForCausalLM

    assert onnx_export._onnx_output(AutoModel.from_pretrained(tiny_models["encoder"])) == (
        "last_hidden_state"
    )
    lm = AutoModelForCausalLM.from_pretrained(tiny_models["decoder"])
    with pytest.raises(TunelabError, match="gguf"):
        to_onnx(lm, None, tmp_path / "lm.onnx")
    seq2seq = AutoModel.from_pretrained(tiny_models["encoder-decoder"])
    with pytest.raises(TunelabError, match="not a T5Model"):
        to_onnx(seq2seq, None, tmp_path / "t5.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("missing", ["onnxruntime", "onnx"])
def test_missing_onnxruntime_is_one_line(bert, tmp_path, monkeypatch, missing):
    model, tok, path = bert
    monkeypatch.setitem(sys.modules, missing, None)  # `import onnxruntime` now raises
    calls = [
        lambda: to_onnx(model, tok, tmp_path / "m.onnx"),
        lambda: check_onnx(model, path, {"input_ids": torch.tensor([[2, 3]])}),
        lambda: quantize_onnx_int8(path, tmp_path / "q.onnx"),
        lambda: OnnxClassifier(path, model.config),
    ]
    for call in calls:
        with pytest.raises(TunelabError) as err:
            call()
        msg = str(err.value)
        assert "\n" not in msg
        assert msg.endswith(" needs onnxruntime: pip install 'tunelab[compress]'")
    assert list(tmp_path.iterdir()) == []


# --- GGUF ---------------------------------------------------------------------------------


def _bpe_tokenizer():
    """A byte-level BPE (GPT-2 / SmolLM style) of 300 tokens trained on the toy texts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_texts(90, seed=0), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )


@pytest.fixture(scope="module")
def llama():
    """A tiny Llama causal LM over the BPE vocabulary, with decisive logits."""
    from transformers import LlamaForCausalLM

    tok = _bpe_tokenizer()
    ids = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = tiny_model(LlamaForCausalLM, "decoder", len(tok), **ids)
    with torch.no_grad():  # default init leaves the top logits ~1e-3 apart: f16 could swap them
        for p in model.parameters():
            if p.ndim == 2:
                p.mul_(10)
    return model, tok


def _greedy(model, ids: torch.Tensor, steps: int = 8) -> list[int]:
    with torch.no_grad():
        for _ in range(steps):
            ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[0].tolist()


def _load(path):
    """The model (and tokenizer) as tunelab reads a GGUF: transformers' `gguf_file=`."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    return model.eval()


def _load_tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def test_gguf_f16_reads_back_and_generates_the_same(llama, tmp_path):
    model, tok = llama
    path = to_gguf(model, tok, tmp_path / "tiny-f16.gguf", "f16")
    assert [p.name for p in tmp_path.iterdir()] == ["tiny-f16.gguf"]

    reader = gguf.GGUFReader(path)
    layers = model.config.num_hidden_layers
    names = {t.name for t in reader.tensors}
    assert len(reader.tensors) == 3 + 9 * layers  # token_embd, output_norm, output + 9 per block
    assert {"token_embd.weight", "output_norm.weight", "output.weight"} <= names
    assert {f"blk.1.{n}.weight" for n in ("attn_q", "attn_k", "ffn_gate", "ffn_norm")} <= names
    kinds = {t.name: t.tensor_type.name for t in reader.tensors}
    assert kinds["blk.0.attn_q.weight"] == "F16" and kinds["blk.0.attn_norm.weight"] == "F32"
    field = lambda key: reader.fields[key].contents()  # noqa: E731
    assert field("general.architecture") == "llama"
    assert field("llama.block_count") == layers
    assert field("llama.embedding_length") == 32
    assert field("llama.attention.head_count") == 2
    assert field("tokenizer.ggml.model") == "gpt2"
    assert field("tokenizer.ggml.tokens")[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert field("tokenizer.ggml.eos_token_id") == 2

    loaded, loaded_tok = _load(path), _load_tokenizer(path)
    # weights: exactly the f16-rounded source ones, q/k un-permuted by transformers' reader
    source = model.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, source[name].half().float()), name
    text = "the team won the match today"
    assert loaded_tok(text)["input_ids"] == tok(text)["input_ids"]
    ids = torch.tensor([tok(text)["input_ids"]])
    assert _greedy(loaded, ids) == _greedy(model, ids)


def test_gguf_q8_0_is_smaller_and_close(llama, tmp_path):
    model, tok = llama
    f16 = to_gguf(model, tok, tmp_path / "f16.gguf", "f16")
    q8 = to_gguf(model, tok, tmp_path / "q8.gguf", "q8_0")
    assert q8.stat().st_size < 0.75 * f16.stat().st_size
    kinds = {t.name: t.tensor_type.name for t in gguf.GGUFReader(q8).tensors}
    assert kinds["blk.1.ffn_down.weight"] == "Q8_0" and kinds["output_norm.weight"] == "F32"
    loaded = _load(q8)
    source = model.state_dict()
    for name, tensor in loaded.state_dict().items():
        # q8_0: 32-value blocks, one scale each: error at most half a step of max|w| / 127
        bound = source[name].abs().max().item() / 127 * 0.51 + 1e-3
        assert (tensor - source[name]).abs().max().item() <= bound, name


def test_gguf_tied_embeddings_have_no_output_tensor(tmp_path):
    from transformers import LlamaForCausalLM

    tok = _bpe_tokenizer()
    model = tiny_model(LlamaForCausalLM, "decoder", len(tok), tie_word_embeddings=True)
    path = to_gguf(model, None, tmp_path / "tied.gguf")  # weights only: no tokenizer metadata
    reader = gguf.GGUFReader(path)
    assert "output.weight" not in {t.name for t in reader.tensors}
    assert "tokenizer.ggml.model" not in reader.fields
    loaded = _load(path)
    assert loaded.config.tie_word_embeddings
    ids = torch.tensor([[5, 80, 120, 7]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=1e-2, rtol=0)


def test_gguf_pads_the_vocabulary_to_the_embedding_rows(tmp_path):
    from transformers import LlamaForCausalLM

    tok = _bpe_tokenizer()
    model = tiny_model(LlamaForCausalLM, "decoder", len(tok) + 20)  # rows padded to 320
    path = to_gguf(model, tok, tmp_path / "padded.gguf")
    reader = gguf.GGUFReader(path)
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    assert len(tokens) == len(types) == len(tok) + 20  # llama.cpp wants one per row
    assert tokens[-1] == f"[PAD{len(tok) + 19}]" and types[-1] == gguf.TokenType.UNUSED
    assert types[2] == gguf.TokenType.CONTROL and types[len(tok) - 1] == gguf.TokenType.NORMAL
    text = "the market fell"
    assert _load_tokenizer(path)(text)["input_ids"] == tok(text)["input_ids"]


def test_gguf_refuses_what_it_cannot_write(tiny_models, llama, tmp_path):
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    bert = AutoModel.from_pretrained(tiny_models["encoder"])
    with pytest.raises(TunelabError, match="Llama-family causal LM"):
        to_gguf(bert, None, tmp_path / "bert.gguf")
    model, tok = llama
    with pytest.raises(TunelabError, match="GGUF type 'q4_k'"):
        to_gguf(model, tok, tmp_path / "x.gguf", "q4_k")
    # the fixture's WordLevel vocabulary has no llama.cpp form
    word_level = AutoTokenizer.from_pretrained(tiny_models["decoder"])
    lm = AutoModelForCausalLM.from_pretrained(tiny_models["decoder"])
    with pytest.raises(TunelabError, match="byte-level BPE.*WordLevel"):
        to_gguf(lm, word_level, tmp_path / "wl.gguf")
    assert list(tmp_path.iterdir()) == []  # nothing half-written
