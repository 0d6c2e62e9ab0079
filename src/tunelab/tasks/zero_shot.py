"""Zero-shot classification with a decoder: no training, a prompt and the label names.

Each text goes into a prompt template (`{text}`, `{labels}`: the label names, comma-separated),
in the tokenizer's chat template when it has one, and the model answers in one of two ways:

- `choice`: greedy decoding constrained to the label names (`decoding.constraints`, llguidance),
  batched in the decoding engine: the answer is always exactly one label, whatever the model
  would have rambled. What a user sees when they prompt the model and force a valid answer.
- `likelihood`: every label scored as the completion of the prompt (`evaluation.scoring`: the
  sum of its tokens' log-probabilities given the prompt), the highest wins; a softmax over the
  label scores gives class probabilities. The standard zero-shot / multiple-choice method
  (lm-evaluation-harness's `acc`): it compares whole labels, so a label whose first token is
  common does not win by its first token alone. Each prompt runs once and every label
  continues its KV cache (`_label_logprobs`), rather than one full pass per (text, label).

Texts are cut to `max_length` tokens before they go into the prompt (the window a fine-tuned
classifier of the same data sees). Without a chat template the answer follows the prompt
after a space (" sport"), as plain text continues; in a chat template the assistant's turn
starts the answer.

    opts = ZeroShotOptions(prompt="Topic of this news: {text}\\nTopic:")
    preds = classify(model, tok, texts, ["sport", "money"], "likelihood", opts)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tunelab.errors import TunelabError

MODES = ("choice", "likelihood")
"""How a decoder answers: constrained greedy choice among the labels, or label likelihood."""
ROWS = {"zero_shot": "choice", "zero_shot_likelihood": "likelihood"}
"""`tunelab compare` rows that train nothing: row name -> mode."""
DEFAULT_PROMPT = (
    "Classify the text into one of these categories: {labels}.\n\nText: {text}\n\nCategory:"
)


@dataclass
class ZeroShotOptions:
    prompt: str = DEFAULT_PROMPT
    """Prompt template: {text} is the text (required), {labels} the label names joined by ", "."""
    labels: list[str] | None = None
    """The label names to choose from (a list, or one comma-separated string); default: the
    labels of the data."""
    chat_template: bool | None = None
    """Put the prompt in the tokenizer's chat template (default: when it has one)."""


@dataclass
class ZeroShotResult:
    labels: list[str | None]
    """The predicted label of each text (None: the model gave no label; never in choice mode)."""
    probs: list[list[float]] | None
    """likelihood mode: the label probabilities of each text (softmax of the label scores)."""
    seconds: float
    """Wall time of the classification (prompts, model, answers)."""
    prompts: list[str] = field(default_factory=list)
    """What the model read, per text."""


def check_prompt(template: str, flag: str = "--prompt") -> str:
    """`template`, or a one-line error naming `flag` when it has no {text} placeholder."""
    if not isinstance(template, str) or "{text}" not in template:
        raise TunelabError(
            f"{flag} must contain {{text}} (where the text goes), e.g. "
            f"'Topic of: {{text}}\\nTopic:'; got {template!r}"
        )
    return template


def check_mode(mode: str, flag: str = "--zero-shot") -> str:
    if mode not in MODES:
        raise TunelabError(f"{flag} is one of {', '.join(MODES)}; got {mode!r}")
    return mode


