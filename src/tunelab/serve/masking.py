"""Masking personal data in text: e-mail addresses, phone numbers and card numbers.

    mask_pii("mail ann@example.com or call +44 20 7946 0958, card 4111 1111 1111 1111")
    -> "mail [EMAIL] or call [PHONE], card [CARD]"

Card-like numbers (13-19 digits, optionally grouped by spaces or dashes) are masked only when
they pass the Luhn check, so order numbers and timestamps mostly survive; phone numbers are
9-15 digits in groups, with an optional +country code and (area) code. These are patterns,
not a guarantee: `MaskingFilter` applies them to log records (message and arguments), and the
server applies them to inputs when asked (--mask-pii-in-inputs).
"""

from __future__ import annotations

import logging
import re

EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){1,5}(?![\w])"
)


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
    digits = _digits(m.group())
    return "[CARD]" if 13 <= len(digits) <= 19 and luhn_ok(digits) else m.group()


def _phone(m: re.Match) -> str:
    return "[PHONE]" if 9 <= len(_digits(m.group())) <= 15 else m.group()


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


class MaskingFilter(logging.Filter):
    """A logging filter that masks personal data in the record's formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True
        record.msg, record.args = mask_pii(message), None
        return True


def install_log_masking(logger_names=("tunelab", "uvicorn", "uvicorn.access", "uvicorn.error")):
    """Add a MaskingFilter to the named loggers and their handlers; returns the filter."""
    flt = MaskingFilter()
    for name in logger_names:
        logger = logging.getLogger(name)
        logger.addFilter(flt)
        for h in logger.handlers:
            h.addFilter(flt)
    return flt
