"""Fault injection for the Leat sandbox (latency, errors, 429, 503, drops, outages).

Faults apply to some paths or all, for the next N requests or until cleared.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass, replace
from typing import Any, Final

log = logging.getLogger(__name__)

API_PREFIX: Final = "/api/v3/oauth/clients"
MAX_FAULT_BODY: Final = 64 << 10  # characters of an injected `body`

@dataclass(frozen=True)
class FaultSet:
    """The faults in force; see `Faults.set`."""

    latency_s: float | None = None
    status: int | None = None
    body: dict[str, Any] | str | None = None
    maintenance: bool = False
    rate_limit_retry_after: float | None = None
    drop_after_receive: bool = False
    outage: bool = False
    only_paths: tuple[str, ...] | None = None
    times: int | None = None

    def active(self) -> bool:
        """True when any fault is set."""
        return bool(self.latency_s or self.status or self.maintenance or self.outage
                    or self.rate_limit_retry_after is not None or self.drop_after_receive)

    def matches(self, path: str) -> bool:
        """True when the faults apply to `path` (relative to the API prefix, or full)."""
        if self.only_paths is None:
            return True
        relative = path[len(API_PREFIX):] if path.startswith(API_PREFIX + "/") else path
        return any(relative.startswith(p) or path.startswith(p) for p in self.only_paths)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        fields = asdict(self)
        fields["only_paths"] = list(self.only_paths) if self.only_paths is not None else None
        return fields


FAULT_FIELDS: Final = tuple(FaultSet.__dataclass_fields__)


class Faults:
    """Fault injection, thread-safe, changed at run time; `set` replaces all faults at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current = FaultSet()

    def set(
        self,
        *,
        latency_s: float | None = None,
        status: int | None = None,
        body: dict[str, Any] | str | None = None,
        maintenance: bool | None = None,
        rate_limit_retry_after: float | None = None,
        drop_after_receive: bool | None = None,
        outage: bool | None = None,
        only_paths: tuple[str, ...] | None = None,
        times: int | None = None,
    ) -> None:
        """Replace the faults (fields not given are off); `ValueError` on a bad value.

        latency_s: wait this long before answering (after acting on the request).
        status: answer every matching request with this HTTP status (500, 502, ...) unacted;
        with a `body` also a 2xx (an answer shaped otherwise than the sandbox's own).
        body: with `status`, answer this instead of Leat's error envelope: a JSON object, or
        a string sent as a plain `text/html` page (a bare 404 from a proxy, say).
        maintenance: answer 503 unacted. rate_limit_retry_after: answer 429 with
        `Retry-After` unacted. drop_after_receive: act on the request, then close the
        connection without an answer. outage: reset connections before reading a request.
        only_paths: path prefixes (relative to /api/v3/oauth/clients, or full paths such
        as /oauth/token) the faults apply to; None: all. times: the next N matching
        requests only, then every fault clears; None: until cleared.
        """
        new = FaultSet(
            latency_s=_number("latency_s", latency_s, 0, 600),
            status=_status(status, body),
            body=_body(body, status),
            maintenance=_flag("maintenance", maintenance),
            rate_limit_retry_after=_number("rate_limit_retry_after", rate_limit_retry_after,
                                           0, 86400),
            drop_after_receive=_flag("drop_after_receive", drop_after_receive),
            outage=_flag("outage", outage),
            only_paths=_paths(only_paths),
            times=_times(times),
        )
        with self._lock:
            self._current = new
        log.info("sandbox faults set: %s", new.as_dict())

    def clear(self) -> None:
        """Remove every fault."""
        with self._lock:
            self._current = FaultSet()

    def current(self) -> FaultSet:
        """The faults in force now."""
        with self._lock:
            return self._current

    def take(self, path: str, *, outage: bool = False) -> FaultSet | None:
        """The faults for one request to `path`, counting it against `times`; None if none.

        With `outage=True` only an outage is taken (at connection level); otherwise an
        outage is never returned (it was handled before the request was read).
        """
        with self._lock:
            current = self._current
            if not current.active() or current.outage != outage or not current.matches(path):
                return None
            if current.times is not None:
                left = current.times - 1
                self._current = FaultSet() if left <= 0 else replace(current, times=left)
            return current


def _number(name: str, value: object, low: float, high: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
        low <= value <= high
    ):
        raise ValueError(f"{name} must be a number from {low:g} to {high:g}")
    return float(value)


def _flag(name: str, value: object) -> bool:
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false")
    return bool(value)


def _status(value: object, body: object) -> int | None:
    """400-599; with a `body` also 200-299 (an answer Leat might give that the client must
    not misread, e.g. a list ignoring its filters)."""
    if value is None:
        return None
    low = 200 if body is not None else 400
    if isinstance(value, bool) or not isinstance(value, int) or not (
        low <= value <= 599 and not 300 <= value <= 399
    ):
        raise ValueError("status must be an HTTP status from 400 to 599 (with a body, "
                         "200 to 299 too)")
    return value


def _body(value: object, status: object) -> dict[str, Any] | str | None:
    if value is None:
        return None
    if status is None:
        raise ValueError("body needs a status")
    if not isinstance(value, dict | str) or len(json.dumps(value)) > MAX_FAULT_BODY:
        raise ValueError(f"body must be a JSON object or a string of at most {MAX_FAULT_BODY} "
                         "characters")
    return json.loads(json.dumps(value)) if isinstance(value, dict) else value


def _paths(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, tuple | list) or not all(
        isinstance(p, str) and p.startswith("/") for p in value
    ):
        raise ValueError("only_paths must be a list of paths starting with /")
    return tuple(value)


def _times(value: object) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < 1):
        raise ValueError("times must be a whole number of at least 1")
    return value
