"""The command ledger: request_id -> (verb, body hash, outcome), kept at least 24 hours.

Its own SQLite file in the state directory (WAL, synchronous=FULL: a recorded outcome
survives a power cut), created once by `prepare()` before any thread opens it, as the
outbox is. One connection, guarded by a lock (the request worker and the reconcilers share
it). A row is `running` while its call runs, `unknown` while it is being reconciled, `done`
with the outcome any later request with the same request_id gets. A value-taking command's
`running` row is on disk before its call goes to Leat. A read moves no value, so it waits
for no disk: it is held in memory while it runs (a duplicate meanwhile gets `busy`, another
body `conflict`), its outcome is kept in memory at once and written by a background thread
after the reply; a power cut may lose that record, and a repeat is then asked of Leat again.
Outcomes in which nothing happened at Leat (offline, expired, ...) are not recorded: the row
is dropped, so the POS may send the same request again. It also remembers the release keys
of the locks it took, so `voucher.release` and `voucher.redeem` can omit them, and what each
value-taking command it ran took (`taken`: the reception, collection, voucher or redemption
uuid -> its contact, collectable and voucher code), so a give-back command that names only
the uuid is stored with the optional args that let the durable executor settle a lost answer.

Damage. The ledger is what stops a retried request_id from spending twice, so it is never
silently recreated: `prepare()` gives a new ledger a random identity, kept in the file and in
`commands.sqlite3.id` beside it. Every write counts itself in the file (`ledger_meta`) and,
after its commit, in `commands.sqlite3.mark` (the outbox's mark format: two CRC-checked
slots rewritten in place), so an older copy of the ledger put back (a restored backup, a
swapped SD card image) is behind its mark. A ledger that is missing or empty while
its identity file exists, fails `PRAGMA quick_check`, is not a database, holds another
identity, or is behind its mark raises `LedgerDamaged`; the daemon then refuses every command
`storage_damaged` (orders, which the outbox guards, go on) until a technician moves the
`commands.sqlite3*` files aside.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from appliance.errors import ApplianceError, OutboxError
from appliance.markfile import Mark, MarkFile, write_atomically
from appliance.outbox_guard import OutboxNotWritable, mark_path, settle_owner
from appliance.outbox_items import OutboxFull
from appliance.sqlite_file import wal_at_risk

KEEP_S: Final = 48 * 3600  # at least the 24 h the contract promises
KEEP_TAKEN_S: Final = 31 * 24 * 3600  # a give-back (a return) may come weeks later
MIN_FREE_BYTES: Final = 50 * 2**20  # as the outbox: a value-taking call needs its outcome kept
TAKING_VERBS: Final = frozenset({"reward.redeem", "reward.collect", "voucher.lock",
                                 "voucher.redeem", "giftcard.pay", "giftcard.load",
                                 "prepaid.pay", "prepaid.topup"})
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
CREATE TABLE IF NOT EXISTS taken (
    uuid TEXT PRIMARY KEY,
    contact_uuid TEXT,
    collectable_uuid TEXT,
    code TEXT,
    taken_at REAL NOT NULL
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


@dataclass(frozen=True)
class Taken:
    """What a value-taking command of this device took, by one of its uuids."""

    contact_uuid: str | None
    collectable_uuid: str | None
    code: str | None


class LedgerDamaged(ApplianceError):
    """The command ledger cannot be trusted; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def ledger_files(path: Path) -> list[Path]:
    """Every file that belongs to the ledger at `path`."""
    return [path, *(path.with_name(path.name + s) for s in ("-wal", "-shm")),
            identity_path(path), mark_path(path)]


def identity_path(path: Path) -> Path:
    """The file beside the ledger that remembers which ledger belongs there."""
    return path.with_name(path.name + ".id")


class Conflict(Exception):
    """The request_id is recorded with another body."""


