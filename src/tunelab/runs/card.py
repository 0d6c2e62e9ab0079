"""README.md of a run folder: a model card the Hugging Face hub reads (YAML front matter:
library_name, base_model, pipeline_tag, tags, license) and a person reads (what the model is,
the data, the training, the test metrics beside the baselines, how to load it).

Written from what the run folder already holds (marker, resolved config, metrics.json), so
`write_card` can rewrite the card of any run. peft's `save_pretrained` writes an empty template
README.md first; `runs.save` writes this card after it, so this one is what the folder keeps.
No absolute path of the training machine goes into the card: data files by their names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunelab.defaults import EMBEDDED_MODELS
from tunelab.models.sources import EMBEDDED_HUB, base_identity
from tunelab.runs.card_results import evaluation_section, table, training_section
from tunelab.runs.card_usage import usage_section
from tunelab.runs.marker import RunMarker
from tunelab.runs.workdir import write_text

CARD_FILE = "README.md"
TASKS = {
    "classification": "text classification",
    "causal_lm": "text generation (causal language model)",
    "seq2seq": "text-to-text generation (encoder-decoder)",
    "pretrain": "pre-training",
}
KINDS = {
    "classification": "text classifier",
    "causal_lm": "causal language model",
    "seq2seq": "text-to-text (encoder-decoder) model",
    "pretrain": "model",
}
WEIGHTS = {
    "full": "full weights (config.json + model.safetensors)",
    "merged": "full weights with the adapter merged in (config.json + model.safetensors); "
    "the adapter itself is in adapter/",
    "adapter": "a peft adapter over the base model (adapter_config.json + "
    "adapter_model.safetensors)",
    "partial": "only the tensors that trained (trained.safetensors): tunelab rebuilds the base, "
    "re-applies the strategy and copies them in",
}


def write_card(folder: Path, marker: RunMarker, config: dict[str, Any], metrics: dict) -> None:
    """Write README.md into `folder` (atomically), replacing whatever is there."""
    folder = Path(folder)
    rows = _row_counts(metrics)
    evaluated = _last_evaluation_rows(folder / "log.jsonl")
    if "validation" not in rows and evaluated is not None:
        metrics = {**metrics, "data": {**rows, "validation": evaluated}}
    write_text(folder / CARD_FILE, render_card(run_name(folder), marker, config, metrics))


def _last_evaluation_rows(log: Path) -> int | None:
    """Rows of the run's last validation (log.jsonl), when the log has one."""
    if not log.is_file():
        return None
    found = None
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        n = entry.get("eval", {}).get("n") if isinstance(entry, dict) else None
        found = n if isinstance(n, int) else found
    return found


def run_name(folder: Path) -> str:
    """The finished run's name: a work folder `.NAME.partial` becomes NAME."""
    name = Path(folder).name
    if name.startswith(".") and name.endswith(".partial"):
        return name[1 : -len(".partial")]
    return name


def render_card(name: str, marker: RunMarker, config: dict[str, Any], metrics: dict) -> str:
    """The card's text (see the module docstring)."""
    parts = [
        _front_matter(marker),
        f"# {name}\n\n{_summary(marker)}\n",
        _model_section(marker, metrics),
        _data_section(marker, config, metrics),
        training_section(marker, config, metrics),
        evaluation_section(marker, metrics),
        usage_section(name, marker),
    ]
    return "\n".join(p for p in parts if p)


def _yaml_str(text: str) -> str:
    """A YAML scalar that stays a string (hub ids, tags)."""
    return text if all(c.isalnum() or c in "-_./:" for c in text) else f'"{text}"'


def _pipeline_tag(marker: RunMarker) -> str:
    if marker.task == "classification":
        return "text-classification"
    if marker.task == "pretrain":
        objective = marker.objective or ""
        if "mlm" in objective:
            return "fill-mask"
        return "text-generation" if objective == "clm" else "feature-extraction"
    return "text-generation"


