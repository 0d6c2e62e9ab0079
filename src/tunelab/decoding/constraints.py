"""Constrained decoding: a choice, a regular expression, a JSON schema, any JSON object or a
Lark grammar, enforced token by token with llguidance (an optional extra:
`pip install tunelab[constrained]`).

    opts = DecodingOptions(constraint=Constraint.json_schema({"type": "object", ...}))

llguidance does the grammar work (no well-kept library does it better here: it is what vLLM
and SGLang use, an abi3 wheel with no heavy dependencies). This module only adapts it:

- `Constraint` is the spec a request carries (plain data; importing this module loads neither
  torch nor llguidance, so `tunelab generate --help` stays light);
- `check` validates a spec before any model loads and refuses what cannot be enforced
  (llguidance names unsupported JSON-schema keywords, e.g. `Unimplemented keys: ["not"]`);
- `Guide` holds what one engine shares: the llguidance tokenizer (built once per tokenizer and
  cached, about 0.3 s for a 49k vocabulary) and a thread pool. `Guide.matcher` starts a
  request's matcher; `Guide.mask` fills ONE (rows, vocab / 32) bitmask for all constrained rows
  of a step at once (llguidance's parallel executor) and sets their forbidden logits to -inf,
  leaving unconstrained rows untouched; `Guide.advance` consumes the chosen tokens and says
  which rows are complete (only EOS could follow).

JSON is compact and single-spaced by default (`", "`, `": "`, no free whitespace: small
models otherwise pad with endless newlines); a schema's own `"x-guidance"` key overrides it.
"""

from __future__ import annotations

import json
import re
import weakref
from dataclasses import dataclass
from typing import Any

from tunelab.errors import TunelabError

INSTALL = "constrained generation needs llguidance: pip install tunelab[constrained]"
KINDS = ("choice", "regex", "json_schema", "json_object", "grammar")
JSON_DEFAULTS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
_TOKENIZERS: weakref.WeakKeyDictionary = (
    weakref.WeakKeyDictionary()
)  # hf tokenizer -> {key: LLTokenizer}


@dataclass
class Constraint:
    """What every generated text must be: one of `choices`, a full match of `regex`, JSON valid
    under `schema`, any JSON object (`json_object`), or a sentence of the Lark `grammar`."""

    kind: str
    value: Any = None
    """list[str] for choice, str for regex and grammar, dict for json_schema, None else."""
    lenient: bool = False
    """JSON schemas: ignore keywords that cannot be enforced (llguidance's `lenient`) instead
    of refusing the schema; the outputs then may not meet those keywords."""

    @classmethod
    def choice(cls, options: list[str]) -> Constraint:
        return cls("choice", list(options))

    @classmethod
    def regex(cls, pattern: str) -> Constraint:
        return cls("regex", pattern)

    @classmethod
    def json_schema(cls, schema: dict, lenient: bool = False) -> Constraint:
        return cls("json_schema", schema, lenient)

    @classmethod
    def json_object(cls) -> Constraint:
        return cls("json_object")

    @classmethod
    def grammar(cls, lark: str) -> Constraint:
        return cls("grammar", lark)


def _llguidance():
    try:
        import llguidance
    except ImportError:
        raise TunelabError(INSTALL) from None
    return llguidance


def grammar_of(c: Constraint) -> str:
    """The llguidance grammar of a constraint (not yet validated)."""
    if not isinstance(c, Constraint) or c.kind not in KINDS:
        raise TunelabError(f"a constraint is one of {', '.join(KINDS)}; got {c!r}")
    m = _llguidance().LLMatcher
    if c.kind == "choice":
        if not c.value or not all(isinstance(s, str) and s for s in c.value):
            raise TunelabError("a choice constraint needs one or more non-empty strings")
        return m.grammar_from_lark(
            "start: " + " | ".join(json.dumps(s, ensure_ascii=False) for s in c.value)
        )
    if c.kind in ("regex", "grammar"):
        if not isinstance(c.value, str) or not c.value:
            raise TunelabError(f"a {c.kind} constraint needs a non-empty string")
        return (m.grammar_from_regex if c.kind == "regex" else m.grammar_from_lark)(c.value)
    schema = {"type": "object"} if c.kind == "json_object" else c.value
    if not isinstance(schema, dict):
        raise TunelabError(f"a JSON schema must be a JSON object, got {type(schema).__name__}")
    try:
        over = {"lenient": True} if c.lenient else None
        return m.grammar_from_json_schema(schema, defaults=JSON_DEFAULTS, overrides=over)
    except ValueError as exc:
        raise TunelabError(f"bad JSON schema: {exc}") from None


def _why(kind: str, message: str) -> str:
    # llguidance's messages span lines (a caret under the spot, a code excerpt): keep the words
    lines = [ln.strip() for ln in message.strip().splitlines()]
    keep = [ln for ln in lines if ln.strip("^ ") and not re.match(r"\d+ \|", ln)]
    first = " ".join(" ".join(keep).split())
    what = {"json_schema": "JSON schema", "json_object": "JSON", "choice": "choice"}
    return f"cannot enforce this {what.get(kind, kind)}: {first}"


