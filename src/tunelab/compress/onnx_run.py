"""Running an exported ONNX file: onnxruntime sessions, and a session shaped like a classifier.

`OnnxClassifier` is what a run folder with ONNX weights opens as (`runs.compressed`); `_session`
and `_feeds` are shared with `onnx_export.check_onnx`. onnx / onnxruntime are the optional
`tunelab[compress]` extra: imported inside the functions that need them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunelab.errors import TunelabError


def _need_onnx(what: str) -> None:
    """One line naming the extra when onnx / onnxruntime (the `compress` extra) is missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise TunelabError(f"{what} needs onnxruntime: pip install 'tunelab[compress]'") from None


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3  # errors only: its warnings are about graph fusions
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _feeds(session, batch: dict[str, Any]) -> dict[str, Any]:
    ids = torch.as_tensor(batch["input_ids"])
    feeds = {}
    for node in session.get_inputs():
        value = batch.get(node.name)
        if value is None and node.name == "attention_mask":
            value = torch.ones_like(ids)
        elif value is None and node.name == "token_type_ids":
            value = torch.zeros_like(ids)
        elif value is None:
            raise TunelabError(f"the ONNX model needs input {node.name!r}, which the batch lacks")
        feeds[node.name] = torch.as_tensor(value).detach().to("cpu", torch.long).numpy()
    return feeds


class OnnxClassifier:
    """An onnxruntime session behind the calling convention of a transformers classifier.

    `model(input_ids=..., attention_mask=..., labels=...)` returns a `SequenceClassifierOutput`
    with CPU logits (and the loss the transformers head would compute when labels are given);
    `.config` is the source model's config (num_labels, id2label). Inference only: `.train()`
    changes nothing and `.training` stays False. `.parameters()` yields one CPU tensor, so code
    that asks a model for its device puts batches on the CPU.
    """

    training = False

    def __init__(self, path: Path, config) -> None:
        _need_onnx("running an ONNX model")
        self.path = Path(path)
        if not self.path.is_file():
            raise TunelabError(f"ONNX model {self.path} not found: export it first")
        self.config = config
        self.session = _session(self.path)
        self.output = self.session.get_outputs()[0].name
        if self.output != "logits":
            raise TunelabError(
                f"{self.path.name} is an encoder export (output {self.output!r}), not a "
                "classifier: export the fine-tuned classification run"
            )
        self._device = torch.zeros((), device="cpu")

    def __call__(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **_):
        from transformers.modeling_outputs import SequenceClassifierOutput

        if input_ids is None:
            raise TunelabError(
                "the ONNX classifier takes input_ids (inputs_embeds are not exported)"
            )
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        batch["token_type_ids"] = token_type_ids
        feeds = _feeds(self.session, {k: v for k, v in batch.items() if v is not None})
        logits = torch.from_numpy(self.session.run([self.output], feeds)[0])
        loss = None if labels is None else self._loss(logits, torch.as_tensor(labels).cpu())
        return SequenceClassifierOutput(loss=loss, logits=logits)

    forward = __call__

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss transformers' classification heads compute, by the same rules."""
        fn = nn.functional
        problem = getattr(self.config, "problem_type", None)
        if problem == "regression" or (problem is None and logits.shape[-1] == 1):
            return fn.mse_loss(logits.squeeze(-1), labels.float().view(-1))
        if problem == "multi_label_classification":
            return fn.binary_cross_entropy_with_logits(logits, labels.float())
        return fn.cross_entropy(logits.view(-1, logits.shape[-1]), labels.long().view(-1))

    def eval(self) -> OnnxClassifier:
        return self

    def train(self, mode: bool = True) -> OnnxClassifier:
        return self

    def to(self, *args, **kwargs) -> OnnxClassifier:
        return self

    def parameters(self) -> Iterator[torch.Tensor]:
        yield self._device
