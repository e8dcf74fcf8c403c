"""Leat Loyalty Token URLs (v3, unit based), checked locally (Leat's Loyalty Token docs).

A loyalty token is an unassigned credit reception packed into a signed URL that a customer
opens to claim points, printed as a QR code on a receipt when nobody identified at the till.
The signature is a plain SHA-1 over the query string *including* the account secret (not an
HMAC), in exactly this field order:

    version=v3&shop_uuid=…&unique_id=…&timestamp=…&unit_name=…&unit_value=…&secret=…

The URL is `<portal>/l?` + the same string without `secret` + `&hash=<sha1 hex>`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from urllib.parse import urlsplit

VERSION = "v3"
DEFAULT_UNIT = "purchase_amount"
SAFE_VALUE = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")
"""Values go into the signed string unencoded, so only URL-safe characters are allowed."""

FIELDS = ("version", "shop_uuid", "unique_id", "timestamp", "unit_name", "unit_value")


def unit_value_text(value: Decimal | int | str) -> str:
    """The amount as it is signed: a plain decimal in major units, e.g. "10" or "10.40"."""
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"unit_value {value!r} is not a number") from None
    if not amount.is_finite() or amount <= 0:
        raise ValueError(f"unit_value must be a positive amount, got {value!r}")
    text = str(value) if isinstance(value, str) else format(amount, "f")
    if not re.fullmatch(r"[0-9]+(\.[0-9]{1,4})?", text):
        raise ValueError(f"unit_value {value!r}: use a plain decimal such as 10 or 10.40")
    return text


def signed_query(fields: Mapping[str, str], secret: str) -> str:
    """`<query>&hash=<sha1>` for `fields` in the documented order."""
    query = "&".join(f"{name}={fields[name]}" for name in FIELDS)
    digest = hashlib.sha1(f"{query}&secret={secret}".encode(), usedforsecurity=False)
    return f"{query}&hash={digest.hexdigest()}"


def loyalty_token_url(
    *,
    portal_url: str,
    shop_uuid: str,
    unique_id: str,
    unit_value: Decimal | int | str,
    secret: str,
    unit_name: str = DEFAULT_UNIT,
    timestamp: int | None = None,
) -> str:
    """The claim URL for `unit_value` (major units) under the unique `unique_id`."""
    portal = urlsplit(portal_url)
    if portal.scheme not in ("https", "http") or not portal.netloc or portal.query:
        raise ValueError(f"portal URL {portal_url!r} must be http(s)://host[/path]")
    if not secret:
        raise ValueError("the account secret is empty")
    fields = {
        "version": VERSION,
        "shop_uuid": shop_uuid,
        "unique_id": unique_id,
        "timestamp": str(int(time.time()) if timestamp is None else timestamp),
        "unit_name": unit_name,
        "unit_value": unit_value_text(unit_value),
    }
    for name in ("shop_uuid", "unique_id", "unit_name"):
        if not SAFE_VALUE.fullmatch(fields[name]):
            raise ValueError(f"{name} {fields[name]!r}: use 1-128 of A-Z a-z 0-9 . _ ~ -")
    if int(fields["timestamp"]) < 0:
        raise ValueError("timestamp must be a non-negative Unix time")
    return f"{portal_url.rstrip('/')}/l?{signed_query(fields, secret)}"


def verify(params: Mapping[str, str], secret: str) -> bool:
    """True when a scanned token URL's parameters carry a valid v3 signature for `secret`."""
    if params.get("version") != VERSION or any(name not in params for name in FIELDS):
        return False
    expected = signed_query({name: params[name] for name in FIELDS}, secret).rsplit("=", 1)[1]
    return hmac.compare_digest(expected, params.get("hash", ""))
