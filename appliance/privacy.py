"""Masking of identifiers and e-mail addresses for logs and the MQTT bus.

A masked value never reveals its length: identifiers keep their first and last two
characters around a fixed `******` ("LC-7F3K9Q2M" -> "LC******2M"); values shorter than
`MIN_REVEAL_LENGTH` are masked completely. E-mail addresses keep the first character of
the local part and of the domain, and the top-level domain ("jan@example.com" ->
"j***@e***.com").
"""

from __future__ import annotations

import logging
from typing import Final

log = logging.getLogger(__name__)

MASK: Final = "******"
KEEP: Final = 2  # characters kept at each end of a long value
MIN_REVEAL_LENGTH: Final = 10  # shorter values would give away too large a share


def mask(value: str) -> str:
    """`value` with all but its first and last two characters hidden ("" stays "")."""
    if not value:
        return ""
    if len(value) < MIN_REVEAL_LENGTH:
        return MASK
    return f"{value[:KEEP]}{MASK}{value[-KEEP:]}"


def mask_email(email: str) -> str:
    """An address as "j***@e***.com"; something that is not an address is `mask()`ed."""
    local, at, domain = email.strip().rpartition("@")
    if not at or not local or not domain:
        return mask(email)
    name, dot, tld = domain.rpartition(".")
    if not dot or not name or not tld:
        return f"{local[0]}***@{domain[0]}***"
    return f"{local[0]}***@{name[0]}***.{tld}"
