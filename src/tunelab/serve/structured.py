"""Constrained output, tool calls and logprobs for the completion endpoints: request fields ->
a decoding `Constraint`, generated text -> OpenAI's `tool_calls`, engine logprobs -> the wire
shapes.

Constraints (one per request; two at once is a 400 naming both):
- `response_format` {"type": "json_object"} or {"type": "json_schema", "json_schema":
  {"name", "schema", "strict"}} (OpenAI). strict true: a schema keyword that cannot be
  enforced is a 400 naming it (param response_format); strict false or absent: such keywords
  are ignored (llguidance's lenient mode) and the rest is enforced, so an output always
  parses and meets every keyword that is enforced. OpenAI itself refuses unsupported schemas
  only under strict; vLLM's guidance backend is lenient the same way.
- `structured_outputs` {"choice"|"regex"|"json"|"grammar"|"json_object"} (vLLM's current
  spelling) and its older `guided_choice`/`guided_regex`/`guided_json`/`guided_grammar`:
  always strict (there is no flag to say otherwise).
- chat `tools` with `tool_choice` "required" or {"type": "function", "function": {"name"}}:
  the output is a JSON object {"name": <a tool>, "arguments": <valid under its parameters>}
  (anyOf over the tools), answered as `message.tool_calls`. A tool with strict true has its
  parameters checked strictly (400 naming the keyword, param tools).

tool_choice "auto" (the default when tools are sent) is not constrained: the tools go into
the prompt through the tokenizer's chat template (`apply_chat_template(..., tools=...)`, as
the model was trained to see them) and the answer is a tool call only if the model wrote one
(a JSON object with "name" and "arguments", bare or in <tool_call> tags, as Hermes-style
templates ask); otherwise it is plain content. Several calls in one answer — one <tool_call>
block each (Hermes, Qwen) or a JSON list of calls (Llama 3.x, SmolLM2's template) — become
several `tool_calls`, as vLLM's parsers do; `parallel_tool_calls: false` keeps the first. A
small model rarely decides well: use "required" or a named function to force a valid call
(one call: the constraint is one object). "none" renders the tools and never parses a call.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from tunelab.decoding.constraints import Constraint, check
from tunelab.errors import TunelabError
from tunelab.serve.errors import APIError


@dataclass
class Plan:
    """What a request asks for beyond free text."""

    constraint: Constraint | None = None
    param: str | None = None
    """The request field the constraint came from."""
    tools: list[dict] | None = None
    """OpenAI tool dicts, for the chat template (None: no tools)."""
    tool_mode: str = "none"
    """none, auto, required or named."""
    names: list[str] = field(default_factory=list)
    """Tool names a call may have."""
    parallel: bool = True
    """Several calls may answer (OpenAI's parallel_tool_calls)."""

    @property
    def calls(self) -> bool:
        """The answer may be a tool call (parsed from the text at the end)."""
        return self.tool_mode != "none"


def _json_arg(value, param: str) -> dict:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise APIError(400, f"{param} is not valid JSON ({exc.msg})", param=param) from None
    if not isinstance(value, dict):
        raise APIError(400, f"{param} must be a JSON schema (an object)", param=param)
    return value


def _checked(c: Constraint, param: str) -> Constraint:
    try:
        check(c)
    except TunelabError as exc:
        raise APIError(400, f"{param}: {exc}", param=param) from None
    return c


def _from_response_format(rf) -> Constraint | None:
    if rf is None or rf.type == "text":
        return None
    if rf.type == "json_object":
        return Constraint.json_object()
    spec = rf.json_schema
    if spec is None:
        raise APIError(
            400,
            'response_format json_schema needs "json_schema": {"name": ..., "schema": {...}}',
            param="response_format",
        )
    if spec.schema_ is None:
        return Constraint.json_object()
    return Constraint.json_schema(spec.schema_, lenient=not spec.strict)


def _from_structured(so) -> list[tuple[str, Constraint]]:
    if so is None:
        return []
    out = []
    if so.choice is not None:
        out.append(Constraint.choice(so.choice))
    if so.regex is not None:
        out.append(Constraint.regex(so.regex))
    if so.json_ is not None:
        out.append(Constraint.json_schema(_json_arg(so.json_, "structured_outputs")))
    if so.grammar is not None:
        out.append(Constraint.grammar(so.grammar))
    if so.json_object:
        out.append(Constraint.json_object())
    if len(out) > 1:
        raise APIError(
            400,
            "structured_outputs takes one of choice, regex, json, grammar, json_object",
            param="structured_outputs",
        )
    return [("structured_outputs", c) for c in out]


def _guided(body) -> list[tuple[str, Constraint]]:
    out = []
    if body.guided_choice is not None:
        out.append(("guided_choice", Constraint.choice(body.guided_choice)))
    if body.guided_regex is not None:
        out.append(("guided_regex", Constraint.regex(body.guided_regex)))
    if body.guided_json is not None:
        schema = _json_arg(body.guided_json, "guided_json")
        out.append(("guided_json", Constraint.json_schema(schema)))
    if body.guided_grammar is not None:
        out.append(("guided_grammar", Constraint.grammar(body.guided_grammar)))
    return out


def call_schema(tools: list, only: str | None = None) -> dict:
    """The JSON schema of one call of `tools` (or of the tool named `only`):
    {"name": <its name>, "arguments": <its parameters>}, anyOf over the tools."""
    options = []
    for t in tools:
        f = t.function
        if only is not None and f.name != only:
            continue
        options.append(
            {
                "type": "object",
                "properties": {
                    "name": {"const": f.name},
                    "arguments": f.parameters if f.parameters is not None else {"type": "object"},
                },
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    return options[0] if len(options) == 1 else {"anyOf": options}


def _tools(body) -> Plan:
    choice = body.tool_choice
    if not body.tools:
        if choice not in (None, "none"):
            raise APIError(
                400, "tool_choice needs tools: send tools or drop tool_choice", param="tool_choice"
            )
        return Plan()
    names = [t.function.name for t in body.tools]
    if len(set(names)) != len(names):
        raise APIError(400, "tools have the same name twice: names must differ", param="tools")
    for t in body.tools:
        if t.function.strict and t.function.parameters is not None:
            _checked(Constraint.json_schema(t.function.parameters), "tools")
    dicts = [t.model_dump(exclude_none=True) for t in body.tools]
    mode = "auto" if choice is None else choice if isinstance(choice, str) else "named"
    parallel = getattr(body, "parallel_tool_calls", None) is not False
    plan = Plan(tools=dicts, tool_mode=mode, names=names, parallel=parallel)
    if mode in ("required", "named"):
        only = choice.function.name if mode == "named" else None
        if only is not None and only not in names:
            raise APIError(
                400,
                f"tool_choice names {only!r}, which is not one of the tools ({', '.join(names)})",
                param="tool_choice",
            )
        plan.names = [only] if only else names
        plan.constraint = Constraint.json_schema(call_schema(body.tools, only), lenient=True)
    return plan


def plan_for(body, chat: bool) -> Plan:
    """The request's constraint and tools, checked (APIError 400 naming the field at fault)."""
    plan = _tools(body) if chat else Plan()
    found = []
    if plan.constraint is not None:
        found.append(("tool_choice", plan.constraint))
    c = _from_response_format(body.response_format)
    if c is not None:
        found.append(("response_format", c))
    found += _from_structured(body.structured_outputs) + _guided(body)
    if len(found) > 1:
        a, b = found[0][0], found[1][0]
        raise APIError(
            400, f"{a} and {b} both constrain the output: send only one of them", param=b
        )
    if found:
        plan.param = found[0][0]
        plan.constraint = _checked(found[0][1], plan.param)
    return plan


def check_tokenizer(served, plan: Plan) -> None:
    """Build the constraint's matcher for the served tokenizer once, now, so that a tokenizer
    llguidance cannot use (not a fast one) is a 400 before any answer starts."""
    if plan.constraint is None:
        return
    from tunelab.decoding.constraints import Guide
    from tunelab.decoding.engine import eos_ids

    model, tok = served.model, served.tokenizer
    try:
        Guide(model, tok, eos_ids(model, tok)).matcher(plan.constraint)
    except TunelabError as exc:
        raise APIError(400, f"{plan.param}: {exc}", param=plan.param) from None


_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)


def _call(value: Any, names: list[str]) -> dict | None:
    """One OpenAI tool call from {"name", "arguments" (or "parameters")}, else None."""
    if not isinstance(value, dict) or value.get("name") not in names:
        return None
    args = value.get("arguments", value.get("parameters"))
    if not isinstance(args, dict):
        return None
    fn = {"name": value["name"], "arguments": json.dumps(args, ensure_ascii=False)}
    return {"id": "call_" + uuid.uuid4().hex[:24], "type": "function", "function": fn}


def parse_call(text: str, names: list[str], parallel: bool = True) -> list[dict] | None:
    """OpenAI `tool_calls` if `text` is nothing but calls of `names`: JSON objects {"name",
    "arguments"}, bare or in <tool_call> tags (one block per call, the last tag may be left
    open), or a JSON list of them; None when it is anything else (then it is content). With
    `parallel` False only the first call is kept."""
    blocks = _BLOCK.findall(text)
    if blocks and _BLOCK.sub("", text).strip():
        return None  # prose beside the calls: the answer is content
    values: list[Any] = []
    for raw in blocks or [text.strip()]:
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            return None
        values += value if isinstance(value, list) else [value]
    calls = [_call(v, names) for v in values]
    if not calls or any(c is None for c in calls):
        return None
    return calls if parallel else calls[:1]


def template_message(m, content: str) -> dict[str, Any]:
    """A request message as chat templates take it: tool calls with their arguments parsed
    (templates write them with tojson), tool results with their call id."""
    role = "system" if m.role == "developer" else m.role
    out: dict[str, Any] = {"role": role, "content": content}
    if m.tool_calls:
        calls = []
        for c in m.tool_calls:
            try:
                args = json.loads(c.function.arguments)
            except json.JSONDecodeError:
                args = c.function.arguments
            fn = {"name": c.function.name, "arguments": args}
            calls.append({"id": c.id, "type": "function", "function": fn})
        out["tool_calls"] = calls
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.name is not None:
        out["name"] = m.name
    return out


# ---------------------------------------------------------------------- logprobs, wire shapes
def chat_logprobs(entries: list[dict]) -> dict:
    """choices[i].logprobs of a chat answer: {"content": [{token, logprob, bytes,
    top_logprobs}]}."""
    content = [
        {
            "token": e["token"],
            "logprob": e["logprob"],
            "bytes": e["bytes"],
            "top_logprobs": [{"token": t, "logprob": lp, "bytes": b} for t, lp, b in e["top"]],
        }
        for e in entries
    ]
    return {"content": content}


def completion_logprobs(entries: list[dict]) -> dict:
    """choices[i].logprobs of a (legacy) completion: tokens, token_logprobs, top_logprobs
    (the k alternatives and the chosen token, as OpenAI returns up to k + 1) and
    text_offset (each token's first character in the generated text)."""
    tops = []
    for e in entries:
        top: dict[str, float] = {}
        for t, lp, _ in e["top"]:  # most likely first: two tokens of one text keep the best
            top.setdefault(t, lp)
        top.setdefault(e["token"], e["logprob"])
        tops.append(top)
    return {
        "tokens": [e["token"] for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": tops,
        "text_offset": [e["offset"] for e in entries],
    }


__all__ = ["Plan", "plan_for", "parse_call", "call_schema", "chat_logprobs"]
