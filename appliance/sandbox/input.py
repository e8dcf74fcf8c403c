"""Request input for the Leat sandbox: Leat errors, Laravel-like validation, JSON/form bodies."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

Errors = dict[str, list[str]]

INVALID_INPUT = 1003

_INT = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def atom(when: datetime | None) -> str | None:
    """`when` in Leat's ATOM format, e.g. `2026-11-22T09:12:32+00:00`."""
    return None if when is None else when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def new_uuid() -> str:
    """A fresh random uuid."""
    return str(uuid.uuid4())


class SandboxError(Exception):
    """A Leat business error: HTTP `status` with `{message, code, status_code[, errors]}`."""

    def __init__(
        self, code: int, message: str, errors: Errors | None = None, status: int = 400
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.errors, self.status = code, message, errors, status

    def body(self) -> dict[str, Any]:
        """The error body Leat documents (docs/leat-assumptions.md, E1)."""
        body: dict[str, Any] = {
            "message": self.message, "code": self.code, "status_code": self.status,
        }
        if self.errors:
            body["errors"] = self.errors
        return body


class Page:
    """One page of a list: `data` with Laravel's `links` and paginator `meta`, or with the
    slim `meta{page, limit, viewing_from, viewing_to, last_page, total}` (`slim=True`) of a
    recorded List Loyalty Transactions answer (Leat's OpenAPI file, leat-docs)."""

    def __init__(self, items: list[Any], page: int, per_page: int, path: str, *,
                 slim: bool = False) -> None:
        self.slim = slim
        self.total = len(items)
        self.last_page = max(1, -(-self.total // per_page))
        start = (page - 1) * per_page
        self.items = items[start:start + per_page]
        self.page, self.per_page, self.path = page, per_page, path
        self.first = start + 1 if self.items else None

    def body(self) -> dict[str, Any]:
        """The response body."""
        if self.slim:
            return {"data": self.items, "meta": {
                "page": self.page, "limit": self.per_page, "viewing_from": self.first,
                "viewing_to": None if self.first is None else self.first + len(self.items) - 1,
                "last_page": self.last_page, "total": self.total}}

        def url(page: int | None) -> str | None:
            return None if page is None else f"{self.path}?page={page}"

        return {
            "data": self.items,
            "links": {"first": url(1), "last": url(self.last_page),
                      "prev": url(self.page - 1 if self.page > 1 else None),
                      "next": url(self.page + 1 if self.page < self.last_page else None)},
            "meta": {"current_page": self.page, "from": self.first, "last_page": self.last_page,
                     "links": [], "path": self.path, "per_page": self.per_page,
                     "to": None if self.first is None else self.first + len(self.items) - 1,
                     "total": self.total},
        }


def invalid(key: str, message: str) -> SandboxError:
    """A 1003 validation error on one field."""
    return SandboxError(INVALID_INPUT, message, {key: [message]})


class Input:
    """Fields of a body or query, validated like Laravel; problems collect, `check()` raises."""

    def __init__(self, raw: Mapping[str, Any], errors: Errors | None = None, prefix: str = ""
                 ) -> None:
        self.raw = raw
        self.errors: Errors = {} if errors is None else errors
        self.prefix = prefix

    def fail(self, key: str, message: str) -> None:
        """Record a problem with `key`."""
        self.errors.setdefault(self.prefix + key, []).append(message)

    def has(self, key: str) -> bool:
        """True when `key` is present and not null or empty."""
        return self.raw.get(key) not in (None, "")

    def _value(self, key: str, required: bool) -> Any:
        if not self.has(key):
            if required:
                self.fail(key, f"The {self.prefix + key} field is required.")
            return None
        return self.raw[key]

    def text(self, key: str, *, required: bool = True) -> str | None:
        """A string."""
        value = self._value(key, required)
        if value is None:
            return None
        if not isinstance(value, str):
            self.fail(key, f"The {self.prefix + key} field must be a string.")
            return None
        return value

    def integer(self, key: str, *, required: bool = True, minimum: int | None = None
                ) -> int | None:
        """An integer (numeric strings accepted, as form bodies only have strings)."""
        value = self._value(key, required)
        if value is None:
            return None
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str) and _INT.fullmatch(value.strip()):
            number = int(value.strip())
        if number is None:
            self.fail(key, f"The {self.prefix + key} field must be an integer.")
        elif minimum is not None and number < minimum:
            self.fail(key, f"The {self.prefix + key} field must be at least {minimum}.")
            number = None
        return number

    def number(self, key: str, *, required: bool = True) -> float | None:
        """A decimal number (numeric strings accepted)."""
        value = self._value(key, required)
        if value is None:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            return float(value.strip())
        self.fail(key, f"The {self.prefix + key} field must be a number.")
        return None

    def choice(self, key: str, options: tuple[str, ...], *, required: bool = True
               ) -> str | None:
        """One of `options` (compared case-insensitively, returned upper-case)."""
        value = self.text(key, required=required)
        if value is None:
            return None
        if value.upper() not in options:
            self.fail(key, f"The selected {self.prefix + key} is invalid.")
            return None
        return value.upper()

    def time(self, key: str) -> datetime | None:
        """An optional ISO-8601 (or `Y-m-d H:i:s`) time, UTC when it has no offset."""
        value = self.text(key, required=False)
        if value is None:
            return None
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            self.fail(key, f"The {self.prefix + key} field must be a valid date.")
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    def obj(self, key: str, *, required: bool = True) -> Input | None:
        """A nested object, sharing this input's problems."""
        value = self._value(key, required)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.fail(key, f"The {self.prefix + key} field must be an object.")
            return None
        return Input(value, self.errors, f"{self.prefix}{key}.")

    def items(self, key: str, *, required: bool = False) -> list[Input]:
        """A list of objects (a form's `{"0": ..., "1": ...}` counts as a list)."""
        value = self.raw.get(key)
        if value is None or value == "":
            if required:
                self.fail(key, f"The {self.prefix + key} field is required.")
            return []
        if isinstance(value, dict) and all(k.isdigit() for k in value):
            value = [value[k] for k in sorted(value, key=int)]
        if not isinstance(value, list):
            self.fail(key, f"The {self.prefix + key} field must be an array.")
            return []
        result = []
        for i, item in enumerate(value):
            if isinstance(item, dict):
                result.append(Input(item, self.errors, f"{self.prefix}{key}.{i}."))
            else:
                self.fail(f"{key}.{i}", f"The {self.prefix}{key}.{i} field must be an object.")
        return result

    def check(self) -> None:
        """Raise 1003 with every problem collected so far."""
        if self.errors:
            first = next(iter(self.errors.values()))[0]
            extra = len(self.errors) - 1
            message = first + (f" (and {extra} more error{'s' * (extra > 1)})" if extra else "")
            raise SandboxError(INVALID_INPUT, message, dict(self.errors))


def parse_body(content_type: str, data: bytes) -> dict[str, Any]:
    """A JSON or form-encoded body (`a[b][0]=x` nesting) as a dict; bad input raises 1003."""
    kind = content_type.split(";", maxsplit=1)[0].strip().lower()
    if not data.strip():
        return {}
    if kind == "application/x-www-form-urlencoded" or (
        not kind and not data.lstrip().startswith(b"{")
    ):
        try:
            pairs = parse_qsl(data.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
        except (UnicodeDecodeError, ValueError) as exc:
            raise invalid("body", f"Malformed form body: {exc}") from exc
        return nest_form(pairs)
    if kind and kind != "application/json" and not kind.endswith("+json"):
        raise SandboxError(INVALID_INPUT, f"Unsupported Content-Type {kind!r}: send JSON or a "
                           "form-encoded body.", {"body": ["Unsupported Content-Type."]}, 415)
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise invalid("body", f"Malformed JSON body: {exc}") from exc
    if not isinstance(body, dict):
        raise invalid("body", "The JSON body must be an object.")
    return body


def nest_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """PHP-style nesting of form keys: `a[b]=1&c[]=2` -> `{"a": {"b": "1"}, "c": {"0": "2"}}`."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        path = [head] + (rest[:-1].split("][") if rest.endswith("]") else [])
        node = root
        for i, name in enumerate(path):
            part = name or str(len(node))
            if i == len(path) - 1:
                node[part] = value
            else:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = node[part] = {}
                node = child
    return root
