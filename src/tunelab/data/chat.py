"""Rows of instruction / chat data -> prompt/response pairs, whatever format they come in.

Formats (`--data.format`, auto-detected from the columns by default):

- pairs: a prompt column and a response column (`--data.prompt_column`/`response_column`);
- alpaca: `instruction`, optional `input`, `output` (optional `system`, and `history` as a
  list of [instruction, response] pairs, as LLaMA-Factory reads them). The input is joined to
  the instruction after a blank line, as the Alpaca template lays them out; a model without a
  chat template is trained on the Alpaca template itself (`tasks/chat.py`);
- sharegpt: `conversations`, a list of {from: human|gpt|system, value} (also {role, content};
  optional `system` column);
- messages: OpenAI's `messages`, a list of {role: system|user|assistant, content}; content may
  be a list of text parts; an assistant turn with `"weight": 0` is context only.

A conversation becomes ONE pair: the last trained assistant turn is the response, every turn
before it the context (`messages`, which the chat template renders), the last user turn the
prompt text. Causal-LM encoding trains every assistant turn of the context too
(`--data.train_all_turns`), so one row is one training example, not one per turn.
"""

from __future__ import annotations

from typing import Any

from tunelab.data.table import Table
from tunelab.errors import TunelabError

Pair = dict[str, Any]
FORMATS = ("auto", "pairs", "alpaca", "sharegpt", "messages")
ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
    "system": "system",
    "developer": "system",  # OpenAI's newer name for the system turn
}
_NEEDS = {
    "alpaca": ("instruction", "output"),
    "sharegpt": ("conversations",),
    "messages": ("messages",),
}