def _library(marker: RunMarker) -> str | None:
    """The library that opens this folder as it is (None: only tunelab does)."""
    if marker.weights == "adapter":
        return "peft"
    return "transformers" if marker.weights in ("full", "merged") else None


def _front_matter(marker: RunMarker) -> str:
    lines = ["---"]
    library = _library(marker)
    if library:
        lines.append(f"library_name: {library}")
    if marker.base_hub_id:
        lines.append(f"base_model: {_yaml_str(marker.base_hub_id)}")
        if marker.compression is None:  # a compressed fine-tune is neither of the hub's kinds
            relation = "adapter" if marker.weights == "adapter" else "finetune"
            lines.append(f"base_model_relation: {relation}")
    lines.append(f"pipeline_tag: {_pipeline_tag(marker)}")
    # the fine-tune's license is whoever publishes it to choose (its data matters too):
    # the base's license is in the card's text
    lines.append("license: unknown")
    method = marker.strategy if marker.strategy != "full" else None
    tags = ["tunelab", _pipeline_tag(marker), method or marker.objective or ""]
    if marker.weights == "adapter" and marker.base_hub_id:
        tags.append(f"base_model:adapter:{marker.base_hub_id}")
    if marker.compression:
        tags.append(str(marker.compression.get("kind") or "compressed"))
    lines.append("tags:")
    lines += [f"- {_yaml_str(t)}" for t in dict.fromkeys(t for t in tags if t)]
    return "\n".join(lines) + "\n---\n"


def _base_text(marker: RunMarker) -> str:
    if marker.base_hub_id:
        url = f"https://huggingface.co/{marker.base_hub_id}"
        text = f"[{marker.base_hub_id}]({url})"
        return text + (f" at revision {marker.base_revision}" if marker.base_revision else "")
    if marker.base_model:
        return f"`{_shown(marker.base_model)}` (a model of the training machine, no hub id)"
    return "none (trained from scratch)"


def _summary(marker: RunMarker) -> str:
    kind = KINDS.get(marker.task, f"{marker.task} model")
    what = f"A {kind}"
    if marker.compression:
        what = f"A compressed ({marker.compression.get('method')}) {kind}"
    if marker.labels:
        what += f" with {len(marker.labels)} labels ({', '.join(marker.labels[:12])}"
        what += ", ..." if len(marker.labels) > 12 else ""
        what += ")"
    if marker.task == "pretrain":
        start = f"pre-trained from {_base_text(marker)}" if marker.base_model else "pre-trained"
        if not marker.base_model:
            start += " from scratch"
        return f"{what} {start} with tunelab, objective {marker.objective}."
    start = f"fine-tuned from {_base_text(marker)}" if marker.base_model else "trained"
    return f"{what}, {start} with tunelab, strategy `{marker.strategy or 'full'}`."


def _options(options: dict[str, Any]) -> str:
    shown = [f"{k}={'default' if v is None else v}" for k, v in options.items()]
    return ", ".join(shown) or "defaults"


def _shown(value: Any) -> str:
    """A data or model name as the card shows it: a path by its last part only (no path of the
    training machine in the card), a name (an embedded data set, a hub id) as it is."""
    text = str(value)
    path = Path(text).expanduser()
    local = text.startswith(("/", "~", ".")) or "\\" in text or text.count("/") > 1
    return path.name if local or path.exists() else text


