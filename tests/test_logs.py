"""Logging: personal data and tokens never reach the log output."""

from __future__ import annotations

import logging
import sys
import threading

import pytest

from appliance.logs import RedactingFilter, RedactingFormatter, mask_emails


def test_logs_redacting_filter_masks_emails_and_tokens(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.redact")
    redacting = RedactingFilter()
    logger.addFilter(redacting)
    try:
        with caplog.at_level(logging.INFO, logger="test.redact"):
            logger.info("contact %s via %s", "jane.doe@example.com", "Bearer abc.def")
            logger.info("url https://x/l?unique_id=1&secret=topsecret&hash=ff")
    finally:
        logger.removeFilter(redacting)
    text = caplog.text
    assert "jane.doe@example.com" not in text
    assert "j***@e***.com" in text
    assert "abc.def" not in text
    assert "topsecret" not in text
    assert "Bearer ***" in text


def _filtered(message: str, timeout: float = 10.0) -> str:
    """`message` after the RedactingFilter, computed on a thread we wait for at most `timeout`."""
    record = logging.LogRecord("test", logging.INFO, __file__, 1, "%s", (message,), None)
    done = threading.Event()

    def run() -> None:
        RedactingFilter().filter(record)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(timeout), f"masking {len(message)} characters took over {timeout} s"
    return record.getMessage()


@pytest.mark.parametrize("size", [250_000, 1_000_000])
@pytest.mark.parametrize(
    "unit",
    ["a", "a.", "a@", "a.b@", "@a.bc", "a@b.c", "Bearer x ", "bearer  ", "x" * 999 + "@"],
)
def test_logs_masking_is_linear_on_adversarial_text(size: int, unit: str) -> None:
    # The old regex backtracked quadratically: 250 kB of "a" took ~52 s, 1 MB ~15 minutes.
    tail = " contact jane.doe@example.com"
    text = _filtered(unit * (size // len(unit)) + tail)
    assert text.endswith(" contact j***@e***.com")
    assert "jane.doe" not in text


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("jane.doe@example.com", "j***@e***.com"),
        ("mail a.b+c@mail.example.co.uk now", "mail a***@m***.uk now"),
        ("a@b.com.x@c.de", "a***@b***.com.***@c***.de"),  # as the old regex did
        ("no@tld and @lone and x@.com", "no@tld and @lone and x@.com"),
        ("joe@host.c0m9", "joe@host.c0m9"),
        ("", ""),
    ],
)
def test_logs_mask_emails_keeps_the_masking_rules(text: str, masked: str) -> None:
    assert mask_emails(text) == masked


def test_logs_formatter_masks_tracebacks_and_addresses_of_any_script() -> None:
    formatter = RedactingFormatter("%(levelname)s %(message)s")
    try:
        raise ValueError("no contact jané.døe@exämple.com (Bearer abc.def)")
    except ValueError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "lookup of %s failed",
                                   ("zoë@voorbeeld.nl",), sys.exc_info())
    line = formatter.format(record)
    assert "ValueError: no contact j***@e***.com (Bearer ***" in line  # the traceback too
    assert "lookup of z***@v***.nl failed" in line
    assert "døe" not in line and "zoë" not in line and "abc.def" not in line