def body_hash(verb: str, args: Mapping[str, Any]) -> str:
    """A stable hash of what a request asks (verb and arguments, not its envelope)."""
    text = json.dumps({"verb": verb, "args": args}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Ledger:
    """request_id -> outcome, and the release keys of our voucher locks."""

    def __init__(self, path: Path, *, clock: Any = time.time,
                 min_free_bytes: int = MIN_FREE_BYTES) -> None:
        self._clock = clock
        self._path = path
        self._min_free_bytes = min_free_bytes
        self._lock = threading.Lock()
        _refuse_wal_at_risk(path)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._held: dict[str, Entry] = {}  # reads in flight or not yet written
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        self._mark = MarkFile(mark_path(path))
        self._identity = _mark_identity(_meta(self._db, "identity") or "")

    @staticmethod
    def prepare(path: Path) -> None:
        """Create the file and its tables (WAL) once, before any thread opens it; check an
        existing one (LedgerDamaged: never replaced by a new empty one). Run as root (a
        technician's command), the files are given to the state directory's owner after;
        files this process cannot write are LedgerDamaged naming the `chown` that fixes it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            settle_owner(path, ledger_files(path))
        except OutboxNotWritable as exc:
            raise LedgerDamaged(exc.reason) from None
        try:
            Ledger._check(path)
        finally:
            if os.geteuid() == 0:
                settle_owner(path, ledger_files(path))

    @staticmethod
    def _check(path: Path) -> None:
        id_file = identity_path(path)
        known = id_file.read_text(encoding="ascii").strip() if id_file.exists() else None
        marks = MarkFile(mark_path(path))
        try:
            mark = marks.read()  # before the database: it is written after each commit
        except OutboxError as exc:
            raise LedgerDamaged(str(exc)) from exc
        size = path.stat().st_size if path.exists() else None
        if known is not None and not size:
            state = "missing" if size is None else "empty (0 bytes)"
            raise LedgerDamaged(f"{path} is {state} but {id_file.name} says it held commands")
        try:
            identity, writes = Ledger._prepare(path)
        except sqlite3.DatabaseError as exc:
            raise LedgerDamaged(f"{path} cannot be read: {exc}") from exc
        if known is None:
            write_atomically(id_file, identity.encode("ascii"))
        elif known != identity:
            raise LedgerDamaged(f"{path} is not the ledger {id_file.name} names (another "
                                "file, or an older copy, was put in its place)")
        if mark is not None and mark.identity != _mark_identity(identity):
            raise LedgerDamaged(f"{path} is not the ledger its mark {marks.path.name} "
                                "belongs to (another file was put in its place)")
        if mark is not None and writes < mark.stored:
            raise LedgerDamaged(
                f"{path} was rolled back: it counts {writes} write(s), its mark "
                f"{marks.path.name} {mark.stored} (an older copy was put in its place)")
        if mark is None or writes > mark.stored:  # a ledger older than marks, or a stop
            marks.create(Mark(_mark_identity(identity), writes, 0))  # between the two

    @staticmethod
    def _prepare(path: Path) -> tuple[str, int]:
        """Schema, migration and integrity check; the ledger's identity and write count."""
        _refuse_wal_at_risk(path)
        db = sqlite3.connect(path, isolation_level=None)
        try:
            check = db.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise LedgerDamaged(f"{path} fails PRAGMA quick_check: {check}")
            db.execute("PRAGMA journal_mode=WAL")
            had_taken = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'taken'"
            ).fetchone()
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                if had_taken is None:  # a ledger made before `taken`: fill it from its rows
                    rows = db.execute(
                        "SELECT verb, args, response, updated_at FROM commands "
                        "WHERE state = 'done' AND response IS NOT NULL"
                    ).fetchall()
                    for verb, args, response, at in rows:
                        _record_taken(db, verb, json.loads(args), json.loads(response), at)
                db.execute("CREATE TABLE IF NOT EXISTS ledger_meta "
                           "(key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                db.execute("INSERT OR IGNORE INTO ledger_meta VALUES ('identity', ?)",
                           (str(uuid.uuid4()),))
                db.execute("INSERT OR IGNORE INTO ledger_meta VALUES ('writes', '0')")
                identity, writes = _meta(db, "identity"), _meta(db, "writes")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return str(identity), int(writes or 0)
        finally:
            db.close()

    def flush(self) -> None:
        """Wait until the reads' outcomes held so far are written."""
        self._writer.submit(lambda: None).result()

    def close(self) -> None:
        """Write the reads' outcomes still held, then close the connection."""
        self._writer.shutdown(wait=True)
        with self._lock:
            self._db.close()
            self._mark.close()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """One write transaction, counted in the file and, after its commit, in the mark
        (the caller holds `_lock`). An exception inside rolls it back.

        The mark is not synced: the commit already is (synchronous=FULL), and a mark that a
        power cut leaves behind the ledger is caught up at the next start; only a copy put
        back within the kernel's writeback delay of its last write would go unnoticed. A
        value-taking command's reply waits for no third fsync."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            writes = int(self._db.execute(
                "UPDATE ledger_meta SET value = CAST(value AS INTEGER) + 1 "
                "WHERE key = 'writes' RETURNING value").fetchone()[0])
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        self._mark.write(Mark(self._identity, writes, 0), sync=False)

    def check_space(self) -> None:
        """OutboxFull when the ledger's filesystem has less than its minimum free: a
        value-taking call is refused at the door rather than run with nowhere to keep its
        outcome."""
        try:
            free = shutil.disk_usage(self._path.parent).free
        except OSError as exc:
            raise OutboxError(f"cannot check free space for {self._path}: {exc}") from exc
        if free < self._min_free_bytes:
            raise OutboxFull(f"disk nearly full: {free // 2**20} MiB free on "
                             f"{self._path.parent}, need {self._min_free_bytes // 2**20} MiB")

    def begin(
        self, request_id: str, verb: str, args: Mapping[str, Any], transaction: str | None,
        *, durable: bool = True,
    ) -> Entry | None:
        """Record a new `running` command; None when new, else the entry already recorded
        (Conflict when it is recorded with another verb or body). `durable=False` (a read):
        held in memory, nothing written before the call."""
        digest = body_hash(verb, args)
        now = self._clock()
        new = Entry(request_id, verb, digest, dict(args), transaction, "running", None, now)
        with self._lock:
            entry = self._held.get(request_id)
            if entry is None and durable:
                entry = self._begin_durable(new)
            elif entry is None:
                row = self._db.execute(
                    "SELECT * FROM commands WHERE request_id = ?", (request_id,)
                ).fetchone()
                entry = None if row is None else _entry(row)
                if entry is None:
                    self._held[request_id] = new
        if entry is None:
            return None
        if entry.body_hash != digest:
            raise Conflict(
                f"request_id {request_id!r} was used for another {entry.verb} request"
            )
        return entry

    def recorded(self, request_id: str) -> bool:
        """Whether `request_id` is recorded (running, or with its outcome)."""
        with self._lock:
            if request_id in self._held:
                return True
            return self._db.execute("SELECT 1 FROM commands WHERE request_id = ?",
                                    (request_id,)).fetchone() is not None

    def _begin_durable(self, new: Entry) -> Entry | None:
        """The recorded entry of `new.request_id`, else `new` written as `running`."""
        now = new.started_at
        with self._writing():
            self._db.execute("DELETE FROM commands WHERE updated_at < ? AND state = 'done'",
                             (now - KEEP_S,))
            row = self._db.execute(
                "SELECT * FROM commands WHERE request_id = ?", (new.request_id,)
            ).fetchone()
            if row is None:
                self._db.execute(
                    "INSERT INTO commands VALUES (?, ?, ?, ?, ?, 'running', NULL, ?, ?)",
                    (new.request_id, new.verb, new.body_hash, json.dumps(new.args),
                     new.transaction, now, now),
                )
        return None if row is None else _entry(row)

    def finish(self, request_id: str, response: Mapping[str, Any], *, final: bool = True
               ) -> None:
        """Record the outcome (`done`; `unknown` while it is still being reconciled), what an
        ok value-taking command took and an ok lock's release key, in one transaction. A
        read's outcome is kept in memory at once and written in the background."""
        now = self._clock()
        with self._lock:
            held = self._held.get(request_id)
            if held is not None:
                self._held[request_id] = replace(
                    held, state="done" if final else "unknown", response=dict(response))
                self._writer.submit(self._write_held, request_id)
                return
            with self._writing():
                self._db.execute(
                    "UPDATE commands SET state = ?, response = ?, updated_at = ? "
                    "WHERE request_id = ?",
                    ("done" if final else "unknown", json.dumps(response), now, request_id),
                )
                row = self._db.execute(
                    "SELECT verb, args FROM commands WHERE request_id = ?", (request_id,)
                ).fetchone()
                if final and row is not None:
                    self._db.execute("DELETE FROM taken WHERE taken_at < ?",
                                     (now - KEEP_TAKEN_S,))
                    _record_taken(self._db, row[0], json.loads(row[1]), response, now)
                    _record_lock(self._db, row[0], response, now)

    def _write_held(self, request_id: str) -> None:
        """Write a read's outcome held in memory (the ledger's writer thread)."""
        now = self._clock()
        with self._lock:
            entry = self._held.get(request_id)
            if entry is None:  # forgotten meanwhile
                return
            with self._writing():
                self._db.execute("DELETE FROM commands WHERE updated_at < ? AND state = 'done'",
                                 (now - KEEP_S,))
                self._db.execute(
                    "INSERT OR REPLACE INTO commands VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (request_id, entry.verb, entry.body_hash, json.dumps(entry.args),
                     entry.transaction, entry.state, json.dumps(entry.response),
                     entry.started_at, now),
                )
            del self._held[request_id]

    def forget(self, request_id: str) -> None:
        """Drop a command that did nothing at Leat: the same request may be sent again."""
        with self._lock:
            self._held.pop(request_id, None)
            with self._writing():
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

    def release_key(self, voucher: str) -> str | None:
        """The release key of our lock on `voucher` (uuid or code), if we hold one."""
        with self._lock:
            self._db.execute("DELETE FROM voucher_locks WHERE locked_at < ?",
                             (self._clock() - KEEP_S,))
            row = self._db.execute(
                "SELECT release_key FROM voucher_locks WHERE voucher = ?", (voucher,)
            ).fetchone()
        return None if row is None else str(row[0])


    def taken(self, uuid: str) -> Taken | None:
        """What the value-taking command that returned `uuid` (a reception, collection,
        voucher or redemption uuid) took, if this device ran it."""
        with self._lock:
            row = self._db.execute(
                "SELECT contact_uuid, collectable_uuid, code FROM taken WHERE uuid = ?", (uuid,)
            ).fetchone()
        return None if row is None else Taken(*row)