def parse_labels(value: Any, flag: str = "--labels") -> list[str] | None:
    """Label names from a list or comma-separated strings (None: none given); one-line errors
    for fewer than two, an empty or a repeated name."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    names = [part.strip() for item in items for part in str(item).split(",")]
    if any(not n for n in names):
        raise TunelabError(f"{flag} has an empty label name: give names like a,b,c")
    if len(set(names)) != len(names):
        raise TunelabError(f"{flag} names a label twice: list each once")
    if len(names) < 2:
        raise TunelabError(f"{flag} needs at least two label names to choose from, got {names}")
    return names


def check_options(opts: ZeroShotOptions, flag_prefix: str = "--") -> ZeroShotOptions:
    """A copy of `opts` with its labels parsed; its prompt checked (errors name the flags)."""
    from dataclasses import replace

    check_prompt(opts.prompt, f"{flag_prefix}prompt")
    return replace(opts, labels=parse_labels(opts.labels, f"{flag_prefix}labels"))


def uses_chat(tokenizer, wanted: bool | None) -> bool:
    """Whether prompts go into the chat template: `wanted`, else when the tokenizer has one."""
    has = bool(getattr(tokenizer, "chat_template", None))
    if wanted and not has:
        raise TunelabError("this tokenizer has no chat template: use --chat-template off")
    return has if wanted is None else wanted


def _cut(tokenizer, text: str, max_length: int) -> str:
    """`text` cut to its first `max_length` tokens (unchanged when it fits)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= max_length else tokenizer.decode(ids[:max_length])


def render_prompts(
    tokenizer, texts: list[str], labels: list[str], opts: ZeroShotOptions, max_length: int
) -> tuple[list[str], str]:
    """(the prompt of every text, what goes before a label in the answer: a space after a
    plain prompt that does not end in whitespace, else nothing)."""
    from tunelab.decoding import chat_prompt

    if max_length < 1:
        raise TunelabError(f"--max-length must be at least 1, got {max_length}")
    chat = uses_chat(tokenizer, opts.chat_template)
    # labels first: a text that happens to contain "{labels}" stays as it is
    template = opts.prompt.replace("{labels}", ", ".join(labels))
    prompts = [template.replace("{text}", _cut(tokenizer, t, max_length)) for t in texts]
    if chat:
        return [chat_prompt(tokenizer, p) for p in prompts], ""
    return prompts, "" if template[-1:].isspace() else " "


def _choose(model, tokenizer, prompts, labels, prefix, batch_size, progress) -> list[str | None]:
    from tunelab.decoding import DecodingOptions, generate
    from tunelab.decoding.constraints import Constraint

    answers = {prefix + lab: lab for lab in labels}
    # a choice may be spelt byte by byte: its bytes bound the tokens it can take
    longest = max(len(a.encode()) for a in answers)
    opts = DecodingOptions(max_new_tokens=longest + 1, constraint=Constraint.choice(list(answers)))
    outs = generate(model, tokenizer, prompts, opts, batch_size=batch_size, show_progress=progress)
    stripped = {lab.strip(): lab for lab in labels}
    return [answers.get(o.text, stripped.get(o.text.strip())) for o in outs]


