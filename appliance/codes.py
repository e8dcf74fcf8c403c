"""What a scanned text is: loyalty card, giftcard, voucher, Loyalty Token URL, or unknown.

Rules, first match wins (docs/codes.md explains them for merchants):

1. An http(s) URL with path `/l` and the query parameters `version`, `unique_id` and a
   40-hex-digit `hash` is a Leat **Loyalty Token** URL (Leat's Loyalty Token docs). When
   `codes.token_url_hosts` is non-empty its host must be listed (`*.example.com` allows
   subdomains); a token-shaped URL from another host is UNKNOWN, never a loyalty card.
2. An http(s) URL with path `.../giftcard-balance` and a `hash` is Leat's own giftcard
   balance link (Leat's giftcard docs: `https://leat.com/giftcard-balance?hash=41654`): a
   GIFTCARD with that hash, whatever the patterns say.
3. Any other http(s) URL: the first of `codes.url_parameters` present in the query (or in
   a `#...?a=b` / `#a=b` fragment; the query wins) is taken, URL-decoded, validated, and
   classified as bare text (rule 4). No such parameter: UNKNOWN.
4. Bare text (surrounding whitespace ignored) must be 1-128 printable ASCII characters
   without spaces; then `voucher_pattern`, `giftcard_pattern`, `loyalty_pattern` are tried
   in that order with `re.fullmatch`. Nothing matches: UNKNOWN. A value that matches both
   the giftcard and the loyalty pattern could be either: it is a LOYALTY_CARD with
   `alternatives == (GIFTCARD,)`, and the resolver asks Leat (identifier first, then
   giftcard) instead of guessing.

Default patterns (`appliance.config.CodesConfig`) and what they accept:

=============  ==============================================  ===============================
kind           default rule                                    examples
=============  ==============================================  ===============================
voucher        dash-separated upper-case groups, the first     ABC-123, SPRING-2X7Q
               3-12 characters long
giftcard       `GC-` + 6-32, or 5-32 letters and digits with   GC-8H2J4K6L8M, GFTCRD123,
               at least one digit (Leat's own hashes)          GJ2P725oe, 41654, HT123ABC
loyalty card   `LC-` + 6-32, 8-19 digits (EAN-13 etc.), or an  LC-7F3K9Q2M, 8712345678906,
               opaque 20-64 character id or hash               a 40-hex hash, a uuid
=============  ==============================================  ===============================

The two-letter prefixes `LC-`/`GC-` can never be vouchers (a voucher's first group has 3+
characters), and the voucher rule needs a dash, which giftcard hashes and card numbers never
have. Card numbers of 8-19 digits and opaque ids of 20-32 letters and digits fit both the
card and the giftcard rule: Leat is asked.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final
from urllib.parse import parse_qsl, urlsplit

from appliance.config import CodesConfig
from appliance.errors import ConfigError

log = logging.getLogger(__name__)

MAX_VALUE_LENGTH: Final = 128
"""Longest identifying value accepted (Leat identifiers and codes are far shorter)."""

MAX_URL_FIELDS: Final = 64
"""More query fields than this and a URL is not one of ours."""

TOKEN_PATH: Final = frozenset({"/l", "/l/"})
TOKEN_PARAMETERS: Final = ("version", "unique_id", "hash")
GIFTCARD_BALANCE_PATH: Final = "/giftcard-balance"  # Leat's giftcard balance page
GIFTCARD_HASH: Final = "hash"

_VALID_VALUE = re.compile(rf"[\x21-\x7e]{{1,{MAX_VALUE_LENGTH}}}")
_TOKEN_HASH = re.compile(r"[0-9a-fA-F]{40}")
_HOST_ENTRY = re.compile(r"(?:\*\.)?[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?")


class Kind(StrEnum):
    """What a scanned code is."""

    LOYALTY_CARD = "loyalty_card"
    GIFTCARD = "giftcard"
    VOUCHER = "voucher"
    LOYALTY_TOKEN = "loyalty_token"  # noqa: S105 (a kind name, not a secret)
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Code:
    """A classified scan: `value` identifies it (a URL's parameter, or the whole text)."""

    kind: Kind
    value: str
    text: str  # exactly as scanned
    params: Mapping[str, str] = field(default_factory=dict)  # parsed URL query; {} for text
    alternatives: tuple[Kind, ...] = ()  # what else it could be: ask Leat, in this order


class Classifier:
    """Compiled code rules; `classify` is pure and safe to call from any thread."""

    def __init__(self, cfg: CodesConfig) -> None:
        problems: list[str] = []
        rules: list[tuple[Kind, re.Pattern[str]]] = []
        for kind, key, pattern in (
            (Kind.VOUCHER, "voucher_pattern", cfg.voucher_pattern),
            (Kind.GIFTCARD, "giftcard_pattern", cfg.giftcard_pattern),
            (Kind.LOYALTY_CARD, "loyalty_pattern", cfg.loyalty_pattern),
        ):
            try:
                rules.append((kind, re.compile(pattern)))
            except re.error as exc:
                problems.append(f"codes.{key}: invalid regular expression: {exc}")
        hosts = tuple(host.strip().lower().rstrip(".") for host in cfg.token_url_hosts)
        problems += [
            f"codes.token_url_hosts: {raw!r} is not a host name (e.g. shop.piggy.eu, *.piggy.eu)"
            for raw, host in zip(cfg.token_url_hosts, hosts, strict=True)
            if not _HOST_ENTRY.fullmatch(host)
        ]
        problems += [
            f"codes.url_parameters: {name!r} is not a parameter name"
            for name in cfg.url_parameters
            if not name or not _VALID_VALUE.fullmatch(name)
        ]
        if problems:
            raise ConfigError(problems)
        self._rules = tuple(rules)
        self._hosts = hosts
        self._parameters = tuple(cfg.url_parameters)

    def classify(self, text: str) -> Code:
        """Decide what `text` (a decoded code's payload) is; never raises."""
        stripped = text.strip()
        if stripped[:8].lower().startswith(("http://", "https://")):
            return self._classify_url(text, stripped)
        return self._classify_value(stripped, text, {})

    def _classify_url(self, text: str, url: str) -> Code:
        """Rules 1 and 2: a Loyalty Token URL, or a URL carrying an identifying parameter."""
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").rstrip(".")
            query = _parse_query(parts.query)
            fragment = _parse_query(parts.fragment.partition("?")[2] or parts.fragment)
        except ValueError:  # bad IPv6 brackets, too many fields
            return Code(Kind.UNKNOWN, url, text)
        if not host:
            return Code(Kind.UNKNOWN, url, text, query)
        if _is_token(parts.path, query):
            if self._host_allowed(host):
                return Code(Kind.LOYALTY_TOKEN, url, text, query)
            log.info("loyalty token URL from %s ignored: not in codes.token_url_hosts", host)
            return Code(Kind.UNKNOWN, url, text, query)
        if parts.path.rstrip("/").lower().endswith(GIFTCARD_BALANCE_PATH):
            value = query.get(GIFTCARD_HASH, "")
            if _VALID_VALUE.fullmatch(value):
                return Code(Kind.GIFTCARD, value, text, query)
            return Code(Kind.UNKNOWN, url, text, query)
        params = {**fragment, **query}
        for name in self._parameters:
            if name in params:
                return self._classify_value(params[name], text, params)
        return Code(Kind.UNKNOWN, url, text, params)

    def _classify_value(self, value: str, text: str, params: Mapping[str, str]) -> Code:
        """Rule 4: validate length and characters, then try the patterns in order; a card
        that could also be a giftcard is asked of Leat (`alternatives`)."""
        if _VALID_VALUE.fullmatch(value):
            matched = [kind for kind, rule in self._rules if rule.fullmatch(value)]
            if matched and matched[0] is not Kind.VOUCHER and len(matched) > 1:
                return Code(Kind.LOYALTY_CARD, value, text, params, (Kind.GIFTCARD,))
            if matched:
                return Code(matched[0], value, text, params)
        return Code(Kind.UNKNOWN, text.strip(), text, params)

    def _host_allowed(self, host: str) -> bool:
        """Any host when no hosts are configured; else an exact or `*.` suffix match."""
        if not self._hosts:
            return True
        return any(
            host.endswith(entry[1:]) if entry.startswith("*.") else host == entry
            for entry in self._hosts
        )


def _parse_query(query: str) -> dict[str, str]:
    """URL-decoded query fields; the first occurrence of a repeated name wins."""
    fields: dict[str, str] = {}
    if "=" not in query:
        return fields
    for name, value in parse_qsl(query, keep_blank_values=True, max_num_fields=MAX_URL_FIELDS):
        fields.setdefault(name, value)
    return fields


def _is_token(path: str, query: Mapping[str, str]) -> bool:
    """True for the shape of a Leat Loyalty Token URL (`/l?version=..&unique_id=..&hash=..`)."""
    return (
        path in TOKEN_PATH
        and all(query.get(name) for name in TOKEN_PARAMETERS)
        and _TOKEN_HASH.fullmatch(query["hash"]) is not None
    )
