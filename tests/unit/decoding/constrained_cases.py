"""What constrained outputs must match, shared by the engine's tests (test_constraints.py) and
the server's (serve/test_structured_outputs.py): a JSON schema, a date regex, a Lark grammar
and the regex its language equals, prompts, and one validity check for every kind."""

from __future__ import annotations

import json
import re

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 99},
        "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 3},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "age", "ok"],
    "additionalProperties": False,
}
DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
GRAMMAR = 'start: greet " " NAME "!"\ngreet: "hello" | "hi"\nNAME: /[a-z]{1,6}/\n'
GRAMMAR_RE = r"(hello|hi) [a-z]{1,6}!"
# prompts of every shape: words, a half-open JSON, a year, a question
PROMPTS = [
    "the quick",
    "give me json",
    "yes or no?",
    "2024",
    "hello",
    "brown fox jumps",
    '{"a":',
    "over the lazy dog and more words here",
]


def valid(kind: str, text: str, choices: list[str]) -> bool:
    """Whether `text` satisfies a constraint of `kind` (choice among `choices`, regex = DATE,
    grammar = GRAMMAR, json_object: any JSON object, otherwise JSON valid under SCHEMA)."""
    import jsonschema

    if kind == "choice":
        return text in choices
    if kind == "regex":
        return re.fullmatch(DATE, text) is not None
    if kind == "grammar":
        return re.fullmatch(GRAMMAR_RE, text) is not None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return False
    if kind == "json_object":
        return isinstance(value, dict)
    try:
        jsonschema.validate(value, SCHEMA)
    except jsonschema.ValidationError:
        return False
    return True
