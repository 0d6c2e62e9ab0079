"""The "How to use" section of a run's model card (`runs.card`): loading the folder with
transformers, with peft when it holds an adapter, and with tunelab (CLI and Python), written
for the kind of run it is (task, family, weights)."""

from __future__ import annotations

from tunelab.runs.marker import RunMarker

FENCE = "```"


def usage_section(name: str, marker: RunMarker) -> str:
    """Markdown: how to load and use the run folder called `name`."""
    run = f"path/to/{name}"
    parts = ["## How to use\n", f"`{run}` is this folder, wherever it was copied to.\n"]
    if marker.weights in ("full", "merged"):
        parts.append("### transformers\n\n" + _code(_transformers(run, marker)))
    if marker.weights == "adapter":
        parts.append(_peft_text(run, marker))
    if marker.weights == "merged":
        parts.append(
            "The adapter that was merged is in `adapter/` (peft: load it over the base as for "
            "an adapter run).\n"
        )
    if marker.weights not in ("full", "merged", "adapter"):
        parts.append(
            f"transformers and peft cannot open this folder alone (its weights are "
            f"`{marker.weights}`): use tunelab.\n"
        )
    parts.append("### tunelab\n\n" + _code(_tunelab_cli(run, marker), "bash"))
    parts.append(_code(_tunelab_python(run, marker)))
    if marker.base_hub_id and marker.weights in ("adapter", "partial"):
        parts.append(
            "tunelab opens the base model from where it was on the training machine if it is "
            f"still there, else from its embedded package, else from the hub "
            f"(`{marker.base_hub_id}`).\n"
        )
    return "\n".join(parts)


def _code(text: str, lang: str = "python") -> str:
    return f"{FENCE}{lang}\n{text.strip()}\n{FENCE}\n"


def _auto_class(marker: RunMarker) -> str:
    if marker.task == "classification":
        return "AutoModelForSequenceClassification"
    if marker.task == "pretrain":
        return "AutoModelForMaskedLM" if "mlm" in (marker.objective or "") else "AutoModel"
    if marker.task == "seq2seq" or marker.family == "encoder-decoder":
        return "AutoModelForSeq2SeqLM"
    return "AutoModelForCausalLM"


def _classify_lines(marker: RunMarker) -> str:
    length = marker.max_length or 512
    return f"""
tok = AutoTokenizer.from_pretrained(run)
texts = ["first text to classify", "second text"]
batch = tok(texts, padding=True, truncation=True, max_length={length}, return_tensors="pt")
with torch.no_grad():
    probs = model(**batch).logits.softmax(-1)
print([model.config.id2label[int(i)] for i in probs.argmax(-1)])
"""


def _generate_lines(marker: RunMarker) -> str:
    if marker.family == "decoder" and marker.chat_template:
        return """
tok = AutoTokenizer.from_pretrained(run)
messages = [{"role": "user", "content": "Your prompt"}]
inputs = tok.apply_chat_template(
    messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
)
out = model.generate(**inputs, max_new_tokens=64)
print(tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))
"""
    if marker.family == "decoder":
        sep = marker.extra.get("separator", "\n")
        return f"""
tok = AutoTokenizer.from_pretrained(run)
inputs = tok(["Your prompt" + {sep!r}], return_tensors="pt")  # as the run was trained
out = model.generate(**inputs, max_new_tokens=64)
print(tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))
"""
    return """
tok = AutoTokenizer.from_pretrained(run)
inputs = tok(["Your prompt"], return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=64)
print(tok.decode(out[0], skip_special_tokens=True))
"""


def _transformers(run: str, marker: RunMarker) -> str:
    auto = _auto_class(marker)
    head = f"""
import torch
from transformers import {auto}, AutoTokenizer

run = "{run}"
model = {auto}.from_pretrained(run).eval()
"""
    if marker.task == "classification":
        return head + _classify_lines(marker)
    if marker.generative:
        return head + _generate_lines(marker)
    return head + "tok = AutoTokenizer.from_pretrained(run)\n"


def _peft_text(run: str, marker: RunMarker) -> str:
    if marker.task != "classification":
        auto = (
            "AutoPeftModelForSeq2SeqLM"
            if marker.family == "encoder-decoder"
            else ("AutoPeftModelForCausalLM")
        )
        code = f"""
import torch
from peft import {auto}
from transformers import AutoTokenizer

run = "{run}"
model = {auto}.from_pretrained(run).eval()  # fetches the base named in adapter_config.json
"""
        return "### peft\n\n" + _code(code + _generate_lines(marker)) + _base_note(marker)
    code = f"""
import json

import torch
from peft import AutoPeftModelForSequenceClassification
from transformers import AutoTokenizer

run = "{run}"
id2label = {{int(i): name for i, name in json.load(open(f"{{run}}/labels.json")).items()}}
model = AutoPeftModelForSequenceClassification.from_pretrained(
    run,
    num_labels=len(id2label),
    id2label=id2label,
    label2id={{name: i for i, name in id2label.items()}},
).eval()
"""
    why = (
        "peft builds the base model from the hub config named in `adapter_config.json`, which "
        f"knows nothing of this run's {len(marker.labels or [])} labels: pass them as above "
        "(without them the saved classification head does not fit the base's default one).\n"
    )
    text = "### peft\n\n" + _code(code + _classify_lines(marker)) + "\n" + why + _base_note(marker)
    if marker.family == "decoder" and marker.strategy in ("prompt", "ptuning"):
        text += (
            "\nA decoder classifier under prompt tuning / P-tuning pools its last real token "
            "only in tunelab (`strategies.peft_common.pool_last_attended`): with plain peft, "
            "classify one text at a time or pad on the left.\n"
        )
    return text


def _base_note(marker: RunMarker) -> str:
    auto = _auto_class(marker)
    if marker.base_hub_id:
        where = f"the hub id `{marker.base_hub_id}`"
        if marker.base_revision:
            where += f" at revision `{marker.base_revision}`"
    else:
        where = "the base model's path on the training machine (it has no hub id)"
    kwargs = "LOCAL_BASE, num_labels=len(id2label), id2label=id2label, label2id=...)"
    if marker.task != "classification":
        kwargs = "LOCAL_BASE)"
    return (
        f"\n`adapter_config.json` names the base by {where}. With the base somewhere else "
        f"(offline, a local copy): `base = {auto}.from_pretrained({kwargs}` then "
        "`model = peft.PeftModel.from_pretrained(base, run)`.\n"
    )


def _tunelab_cli(run: str, marker: RunMarker) -> str:
    if marker.task == "classification":
        return f"""
tunelab predict {run} "first text to classify" "second text"
tunelab eval {run} --data labelled.csv
tunelab serve {run}
"""
    if marker.generative:
        chat = " --chat" if marker.chat_template and marker.family == "decoder" else ""
        return f"""
tunelab generate {run}{chat} "Your prompt"
tunelab serve {run}
"""
    return f"""
tunelab finetune --model {run} --data.source labelled.csv   # as the base of a fine-tune
"""


def _tunelab_python(run: str, marker: RunMarker) -> str:
    if marker.task == "classification":
        return f"""
from tunelab import api

print(api.predict("{run}", ["first text to classify", "second text"]))
"""
    if marker.generative:
        chat = ", chat=True" if marker.chat_template and marker.family == "decoder" else ""
        return f"""
from tunelab import api

print(api.generate("{run}", ["Your prompt"]{chat})[0].text)
"""
    return f"""
from tunelab import api

cfg = api.build_config(overrides={{"model.name": "{run}", "data.source": "labelled.csv"}})
print(api.finetune(cfg).metrics["test"])
"""