def check(c: Constraint) -> str:
    """Validate `c` (no tokenizer needed); its grammar, or a one-line TunelabError naming what
    cannot be enforced (an unsupported JSON-schema keyword, a look-around, a bad rule)."""
    grammar = grammar_of(c)
    is_error, messages = _llguidance().LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        raise TunelabError(_why(c.kind, messages[0] if messages else "invalid"))
    return grammar


def ll_tokenizer(tokenizer, eos: set[int], n_vocab: int):
    """llguidance's view of a Hugging Face fast tokenizer, built once per (tokenizer, EOS
    set, vocabulary size) and cached for as long as the tokenizer lives."""
    key = (tuple(sorted(eos)), n_vocab)
    per = _TOKENIZERS.setdefault(tokenizer, {})
    if key not in per:
        _llguidance()
        import llguidance.hf

        try:
            eos_arg = list(key[0]) if key[0] else None
            per[key] = llguidance.hf.from_tokenizer(tokenizer, n_vocab=n_vocab, eos_token=eos_arg)
        except ValueError as exc:
            raise TunelabError(f"constrained generation needs a fast tokenizer ({exc})") from None
    return per[key]


class Guide:
    """Matchers, masks and token bookkeeping of the constrained rows of one engine."""

    def __init__(self, model, tokenizer, eos: set[int]) -> None:
        self.model, self.tokenizer, self.eos = model, tokenizer, eos
        self._tok = None
        self._executor = None

    def matcher(self, c: Constraint | None):
        """A fresh matcher for one request (None for an unconstrained one)."""
        if c is None:
            return None
        grammar = check(c)
        if self._tok is None:
            head = self.model.get_output_embeddings()  # a packed head's weight is a copy
            vocab = getattr(head, "out_features", None) or head.weight.shape[0]
            n = max(vocab, len(self.tokenizer))
            self._tok = ll_tokenizer(self.tokenizer, self.eos, n)
            self._executor = _llguidance().LLExecutor()
        m = _llguidance().LLMatcher(self._tok, grammar, log_level=0)
        if m.is_error():
            raise TunelabError(_why(c.kind, m.get_error()))
        return m

    def allowed(self, matchers: list, vocab: int, device):
        """(rows, vocab) bool, True where a token is allowed: every token of a row whose
        matcher is None, the constraint's next tokens otherwise; None when no row is
        constrained. One bitmask for all rows, filled in parallel by llguidance."""
        rows = [i for i, m in enumerate(matchers) if m is not None]
        if not rows:
            return None
        import numpy as np
        import torch
        from llguidance.numpy import fill_next_token_bitmask_par

        bits = np.full((len(rows), (self._tok.vocab_size + 31) // 32), -1, dtype=np.int32)
        fill_next_token_bitmask_par(
            self._executor, [(matchers[i], k) for k, i in enumerate(rows)], bits
        )
        words = torch.from_numpy(bits).to(device)  # (constrained rows, vocab / 32)
        shifts = torch.arange(32, dtype=torch.int32, device=device)
        some = ((words.unsqueeze(-1) >> shifts) & 1).bool().view(len(rows), -1)[:, :vocab]
        if some.shape[1] < vocab:  # a head wider than the tokenizer: the rest is forbidden
            some = torch.nn.functional.pad(some, (0, vocab - some.shape[1]))
        if len(rows) == len(matchers):
            return some
        out = torch.ones(len(matchers), vocab, dtype=torch.bool, device=device)
        out[torch.tensor(rows, device=device)] = some
        return out

    def mask(self, logits, matchers: list):
        """`logits` (rows, vocab) with every constrained row's forbidden tokens at -inf; rows
        whose matcher is None come back untouched; a new tensor when anything is masked."""
        allowed = self.allowed(matchers, logits.shape[-1], logits.device)
        return logits if allowed is None else logits.masked_fill(~allowed, float("-inf"))

    @staticmethod
    def advance(matchers: list, tokens: list[int]) -> list[bool]:
        """Consume each constrained row's chosen token (a token < 0 is skipped: a dead beam);
        True where the row is complete: the matcher stopped (only EOS may follow), or it
        consumed EOS."""
        done = []
        for m, t in zip(matchers, tokens, strict=True):
            if m is None or t < 0:
                done.append(False)
                continue
            m.consume_token(t)
            done.append(m.is_stopped())
        return done

    @staticmethod
    def fork(matchers: list, parents: list[int]) -> list:
        """Row i's matcher becomes a copy of row `parents[i]`'s (beam search reordering); the
        first child of a parent takes its matcher, the others deep copies."""
        taken: set[int] = set()
        out = []
        for p in parents:
            m = matchers[p]
            out.append(m if m is None or p not in taken else m.deep_copy())
            taken.add(p)
        return out


__all__ = ["Constraint", "Guide", "check", "INSTALL"]
