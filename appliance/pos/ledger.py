"""The command ledger: request_id -> (verb, body hash, outcome), kept at least 24 hours.

Its own SQLite file in the state directory (WAL, synchronous=FULL: a recorded outcome
survives a power cut), created once by `prepare()` before any thread opens it, as the
outbox is. One connection, guarded by a lock (the request worker and the reconcilers share
it). A row is `running` while its call runs, `unknown` while it is being reconciled, `done`
with the outcome any later request with the same request_id gets. Outcomes in which nothing
happened at Leat (offline, expired, ...) are not recorded: the row is dropped, so the POS
may send the same request again. It also remembers the release keys of the locks it took,
so `voucher.release` and `voucher.redeem` can omit them.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

KEEP_S: Final = 48 * 3600  # at least the 24 h the contract promises
_SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    request_id TEXT PRIMARY KEY,
    verb TEXT NOT NULL,
    body_hash TEXT NOT NULL,
    args TEXT NOT NULL,
    transaction_id TEXT,
    state TEXT NOT NULL CHECK (state IN ('running', 'unknown', 'done')),
    response TEXT,
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS voucher_locks (
    voucher TEXT PRIMARY KEY,
    release_key TEXT NOT NULL,
    locked_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Entry:
    """One recorded command."""

    request_id: str
    verb: str
    body_hash: str
    args: dict[str, Any]
    transaction: str | None
    state: str
    response: dict[str, Any] | None
    started_at: float


class Conflict(Exception):
    """The request_id is recorded with another body."""


def body_hash(verb: str, args: Mapping[str, Any]) -> str:
    """A stable hash of what a request asks (verb and arguments, not its envelope)."""
    text = json.dumps({"verb": verb, "args": args}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Ledger:
    """request_id -> outcome, and the release keys of our voucher locks."""

    def __init__(self, path: Path, *, clock: Any = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")

    @staticmethod
    def prepare(path: Path) -> None:
        """Create the file and its tables (WAL) once, before any thread opens it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
        finally:
            db.close()

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def begin(
        self, request_id: str, verb: str, args: Mapping[str, Any], transaction: str | None
    ) -> Entry | None:
        """Record a new `running` command; None when new, else the entry already recorded
        (Conflict when it is recorded with another verb or body)."""
        digest = body_hash(verb, args)
        now = self._clock()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM commands WHERE updated_at < ? AND state = 'done'",
                                 (now - KEEP_S,))
                row = self._db.execute(
                    "SELECT * FROM commands WHERE request_id = ?", (request_id,)
                ).fetchone()
                if row is None:
                    self._db.execute(
                        "INSERT INTO commands VALUES (?, ?, ?, ?, ?, 'running', NULL, ?, ?)",
                        (request_id, verb, digest, json.dumps(args), transaction, now, now),
                    )
            finally:
                self._db.execute("COMMIT")
        if row is None:
            return None
        entry = _entry(row)
        if entry.body_hash != digest:
            raise Conflict(
                f"request_id {request_id!r} was used for another {entry.verb} request"
            )
        return entry

    def finish(self, request_id: str, response: Mapping[str, Any], *, final: bool = True
               ) -> None:
        """Record the outcome (`done`; `unknown` while it is still being reconciled)."""
        with self._lock:
            self._db.execute(
                "UPDATE commands SET state = ?, response = ?, updated_at = ? "
                "WHERE request_id = ?",
                ("done" if final else "unknown", json.dumps(response), self._clock(),
                 request_id),
            )

    def forget(self, request_id: str) -> None:
        """Drop a command that did nothing at Leat: the same request may be sent again."""
        with self._lock:
            self._db.execute("DELETE FROM commands WHERE request_id = ?", (request_id,))

    def unsettled(self) -> list[Entry]:
        """Commands left `running` (the device stopped during the call) or `unknown`."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM commands WHERE state != 'done' ORDER BY started_at"
            ).fetchall()
        return [_entry(r) for r in rows]

    def results(self, verb: str) -> set[str]:
        """The `data.uuid` of every recorded ok outcome of `verb` (a reconciler must never
        take another request's result for its own)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT json_extract(response, '$.data.uuid') FROM commands "
                "WHERE verb = ? AND response IS NOT NULL", (verb,)
            ).fetchall()
        return {r[0] for r in rows if r[0]}

    def remember_lock(self, release_key: str, *vouchers: str) -> None:
        """Keep a lock's release key under each of `vouchers` (its uuid, its code), at once."""
        now = self._clock()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO voucher_locks VALUES (?, ?, ?)",
                    [(voucher, release_key, now) for voucher in vouchers],
                )
            finally:
                self._db.execute("COMMIT")

    def release_key(self, voucher: str) -> str | None:
        """The release key of our lock on `voucher` (uuid or code), if we hold one."""
        with self._lock:
            self._db.execute("DELETE FROM voucher_locks WHERE locked_at < ?",
                             (self._clock() - KEEP_S,))
            row = self._db.execute(
                "SELECT release_key FROM voucher_locks WHERE voucher = ?", (voucher,)
            ).fetchone()
        return None if row is None else str(row[0])


def _entry(row: tuple[Any, ...]) -> Entry:
    request_id, verb, digest, args, transaction, state, response, started, _ = row
    return Entry(
        request_id=request_id, verb=verb, body_hash=digest, args=json.loads(args),
        transaction=transaction, state=state,
        response=None if response is None else json.loads(response), started_at=started,
    )