def detect_format(columns: list[str], prompt_column: str = "prompt", fmt: str = "auto") -> str:
    """The format of rows with these columns (`fmt` unless auto); pairs when nothing else fits.

    Raises:
        TunelabError: an unknown format, or one whose columns are missing.
    """
    if fmt not in FORMATS:
        raise TunelabError(f"--data.format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "auto":
        if prompt_column in columns:
            return "pairs"
        return next((f for f, need in _NEEDS.items() if all(c in columns for c in need)), "pairs")
    missing = [c for c in _NEEDS.get(fmt, ()) if c not in columns]
    if missing and columns:
        raise TunelabError(
            f"--data.format {fmt} needs the column(s) {', '.join(_NEEDS[fmt])} "
            f"(columns: {', '.join(columns)}): fix the data or --data.format"
        )
    return fmt


def table_pairs(
    table: Table, prompt_column: str = "prompt", response_column: str = "response", fmt="auto"
) -> list[Pair]:
    """Every row of `table` as a pair, in order (see the module docstring)."""
    if table.fixed:
        raise TunelabError(
            f"{table.source} holds {table.kind} lines for classification: generative tasks "
            "need prompt/response pairs or chat data (.jsonl/.json/.csv/.parquet)"
        )
    fmt = detect_format(table.columns, prompt_column, fmt)
    src = table.source
    if fmt == "pairs":
        for column, key in ((prompt_column, "prompt"), (response_column, "response")):
            if column not in table.columns:
                raise TunelabError(
                    f"column '{column}' not found in {src} (columns: "
                    f"{', '.join(table.columns) or 'none'}): pass the right one with "
                    f"--data.{key}_column, or give alpaca, sharegpt or messages rows"
                )
        return [
            {
                "prompt": text(r.get(prompt_column), prompt_column, src),
                "response": text(r.get(response_column), response_column, src),
            }
            for r in table.rows([prompt_column, response_column])
        ]
    wanted = {
        "alpaca": ["instruction", "input", "output", "system", "history"],
        "sharegpt": ["conversations", "system"],
        "messages": ["messages"],
    }[fmt]
    read = {"alpaca": alpaca_pair, "sharegpt": sharegpt_pair, "messages": messages_pair}[fmt]
    rows = table.rows([c for c in wanted if c in table.columns])
    return [read(row, f"{src} row {i + 1}") for i, row in enumerate(rows)]


def text(value: Any, column: str, source: str) -> str:
    """One cell as text ("" when missing); a list or an object is a one-line error."""
    if value is None:
        return ""
    if isinstance(value, list | dict):
        raise TunelabError(
            f"column '{column}' in {source} holds lists or objects: give one text per row "
            "(or chat data as `messages` or `conversations`)"
        )
    return str(value)


def alpaca_pair(row: dict[str, Any], where: str) -> Pair:
    """instruction (+ input) -> output; system and history become chat context."""
    instruction = text(row.get("instruction"), "instruction", where)
    extra = text(row.get("input"), "input", where)
    prompt = "\n\n".join(part for part in (instruction.strip(), extra.strip()) if part)
    pair: Pair = {
        "prompt": prompt,
        "response": text(row.get("output"), "output", where),
        "alpaca": {"instruction": instruction.strip(), "input": extra.strip()},
    }
    system = text(row.get("system"), "system", where).strip()
    history = row.get("history") or []
    if not isinstance(history, list) or not all(
        isinstance(h, list | tuple) and len(h) == 2 for h in history
    ):
        raise TunelabError(f"{where}: history must be a list of [instruction, response] pairs")
    if system:
        pair["alpaca"]["system"] = system
    if history:
        turns = [{"role": "system", "content": system}] if system else []
        for question, answer in history:
            turns += [
                {"role": "user", "content": text(question, "history", where)},
                {"role": "assistant", "content": text(answer, "history", where)},
            ]
        pair["messages"] = [*turns, {"role": "user", "content": prompt}]
        del pair["alpaca"]  # a conversation: the chat (or plain multi-turn) layout
    elif system:
        pair["messages"] = [
            {"role": "system", "content": system},
            {"role": "user", "content": prompt},
        ]
    return pair


def sharegpt_pair(row: dict[str, Any], where: str) -> Pair:
    """ShareGPT `conversations` ({from, value}; {role, content} too) -> one pair."""
    convo = row.get("conversations")
    if not isinstance(convo, list) or not all(isinstance(t, dict) for t in convo):
        raise TunelabError(f"{where}: conversations must be a list of {{from, value}} objects")
    turns = []
    for turn in convo:
        who = turn.get("from", turn.get("role"))
        said = turn.get("value", turn.get("content"))
        if who is None or said is None:
            raise TunelabError(f"{where}: every conversations turn needs `from` and `value`")
        turns.append({"role": _role(who, where), "content": _content(said, where)})
    system = text(row.get("system"), "system", where).strip()
    if system and not (turns and turns[0]["role"] == "system"):
        turns.insert(0, {"role": "system", "content": system})
    return conversation_pair(turns, where)


def messages_pair(row: dict[str, Any], where: str) -> Pair:
    """OpenAI chat `messages` -> one pair (an assistant turn with weight 0 is not trained)."""
    messages = row.get("messages")
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and "role" in m and "content" in m for m in messages
    ):
        raise TunelabError(
            f"{where}: messages must be a list of {{role, content}} objects; fix the row"
        )
    turns = []
    for m in messages:
        turn = {"role": _role(m["role"], where), "content": _content(m["content"], where)}
        if "weight" in m:
            if m["weight"] not in (0, 1):
                raise TunelabError(f"{where}: a message weight must be 0 or 1")
            turn["weight"] = int(m["weight"])
        turns.append(turn)
    return conversation_pair(turns, where)


def _role(who: Any, where: str) -> str:
    role = ROLES.get(str(who).strip().lower())
    if role is None:
        raise TunelabError(
            f"{where}: role {who!r} is not supported (tunelab trains on system, user and "
            "assistant turns: human/gpt in ShareGPT); drop tool or function turns"
        )
    return role


def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # OpenAI content parts
        parts = []
        for part in value:
            if not (isinstance(part, dict) and part.get("type") == "text"):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise TunelabError(f"{where}: a {kind} content part is not text: drop it")
            parts.append(str(part.get("text", "")))
        return "\n".join(parts)
    if value is None:
        return ""
    if isinstance(value, dict):
        raise TunelabError(f"{where}: a turn's content must be text, not an object")
    return str(value)


def conversation_pair(turns: list[dict[str, Any]], where: str) -> Pair:
    """A conversation as one pair: the last trained assistant turn is the response."""
    trained = [
        i
        for i, t in enumerate(turns)
        if t["role"] == "assistant" and t.get("weight", 1) != 0 and i > 0
    ]
    if not trained:
        raise TunelabError(
            f"{where}: messages need an assistant turn after at least one other turn"
        )
    last = trained[-1]
    context = turns[:last]
    users = [t["content"] for t in context if t["role"] == "user"]
    return {
        "prompt": users[-1] if users else context[-1]["content"],
        "response": turns[last]["content"],
        "messages": context,
    }
