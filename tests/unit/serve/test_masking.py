"""PII masking: e-mails, phone numbers, Luhn-valid card numbers; the logging filter."""

from __future__ import annotations

import logging

import pytest

from tunelab.serve.masking import MaskingFilter, luhn_ok, mask_any, mask_pii


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("write to ann.lee+news@mail.example.co.uk today", "write to [EMAIL] today"),
        ("call +44 20 7946 0958 or (555) 123-4567", "call [PHONE] or [PHONE]"),
        ("call 555.123.4567.", "call [PHONE]."),
        ("card 4111 1111 1111 1111 ok", "card [CARD] ok"),
        ("card 5500-0055-5555-5559", "card [CARD]"),
        ("amex 378282246310005", "amex [CARD]"),
    ],
)
def test_masks(text, want):
    assert mask_pii(text) == want


@pytest.mark.parametrize(
    "text",
    [
        "on 2024-01-15 at 10:30",  # a date is not a phone number
        "version 1.2.3 costs 19.99",
        "order 12345 in room 42",
        "card 4111-1111-1111-1112 fails Luhn and has 16 digits",
        "no at sign here: user at example dot com",
    ],
)
def test_leaves_non_pii_alone(text):
    assert mask_pii(text) == text


def test_luhn():
    assert luhn_ok("4111111111111111") and luhn_ok("79927398713")
    assert not luhn_ok("4111111111111112") and not luhn_ok("79927398710")


def test_mask_any_walks_lists_and_dicts():
    value = [{"role": "user", "content": "I am bob@example.org"}, "4111111111111111", 3]
    assert mask_any(value) == [{"role": "user", "content": "I am [EMAIL]"}, "[CARD]", 3]


def test_logging_filter_masks_message_and_args(caplog):
    logger = logging.getLogger("tunelab.test-masking")
    flt = MaskingFilter()
    logger.addFilter(flt)
    try:
        with caplog.at_level("INFO", logger="tunelab.test-masking"):
            logger.info("user %s paid with %s", "eve@example.com", "4111 1111 1111 1111")
    finally:
        logger.removeFilter(flt)
    assert caplog.messages == ["user [EMAIL] paid with [CARD]"]
