"""Judge what a code carries: its text, or why it is refused.

Binary payloads, over-long texts and control, format, private or unassigned characters are
refused (the Decoder reports them as `Rejected`, logged without the payload: it may be
personal data).
"""

from __future__ import annotations

import unicodedata
from typing import Any

import zxingcpp

_CATEGORY_NAMES = {"Cc": "control character", "Cf": "format character"}


def judge(barcode: Any, max_length: int) -> tuple[str, str | None]:
    """The payload as text and why it is refused (None: accepted).

    A trailing CR/LF is trimmed first: scanner-style generators end texts with a line break
    the code's owner never typed. Any other character of Unicode category C is refused:
    controls (Cc), format characters (Cf: U+202E reverses what a screen shows, zero-width
    characters hide in ids), surrogates, private use and unassigned code points.
    """
    text: str = barcode.text
    if barcode.content_type in (zxingcpp.ContentType.Binary, zxingcpp.ContentType.Mixed):
        try:  # UTF-8 without an ECI marker is common; real binary is not valid UTF-8
            text = bytes(barcode.bytes).decode("utf-8")
        except UnicodeDecodeError:
            return text, "binary payload"
    text = text.rstrip("\r\n")
    if not text:
        return text, "empty"
    if "\ufffd" in text:
        return text, "undecodable bytes"
    if len(text) > max_length:
        return text, f"too long ({len(text)} > {max_length} characters)"
    for char in text:
        category = unicodedata.category(char)
        if category.startswith("C"):
            kind = _CATEGORY_NAMES.get(category, "unassigned or private character")
            return text, f"{kind} U+{ord(char):04X}"
    return text, None
