"""Who may use the page: sessions, the technician password, a login rate limit.

Without a password (the default, loopback only: SSH is the login) every client gets an
anonymous session on its first page load, so the POSTs still carry a CSRF token. With a
password, only a login makes a session. Sessions are random 256-bit tokens held in memory
(a restart logs everyone out), at most `MAX_SESSIONS`, idle for at most `IDLE_S`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_SESSIONS = 16  # the oldest is dropped beyond this
IDLE_S = 30 * 60.0  # a session unused this long ends
MAX_AGE_S = 12 * 3600.0  # and any session after this long
FAILURES_PER_CLIENT = 5  # failed logins per client address in WINDOW_S, then refused
FAILURES_TOTAL = 20  # failed logins from all addresses in WINDOW_S, then refused
WINDOW_S = 300.0


@dataclass
class Session:
    """One browser's session; `csrf` must come back on every POST."""

    token: str
    csrf: str
    created: float
    used: float = field(compare=False)


class TooManyAttempts(Exception):
    """Login refused without checking the password: too many recent failures."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"too many failed logins: retry in {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


class Guard:
    """Sessions and logins; thread-safe."""

    def __init__(self, password: str | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._digest = None if password is None else _digest(password)
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._failures: dict[str, deque[float]] = {}
        self._all_failures: deque[float] = deque()

    @property
    def password_required(self) -> bool:
        """True when only a login makes a session."""
        return self._digest is not None

    def session(self, token: str | None) -> Session | None:
        """The live session `token` names (and marks it used), or None."""
        if not token:
            return None
        with self._lock:
            now = self._clock()
            self._expire(now)
            found = self._sessions.get(token)
            if found is not None:
                found.used = now
            return found

    def open_session(self) -> Session:
        """A new anonymous session; only without a password."""
        if self._digest is not None:
            raise PermissionError("a password is required")
        return self._new()

    def login(self, client: str, password: str) -> Session | None:
        """A new session when `password` is right, None when wrong; TooManyAttempts first
        when this client (or everyone together) failed too often in the last `WINDOW_S`."""
        if self._digest is None:
            return self._new()
        with self._lock:
            now = self._clock()
            mine = self._failures.setdefault(client, deque())
            for failures in (mine, self._all_failures):
                while failures and now - failures[0] > WINDOW_S:
                    failures.popleft()
            if not mine:
                del self._failures[client]
            for failures, limit in ((mine, FAILURES_PER_CLIENT),
                                    (self._all_failures, FAILURES_TOTAL)):
                if len(failures) >= limit:
                    raise TooManyAttempts(WINDOW_S - (now - failures[0]))
            if hmac.compare_digest(_digest(password), self._digest):
                self._failures.pop(client, None)
                ok = True
            else:
                self._failures.setdefault(client, deque()).append(now)
                self._all_failures.append(now)
                if len(self._failures) > 1024:  # bounded: forget the oldest client
                    del self._failures[next(iter(self._failures))]
                ok = False
        return self._new() if ok else None

    def end(self, token: str) -> None:
        """Log `token` out."""
        with self._lock:
            self._sessions.pop(token, None)

    def _new(self) -> Session:
        with self._lock:
            now = self._clock()
            self._expire(now)
            while len(self._sessions) >= MAX_SESSIONS:
                oldest = min(self._sessions.values(), key=lambda s: s.used)
                del self._sessions[oldest.token]
            found = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now, now)
            self._sessions[found.token] = found
            return found

    def _expire(self, now: float) -> None:
        for token, found in list(self._sessions.items()):
            if now - found.used > IDLE_S or now - found.created > MAX_AGE_S:
                del self._sessions[token]


def csrf_ok(found: Session, given: str | None) -> bool:
    """True when `given` is the session's CSRF token (constant-time)."""
    return given is not None and hmac.compare_digest(given.encode(), found.csrf.encode())


def _digest(password: str) -> bytes:
    return hashlib.sha256(password.encode("utf-8")).digest()