def _model_section(marker: RunMarker, metrics: dict) -> str:
    rows = [("Task", TASKS.get(marker.task, marker.task))]
    if marker.family:
        rows.append(("Architecture family", marker.family))
    rows.append(("Base model", _base_text(marker)))
    emb = None
    if marker.base_model:
        emb = base_identity(marker.base_model, marker.base_source).embedded
    hub = EMBEDDED_HUB.get(emb or "")
    if hub is not None:
        package = EMBEDDED_MODELS[emb].pip_name if emb in EMBEDDED_MODELS else "its package"
        rows.append(("Base model, as trained", f"tunelab's embedded `{emb}` (PyPI: {package})"))
        if hub.note:
            rows.append(("Note", hub.note))
        if hub.license:
            rows.append(("Base model license", hub.license))
    if marker.task == "pretrain":
        rows.append(("Objective", str(marker.objective)))
    else:
        strategy = marker.strategy or "full"
        rows.append(("Strategy", f"`{strategy}` ({_options(marker.strategy_options)})"))
    if marker.compression:
        comp = marker.compression
        rows.append(("Compression", f"{comp.get('method')} of run `{_shown(comp.get('source'))}`"))
    rows.append(("Weights in this folder", WEIGHTS.get(marker.weights, marker.weights)))
    train = metrics.get("train") or {}
    if train.get("trainable_params") and train.get("total_params"):
        share = 100 * train["trainable_params"] / train["total_params"]
        rows.append(
            (
                "Trained parameters",
                f"{train['trainable_params']:,} of {train['total_params']:,} ({share:.2f}%)",
            )
        )
    if marker.max_length:
        rows.append(("Max input length", f"{marker.max_length} tokens"))
    if marker.chat_template is not None:
        rows.append(("Prompts in the chat template", "yes" if marker.chat_template else "no"))
    stamp = f"tunelab {marker.tunelab_version}"
    rows.append(("Made with", stamp + (f", {marker.finished}" if marker.finished else "")))
    return "## Model\n\n" + table(("", ""), rows)


def _data_section(marker: RunMarker, config: dict[str, Any], metrics: dict) -> str:
    data = config.get("data") or {}
    if not data and marker.task != "classification":
        return ""
    lines = []
    files = [(k, data.get(k)) for k in ("train_file", "validation_file", "test_file")]
    given = [(k.removesuffix("_file"), v) for k, v in files if v]
    if given:
        lines += [f"- {split}: `{_shown(v)}`" for split, v in given]
    elif data.get("source"):
        split = f"test {_share(data.get('test_size'))}, validation {_share(data.get('val_size'))}"
        seed = (config.get("train") or {}).get("seed")
        lines.append(
            f"- source: `{_shown(data['source'])}`, split by tunelab ({split}, seed {seed})"
        )
    columns = _columns(marker, data)
    if columns:
        lines.append(f"- columns: {columns}")
    rows = _row_counts(metrics)
    order = {"train": 0, "validation": 1, "test": 2}
    if rows:
        ordered = sorted(rows.items(), key=lambda kv: order.get(kv[0], 3))
        lines.append("- rows: " + ", ".join(f"{k} {v:,}" for k, v in ordered))
    if marker.labels:
        lines.append(f"- labels ({len(marker.labels)}): {', '.join(marker.labels)}")
    support = ((metrics.get("test") or {}).get("per_class")) or {}
    if support:
        lines.append(
            "\n"
            + table(("label", "test rows"), [(k, v.get("support", "")) for k, v in support.items()])
        )
    return "## Data\n\n" + "\n".join(lines) + "\n" if lines else ""


def _share(value: Any) -> str:
    """A split size as the config gives it: a fraction as a percentage, a count as rows."""
    if isinstance(value, float) and 0 < value < 1:
        return f"{100 * value:g}%"
    return f"{value} rows" if isinstance(value, int) else str(value)


def _columns(marker: RunMarker, data: dict) -> str:
    if marker.task == "classification" and data.get("text_column"):
        return f"text `{data['text_column']}`, label `{data.get('label_column')}`"
    if marker.generative and data.get("prompt_column"):
        return f"prompt `{data['prompt_column']}`, response `{data.get('response_column')}`"
    return ""


def _row_counts(metrics: dict) -> dict[str, int]:
    """Rows per split: metrics.json's `data` block when the recipe wrote one, else what the
    evaluations counted."""
    data = metrics.get("data")
    if isinstance(data, dict):
        rows = data.get("rows", data)
        found = {k: v for k, v in rows.items() if isinstance(v, int)}
        if found:
            return found
    return {
        k: metrics[k]["n"]
        for k in ("validation", "test")
        if isinstance(metrics.get(k), dict) and isinstance(metrics[k].get("n"), int)
    }
