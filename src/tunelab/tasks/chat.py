"""How a prompt/response pair (or a whole conversation) is laid out as text for a decoder, and
which parts of that text train.

A pair is `{"prompt", "response"}`, with `"messages"` (the turns before the response) for chat
data and `"alpaca"` ({instruction, input[, system]}) for Alpaca rows (`data.chat`).

- chat template (the tokenizer has one, `chat_template` on): the conversation rendered by the
  template. Each trained assistant turn is what rendering the conversation up to and with
  that turn adds after rendering it up to the turn with `add_generation_prompt=True`, cut
  after the template's end-of-turn token (the EOS token), which trains too: a tuned model
  learns where to stop. Everything else (system, user turns, the role headers) is context.
- plain (no template): the turns one per line, then `separator`, then the response + EOS; an
  Alpaca pair without history is laid out in the Stanford Alpaca template (`### Instruction:`,
  `### Input:`, `### Response:`), which is what a model without a chat template is tuned on.

With `all_turns` every assistant turn of the conversation trains (LLaMA-Factory, axolotl and
TRL do the same by default); without, only the response, the earlier turns are context.
An assistant turn with weight 0 (OpenAI's format) or without any turn before it never trains.
"""

from __future__ import annotations

from typing import Any

from tunelab.errors import TunelabError

Segment = tuple[str, bool]
"""A piece of the example's text and whether it trains (its tokens get labels)."""

ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task{with_input}. Write a response that "
    "appropriately completes the request."
)
ALPACA_INPUT = ", paired with an input that provides further context"


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def context_turns(pair: dict[str, Any]) -> list[dict[str, Any]]:
    """The turns before the response ({role, content, [weight]})."""
    return list(pair.get("messages") or [{"role": "user", "content": pair["prompt"]}])


def alpaca_prompt(fields: dict[str, str]) -> str:
    """The Stanford Alpaca prompt of an instruction and its (possibly empty) input; a system
    text replaces the standard first line."""
    inp = fields.get("input") or ""
    head = fields.get("system") or ALPACA_PREAMBLE.format(with_input=ALPACA_INPUT if inp else "")
    body = f"### Instruction:\n{fields.get('instruction', '')}\n\n"
    if inp:
        body += f"### Input:\n{inp}\n\n"
    return f"{head}\n\n{body}### Response:\n"


def _render(tokenizer, turns: list[dict[str, Any]], generation_prompt: bool) -> str:
    clean = [{"role": t["role"], "content": t["content"]} for t in turns]
    return tokenizer.apply_chat_template(
        clean, tokenize=False, add_generation_prompt=generation_prompt
    )


def _trains(turns: list[dict[str, Any]], index: int) -> bool:
    turn = turns[index]
    return turn["role"] == "assistant" and index > 0 and turn.get("weight", 1) != 0


def _cut_after_eos(text: str, eos: str | None) -> str:
    if eos and eos in text:  # keep the end-of-turn token, drop what follows it
        return text[: text.rindex(eos) + len(eos)]
    return text


def template_segments(pair: dict[str, Any], tokenizer, all_turns: bool) -> list[Segment]:
    """The conversation in the chat template, cut into context and trained assistant turns;
    the last segment is the response.

    Raises:
        TunelabError: the template renders a turn differently once later turns follow it.
    """
    turns = [*context_turns(pair), {"role": "assistant", "content": pair["response"]}]
    full = _render(tokenizer, turns, False)
    last = len(turns) - 1
    trained = [k for k in range(len(turns)) if k == last or (all_turns and _trains(turns, k))]
    segments: list[Segment] = []
    cursor = 0
    for k in trained:
        before = _render(tokenizer, turns[:k], True) if k else ""
        upto = full if k == last else _render(tokenizer, turns[: k + 1], False)
        answer = _cut_after_eos(upto[len(before) :], tokenizer.eos_token)
        if not (upto.startswith(before) and full.startswith(before + answer)):
            fix = "--data.train_all_turns false or " if k != last else ""
            raise TunelabError(
                "the tokenizer's chat template renders the conversation differently with and "
                f"without the answer: train with {fix}--data.chat_template false"
            )
        segments += [(full[cursor : len(before)], False), (answer, True)]
        cursor = len(before) + len(answer)
    return segments


def plain_segments(
    pair: dict[str, Any], separator: str = "\n", all_turns: bool = True
) -> list[Segment]:
    """No chat template: the turns one per line, `separator`, the response (EOS added when
    tokenized); an Alpaca pair without history in the Alpaca template."""
    if pair.get("alpaca") is not None:
        return [(alpaca_prompt(pair["alpaca"]), False), (pair["response"], True)]
    context = pair.get("messages")
    if not context:
        return [(pair["prompt"] + separator, False), (pair["response"], True)]
    segments: list[Segment] = []
    for i, turn in enumerate(context):
        segments.append((turn["content"], all_turns and _trains(context, i)))
        segments.append(("\n" if i < len(context) - 1 else separator, False))
    return [*segments, (pair["response"], True)]


def segments(
    pair: dict[str, Any],
    tokenizer,
    chat_template: bool = True,
    separator: str = "\n",
    all_turns: bool = True,
) -> list[Segment]:
    """The example's text in order as (text, trains) pieces, adjacent pieces of the same kind
    merged; the last piece is the response."""
    if chat_template and has_chat_template(tokenizer):
        pieces = template_segments(pair, tokenizer, all_turns)
    else:
        pieces = plain_segments(pair, separator, all_turns)
    merged: list[Segment] = []
    for piece, trains in pieces:
        if not trains and merged and not merged[-1][1]:
            merged[-1] = (merged[-1][0] + piece, False)
        elif piece or trains:  # a trained piece stays apart, even empty: the last is the response
            merged.append((piece, trains))
    return merged


def format_pair(
    pair: dict[str, Any], tokenizer, chat_template: bool = True, separator: str = "\n"
) -> tuple[str, str]:
    """(prompt text, response text) as the model reads them, special tokens included."""
    pieces = segments(pair, tokenizer, chat_template, separator, all_turns=False)
    return "".join(p for p, _ in pieces[:-1]), pieces[-1][0]


def prompt_text(
    pair: dict[str, Any], tokenizer, chat_template: bool = True, separator: str = "\n"
) -> str:
    """What to feed a model to generate the response of `pair` (its training prompt); the
    pair needs no response."""
    return format_pair({"response": "", **pair}, tokenizer, chat_template, separator)[0]
