"""Logging to stderr (journald keeps it), with a last line of defence against personal data."""

from __future__ import annotations

import logging
import os
import re
import sys

EMAIL = re.compile(
    r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9-])[A-Za-z0-9.-]*(\.[A-Za-z]{2,})"
)
BEARER = re.compile(r"(?i)(bearer\s+|token=|secret=|password=)[^\s&\"']+")


class RedactingFilter(logging.Filter):
    """Masks e-mail addresses and bearer tokens in every formatted record.

    Modules mask what they log themselves (`appliance.privacy`); this catches what slips
    through, e.g. a library's exception message quoting a request.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message in place; never drops a record."""
        message = record.getMessage()
        redacted = BEARER.sub(r"\1***", EMAIL.sub(r"\1***@\2***\3", message))
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def setup(level: str = "INFO") -> None:
    """Configure the root logger once: stderr, no timestamps under journald."""
    under_journald = "JOURNAL_STREAM" in os.environ
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not under_journald:
        fmt = "%(asctime)s " + fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # paho and httpx are chatty at DEBUG/INFO; their warnings still show.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