def _record_taken(db: sqlite3.Connection, verb: str, args: Mapping[str, Any],
                  response: Mapping[str, Any], at: float) -> None:
    """Index what an ok outcome of a value-taking verb took, by each uuid a give-back
    command may name (reward.reverse: the reception; reward.collect_reverse: the
    collection; voucher.release / voucher.reverse: the voucher or its redemption;
    giftcard.reverse / prepaid.reverse: the transaction, with its contact)."""
    data = response.get("data")
    if verb not in TAKING_VERBS or response.get("status") != "ok" or not isinstance(data, dict):
        return
    contact, collectable, code = args.get("contact_uuid"), None, args.get("code")
    contact = contact or data.get("contact_uuid")  # a payment by identifier: Leat's contact
    uuids = [data.get("uuid")]
    if verb == "reward.collect":
        collectable = args.get("collectable_uuid")
    elif verb == "voucher.lock":
        uuids, code = [data.get("voucher_uuid")], data.get("code") or code
    elif verb == "voucher.redeem":
        voucher = data.get("voucher") or {}
        uuids = [data.get("redemption_uuid"), voucher.get("uuid")]
        code = voucher.get("code") or code
        contact = voucher.get("contact_uuid") or contact
    db.executemany(
        "INSERT OR REPLACE INTO taken VALUES (?, ?, ?, ?, ?)",
        [(u, contact, collectable, code, at) for u in dict.fromkeys(uuids)
         if isinstance(u, str) and u],
    )


