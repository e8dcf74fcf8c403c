"""Typed, validated access to Leat's JSON (docs/leat-assumptions.md): the layer every
result in models.py and payments.py is read through.

A required field that is missing or of the wrong type raises
`LeatUnavailable("malformed response from Leat: <path>", ambiguous=True)`: the call may have
been carried out, but we cannot tell what Leat did. Extra fields are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from appliance.errors import LeatUnavailable

EMPTY: Mapping[str, object] = MappingProxyType({})


def no_attributes() -> Mapping[str, object]:
    """No custom attributes (a dataclass default)."""
    return EMPTY


def malformed(where: str) -> LeatUnavailable:
    """The error for a response that lacks `where` or has it in the wrong type."""
    return LeatUnavailable(f"malformed response from Leat: {where}", ambiguous=True)


class Fields:
    """Typed access to one JSON object of a response; `where` names it in errors."""

    def __init__(self, raw: object, where: str = "data") -> None:
        if not isinstance(raw, dict):
            raise malformed(where)
        self.raw: dict[str, Any] = raw
        self.where = where

    def _path(self, key: str) -> str:
        return f"{self.where}.{key}"

    def has(self, key: str) -> bool:
        """True when `key` is present and not null."""
        return self.raw.get(key) is not None

    def req_str(self, key: str) -> str:
        """A required string."""
        value = self.opt_str(key)
        if value is None:
            raise malformed(self._path(key))
        return value

    def opt_str(self, key: str) -> str | None:
        """An optional string (absent or null gives None)."""
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise malformed(self._path(key))
        return value

    def req_int(self, key: str) -> int:
        """A required integer (an integral JSON float such as 50.0 is accepted)."""
        value = self.opt_int(key)
        if value is None:
            raise malformed(self._path(key))
        return value

    def opt_int(self, key: str) -> int | None:
        """An optional integer."""
        value = self.raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool):
            raise malformed(self._path(key))
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise malformed(self._path(key))

    def req_bool(self, key: str) -> bool:
        """A required boolean."""
        value = self.raw.get(key)
        if not isinstance(value, bool):
            raise malformed(self._path(key))
        return value

    def opt_bool(self, key: str, default: bool) -> bool:
        """An optional boolean with a default for absent or null."""
        value = self.raw.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise malformed(self._path(key))
        return value

    def opt_datetime(self, key: str) -> datetime | None:
        """An optional ISO-8601 timestamp; one without an offset is taken as UTC."""
        text = self.opt_str(key)
        if text is None or not text.strip():
            return None
        try:
            value = datetime.fromisoformat(text.strip())
        except ValueError:
            raise malformed(self._path(key)) from None
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

    def req_obj(self, key: str) -> Fields:
        """A required nested object."""
        return Fields(self.raw.get(key), self._path(key))

    def opt_obj(self, key: str) -> Fields | None:
        """An optional nested object; absent, null, `{}` or `[]` (PHP's empty array) give None."""
        value = self.raw.get(key)
        if value is None or value in ({}, []):
            return None
        return Fields(value, self._path(key))

    def array(self, key: str) -> list[object]:
        """An optional array (absent or null gives [])."""
        value = self.raw.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise malformed(self._path(key))
        return value

    def extras(self, known: frozenset[str]) -> Mapping[str, object]:
        """The keys not in `known` (Leat flattens custom attributes onto objects), read-only."""
        values = {k: v for k, v in self.raw.items() if k not in known}
        nested = self.raw.get("attributes")
        if isinstance(nested, dict):
            values.update(nested)
        return MappingProxyType(values) if values else EMPTY


def parse_list(raw: object, where: str = "data") -> list[Fields]:
    """Each object of a JSON array."""
    if not isinstance(raw, list):
        raise malformed(where)
    return [Fields(item, f"{where}[{i}]") for i, item in enumerate(raw)]


def upper(value: str | None) -> str | None:
    """`value` in capitals (Leat's enum-like strings come in any casing)."""
    return value.upper() if value is not None else None
