"""Logging: personal data and tokens never reach the log output."""

from __future__ import annotations

import logging

import pytest

from appliance.logs import RedactingFilter


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