def _record_lock(db: sqlite3.Connection, verb: str, response: Mapping[str, Any],
                 at: float) -> None:
    """Keep an ok lock's release key under its voucher uuid and its code."""
    data = response.get("data")
    if verb != "voucher.lock" or response.get("status") != "ok" or not isinstance(data, dict):
        return
    key = data.get("release_key")
    if isinstance(key, str) and key:
        db.executemany("INSERT OR REPLACE INTO voucher_locks VALUES (?, ?, ?)",
                       [(v, key, at) for v in (data.get("voucher_uuid"), data.get("code"))
                        if isinstance(v, str) and v])


def _meta(db: sqlite3.Connection, key: str) -> str | None:
    """A value of `ledger_meta` (None when it is not there)."""
    row = db.execute("SELECT value FROM ledger_meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def _mark_identity(identity: str) -> str:
    """The ledger's identity (a UUID) as the mark stores it: 32 hex digits."""
    return uuid.UUID(identity).hex if identity else "0" * 32


def _entry(row: tuple[Any, ...]) -> Entry:
    request_id, verb, digest, args, transaction, state, response, started, _ = row
    return Entry(
        request_id=request_id, verb=verb, body_hash=digest, args=json.loads(args),
        transaction=transaction, state=state,
        response=None if response is None else json.loads(response), started_at=started,
    )


def _refuse_wal_at_risk(path: Path) -> None:
    """LedgerDamaged, before SQLite opens `path`, when opening it could lose its WAL."""
    risk = wal_at_risk(Path(path))
    if risk is not None:
        raise LedgerDamaged(risk)
