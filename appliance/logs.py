"""Logging to stderr (journald keeps it), with a last line of defence against personal data."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections import deque

# An e-mail address as the old pattern
#   ([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9-])[A-Za-z0-9.-]*(\.[A-Za-z]{2,})
# matched it, found in linear time: that regex backtracks quadratically on a long run of
# address characters (a 250 kB field quoted in a log line took ~52 s, on paho's thread).
# Letters and digits of any script (\\w, less "_" in the domain): "jané@exämple.com" too.
_LOCAL = re.compile(r"[\w.%+-]+")  # the local part, matched on the reversed text
_DOMAIN = re.compile(r"[^\W_][\w.-]*")
_TLD = re.compile(r"\.[^\W\d_]{2,}")
BEARER = re.compile(r"(?i)(bearer\s+|token=|secret=|password=)[^\s&\"']+")


def mask_emails(text: str) -> str:
    """`text` with every e-mail address as "j***@e***.com"; linear in `len(text)`.

    Each '@' looks left over the run of local-part characters and right over the run of
    domain characters; neither run holds an '@', so every character is read at most twice.
    """
    at = text.find("@")
    if at < 0:
        return text
    reverse = text[::-1]
    size = len(text)
    parts: list[str] = []
    done = 0  # text[:done] is in `parts`
    while at >= 0:
        local = _LOCAL.match(reverse, size - at)  # the run ending just before the '@'
        start = max(done, at - len(local.group())) if local else at
        domain = _DOMAIN.match(text, at + 1)
        # the last ".tld": the old pattern's greedy domain backtracked to it
        last = deque(_TLD.finditer(text, at + 2, domain.end()), maxlen=1) if domain else ()
        tld = last[0] if last else None
        if start < at and tld is not None:
            parts += [text[done:start], text[start], "***@", text[at + 1], "***", tld.group()]
            done = tld.end()
        at = text.find("@", max(at + 1, done))
    parts.append(text[done:])
    return "".join(parts)


class RedactingFilter(logging.Filter):
    """Masks e-mail addresses and bearer tokens in every formatted record.

    Modules mask what they log themselves (`appliance.privacy`); this catches what slips
    through, e.g. a library's exception message quoting a request.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message in place; never drops a record."""
        message = record.getMessage()
        redacted = BEARER.sub(r"\1***", mask_emails(message))
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class RedactingFormatter(logging.Formatter):
    """Masks the whole formatted line, a traceback's exception messages included (a
    `Filter` sees the message only)."""

    def format(self, record: logging.LogRecord) -> str:
        return BEARER.sub(r"\1***", mask_emails(super().format(record)))


def setup(level: str = "INFO") -> None:
    """Configure the root logger once: stderr, no timestamps under journald."""
    under_journald = "JOURNAL_STREAM" in os.environ
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not under_journald:
        fmt = "%(asctime)s " + fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(fmt))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # paho and httpx are chatty at DEBUG/INFO; their warnings still show.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
