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


@pytest.mark.parametrize(
    "text",
    [
        "run minilm-full-20261202-135847 finished",  # a run name's timestamp
        "saved to runs/minilm-full-20261202-135847/",
        "started 20261202-135847",
        "build v2-5551234567",  # a number glued to a word by a hyphen is an identifier
    ],
)
def test_run_names_and_timestamps_are_not_phones(text):
    assert mask_pii(text) == text


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("card2 4111-1111-1111-1111", "card2 [CARD]"),
        ("card 2 4111 1111 1111 1111", "card 2 [CARD]"),
        ("item 7 5500-0055-5555-5559 ok", "item 7 [CARD] ok"),
        ("4111 1111 1111 1111 7", "[CARD] 7"),
        ("call 555-123-4567 or +1 (555) 123-4567", "call [PHONE] or [PHONE]"),
        (
            "run minilm-full-20261202-135847: mail bo@example.com",
            "run minilm-full-20261202-135847: mail [EMAIL]",
        ),
    ],
)
def test_cards_after_a_digit_and_phones_still_masked(text, want):
    assert mask_pii(text) == want


def _record(name, msg, args, exc_info=None):
    return logging.getLogger(name).makeRecord(name, logging.INFO, __file__, 1, msg, args, exc_info)


def test_filter_keeps_uvicorn_access_records_formattable():
    from uvicorn.logging import AccessFormatter

    args = ("127.0.0.1:5000", "GET", "/v1/x?mail=eve@example.com", "1.1", 422)
    record = _record("uvicorn.access", '%s - "%s %s HTTP/%s" %d', args)
    assert MaskingFilter().filter(record)
    line = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s').format(record)
    assert line == '127.0.0.1:5000 - "GET /v1/x?mail=[EMAIL] HTTP/1.1" 422 Unprocessable Entity'


def test_filter_masks_dict_args_and_odd_messages():
    record = _record("tunelab.x", "user %(who)s, %(n)d", {"who": "eve@example.com", "n": 3})
    MaskingFilter().filter(record)
    assert record.getMessage() == "user [EMAIL], 3"
    record = _record("tunelab.x", ValueError("bad card 4111 1111 1111 1111"), None)
    MaskingFilter().filter(record)
    assert record.getMessage() == "bad card [CARD]"


def test_filter_masks_exception_text_and_chained_errors():
    try:
        try:
            raise ValueError("input {'mail': 'eve@example.com', 'card': '4111 1111 1111 1111'}")
        except ValueError as inner:
            raise RuntimeError("while answering +44 20 7946 0958") from inner
    except RuntimeError:
        import sys

        record = _record("tunelab.x", "failed for %s", ("bob@example.org",), sys.exc_info())
    MaskingFilter().filter(record)
    text = logging.Formatter("%(message)s").format(record)
    assert "ValueError" in text and "RuntimeError" in text and "[EMAIL]" in text
    for secret in ("eve@example.com", "bob@example.org", "4111 1111 1111 1111", "7946 0958"):
        assert secret not in text


def test_filter_masks_percent_encoded_query_strings():
    from uvicorn.logging import AccessFormatter

    path = "/v1/x?mail=eve%40example.com&tel=%2B44+20+7946+0958&card=4111%201111%201111%201111"
    record = _record(
        "uvicorn.access", '%s - "%s %s HTTP/%s" %d', ("1.2.3.4:5", "GET", path, "1.1", 200)
    )
    assert MaskingFilter().filter(record)
    line = AccessFormatter('"%(request_line)s" %(status_code)s').format(record)
    assert line == '"GET /v1/x?mail=[EMAIL]&tel=[PHONE]&card=[CARD] HTTP/1.1" 200 OK'
    # percent signs and plus signs that hide nothing are left as they are
    record = _record("tunelab.x", "%s", ("50%25 off, a+b, 100%",))
    MaskingFilter().filter(record)
    assert record.getMessage() == "50%25 off, a+b, 100%"
