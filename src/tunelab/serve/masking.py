"""Masking personal data in text: e-mail addresses, phone numbers and card numbers.

    mask_pii("mail ann@example.com or call +44 20 7946 0958, card 4111 1111 1111 1111")
    -> "mail [EMAIL] or call [PHONE], card [CARD]"

Card-like numbers (13-19 digits, optionally grouped by spaces or dashes) are masked only when
they pass the Luhn check, so order numbers and timestamps mostly survive; phone numbers are
9-15 digits in groups, with an optional +country code and (area) code, except numbers glued
to a word by a hyphen and YYYYMMDD-HHMMSS timestamps (run names). These are patterns, not a
guarantee: `MaskingFilter` applies them to log records (message, arguments, exception text;
percent-encoded text too, as in a logged query string), and the server applies them to
inputs when asked (--mask-pii-in-inputs).
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
PHONE = re.compile(
    r"(?<![\w+-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){1,5}(?![\w-])"
)
"""A number glued to a word by a hyphen (run-20261202-135847, v2-5551234567) is an
identifier, not a phone number."""
TIMESTAMP = re.compile(
    r"(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:[0-2]\d|3[01])[-_ T]?[0-2]\d[0-5]\d(?:[0-5]\d)?"
)
"""YYYYMMDD-HHMM[SS]: a date and time (run names, file names), never masked as a phone."""


def luhn_ok(digits: str) -> bool:
    """True when `digits` (digits only) passes the Luhn checksum used by payment cards."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _digits(s: str) -> str:
    return "".join(ch for ch in s if ch.isdigit())


def _card(m: re.Match) -> str:
    """[CARD] for a Luhn-valid 13-19 digit run; else the longest Luhn-valid run of whole
    digit groups inside it ("order 2 4111-1111-1111-1111": the match starts at the 2)."""
    text = m.group()
    digits = _digits(text)
    if 13 <= len(digits) <= 19 and luhn_ok(digits):
        return "[CARD]"
    starts = [0] + [i + 1 for i, ch in enumerate(text) if ch in " -"]
    ends = [i for i, ch in enumerate(text) if ch in " -"] + [len(text)]
    spans = [(s, e) for s in starts for e in ends if s < e]
    for s, e in sorted(spans, key=lambda se: se[0] - se[1]):
        inner = _digits(text[s:e])
        if 13 <= len(inner) <= 19 and luhn_ok(inner):
            return text[:s] + "[CARD]" + CARD.sub(_card, text[e:])
    return text


def _phone(m: re.Match) -> str:
    text = m.group()
    if TIMESTAMP.fullmatch(text):
        return text
    return "[PHONE]" if 9 <= len(_digits(text)) <= 15 else text


def mask_pii(text: str) -> str:
    """`text` with e-mail addresses, card numbers (Luhn-valid) and phone numbers replaced."""
    text = EMAIL.sub("[EMAIL]", text)
    text = CARD.sub(_card, text)
    return PHONE.sub(_phone, text)


def mask_any(value):
    """mask_pii over a string, or every string in (nested) lists and dicts."""
    if isinstance(value, str):
        return mask_pii(value)
    if isinstance(value, list | tuple):
        return type(value)(mask_any(v) for v in value)
    if isinstance(value, dict):
        return {k: mask_any(v) for k, v in value.items()}
    return value


def _mask_logged(text: str) -> str:
    """mask_pii, and over the percent-decoded text when that hides more: a query string as
    uvicorn's access line prints it (?to=eve%40example.com&card=4111+1111+1111+1111)."""
    masked = mask_pii(text)
    if "%" not in masked and "+" not in masked:
        return masked
    decoded = unquote_plus(masked)
    redone = mask_pii(decoded)
    return redone if redone != decoded else masked


def _mask_arg(value):
    """`value` masked, keeping its type where it holds no personal data (a formatter may
    need an int for %d, or unpack a tuple of arguments as uvicorn's access formatter does)."""
    if isinstance(value, str):
        return _mask_logged(value)
    if isinstance(value, bool | int | float | None):
        masked = _mask_logged(str(value))
        return value if masked == str(value) else masked
    if isinstance(value, list | tuple):
        return type(value)(_mask_arg(v) for v in value)
    if isinstance(value, dict):
        return {k: _mask_arg(v) for k, v in value.items()}
    text = str(value)
    masked = _mask_logged(text)
    return value if masked == text else masked


class MaskingFilter(logging.Filter):
    """A logging filter that masks personal data in a record: its message and arguments
    (keeping the arguments' shape, so every formatter can still use them) and any exception
    or stack text attached to it (chained exceptions included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg if isinstance(record.msg, str) else str(record.msg)
        record.msg = _mask_logged(msg)
        if record.args:
            original, record.args = record.args, _mask_arg(record.args)
            try:
                message = record.getMessage()
            except (TypeError, ValueError, KeyError):
                message = None
            if message is None or _mask_logged(message) != message:
                # a value split between template and arguments, or arguments that no longer
                # fit the template: the whole message, masked, with no arguments left
                try:
                    message = msg % original
                except (TypeError, ValueError, KeyError):
                    message = f"{msg} {original!r}"
                record.msg, record.args = _mask_logged(message), ()
                record.__dict__.pop("color_message", None)
        if record.exc_info and record.exc_info[0] is not None:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_text, record.exc_info = _mask_logged(text), None
        elif record.exc_text:
            record.exc_text = _mask_logged(record.exc_text)
        if record.stack_info:
            record.stack_info = _mask_logged(record.stack_info)
        return True


LOGGERS = ("tunelab", "tunelab.serve", "uvicorn", "uvicorn.access", "uvicorn.error")


def install_log_masking(logger_names=LOGGERS) -> MaskingFilter:
    """Add a MaskingFilter to the named loggers, their handlers and the root logger's
    handlers (a logger's own filters do not see records its children pass up); returns it."""
    flt = MaskingFilter()
    for name in logger_names:
        logger = logging.getLogger(name)
        logger.addFilter(flt)
        for h in logger.handlers:
            h.addFilter(flt)
    for h in logging.getLogger().handlers:
        h.addFilter(flt)
    return flt


def remove_log_masking(flt: MaskingFilter, logger_names=LOGGERS) -> None:
    """Undo `install_log_masking` (tests; a program that turns masking off again)."""
    for logger in [logging.getLogger(), *map(logging.getLogger, logger_names)]:
        for holder in [logger, *logger.handlers]:
            holder.removeFilter(flt)