def _likelihoods(model, tokenizer, prompts, labels, prefix, batch_size, progress):
    import torch
    from tqdm.auto import tqdm

    def ids(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    bos = tokenizer.bos_token_id
    answers = [ids(prefix + lab) for lab in labels]
    if any(not a for a in answers):
        raise TunelabError("a label name tokenizes to nothing: give every label some text")
    encoded = [ids(p) for p in prompts]
    # BOS in front as evaluation.scoring does (the first prompt token then has context)
    encoded = [[bos, *p] if bos is not None and p[:1] != [bos] else p for p in encoded]
    scores = torch.empty(len(prompts), len(labels), dtype=torch.float64)
    steps = range(0, len(prompts), batch_size)
    for lo in tqdm(steps, desc="scoring labels", unit="batch", disable=not progress):
        batch = encoded[lo : lo + batch_size]
        scores[lo : lo + len(batch)] = _label_logprobs(model, batch, answers)
    probs = scores.softmax(-1)  # (texts, labels)
    return [labels[i] for i in probs.argmax(-1).tolist()], probs.tolist()


def _last_logits_only(model) -> dict:
    """`logits_to_keep=1` where the model's forward takes it: the prompt pass then holds one
    position's logits, not (batch, prompt, vocab)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return (
        {"logits_to_keep": 1}
        if "logits_to_keep" in inspect.signature(base.forward).parameters
        else {}
    )


def _label_logprobs(model, prompts: list[list[int]], answers: list[list[int]]):
    """(prompts, labels) log p(answer | prompt), summed over the answer's tokens: the prompts
    run once (left-padded, their KV cache kept), then each answer continues that cache and
    the cache is cropped back to the prompts: one prompt pass instead of one per label, and
    no copy of the cache. Equal to `evaluation.scoring.score(answer, prompt)` up to float
    rounding (a unit test checks it)."""
    import torch

    device = next(model.parameters()).device
    b, n = len(prompts), max(len(p) for p in prompts)
    ids = torch.zeros(b, n, dtype=torch.long)
    mask = torch.zeros(b, n, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, n - len(p) :] = torch.tensor(p)
        mask[i, n - len(p) :] = 1
    lengths = mask.sum(-1, keepdim=True)  # (b, 1): where each prompt's answer starts
    out = torch.empty(b, len(answers), dtype=torch.float64)
    with torch.inference_mode():
        first = model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=(mask.cumsum(-1) - 1).clamp(min=0).to(device),
            use_cache=True,
            **_last_logits_only(model),
        )
        cache = first.past_key_values
        # the answer's first token is predicted at the prompt's last position
        last = first.logits[:, -1:].float().log_softmax(-1).cpu()  # (b, 1, vocab)
        for j, answer in enumerate(answers):
            target = torch.tensor(answer).expand(b, -1)  # (b, m)
            logprobs = last
            if len(answer) > 1:  # the rest by the answer's own positions
                m = len(answer) - 1
                more = model(
                    input_ids=target[:, :m].to(device),
                    attention_mask=torch.cat([mask, torch.ones(b, m, dtype=torch.long)], 1).to(
                        device
                    ),
                    position_ids=(lengths + torch.arange(m)).to(device),
                    past_key_values=cache,
                    use_cache=True,
                )
                cache.crop(-m)  # back to the prompts alone for the next answer
                logprobs = torch.cat([last, more.logits.float().log_softmax(-1).cpu()], 1)
            picked = logprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (b, m)
            out[:, j] = picked.double().sum(-1)
    return out


def classify(
    model,
    tokenizer,
    texts: list[str],
    labels: list[str],
    mode: str = "choice",
    opts: ZeroShotOptions | None = None,
    max_length: int = 256,
    batch_size: int = 16,
    progress: bool = False,
) -> ZeroShotResult:
    """The label of every text by `mode` (see the module docstring), with a causal LM loaded
    for generation (`runs.open.open_lm`) in eval mode.

    Raises:
        TunelabError: a bad mode, template, label set or batch size; choice mode without
            llguidance (what to install) or with a tokenizer llguidance cannot read.
    """
    opts = check_options(opts or ZeroShotOptions())
    check_mode(mode)
    labels = parse_labels(labels) or []
    if batch_size < 1:
        raise TunelabError(f"--batch-size must be at least 1, got {batch_size}")
    if not texts:
        return ZeroShotResult([], [] if mode == "likelihood" else None, 0.0)
    t0 = time.perf_counter()
    prompts, prefix = render_prompts(tokenizer, texts, labels, opts, max_length)
    if mode == "choice":
        preds, probs = (
            _choose(model, tokenizer, prompts, labels, prefix, batch_size, progress),
            None,
        )
    else:
        preds, probs = _likelihoods(model, tokenizer, prompts, labels, prefix, batch_size, progress)
    return ZeroShotResult(preds, probs, time.perf_counter() - t0, prompts)


def metrics_of(predicted: list[str | None], truth: list[str], labels: list[str]) -> dict:
    """`ClassificationMetrics.compute()` of the predictions, plus `invalid`: answers that were
    no label (scored as wrong, in an extra "(no label)" column that only appears then)."""
    from tunelab.evaluation.baselines import score_predictions

    invalid = sum(p is None for p in predicted)
    names = labels + (["(no label)"] if invalid else [])
    shown = [p if p is not None else "(no label)" for p in predicted]
    return {**score_predictions(shown, truth, names), "invalid": invalid}


__all__ = [
    "DEFAULT_PROMPT",
    "MODES",
    "ROWS",
    "ZeroShotOptions",
    "ZeroShotResult",
    "check_prompt",
    "classify",
    "metrics_of",
    "parse_labels",
]
