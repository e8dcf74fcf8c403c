"""The durable outbox: orders, returns and give-back commands the POS handed us, until Leat
has them.

Durability. One SQLite file (sqlite-utils over our own `sqlite3` connection) in WAL mode
with `synchronous=FULL`: when `enqueue()` returns, the row is committed and the WAL is
fsynced, so a power cut or `kill -9` right after the POS got its ack loses nothing. Every
change is one transaction (`BEGIN IMMEDIATE`), so nothing is ever half-stored. Each thread
(and process: the daemon, the technician's CLI) opens its own `Outbox` on the same file;
`busy_timeout` makes writers wait for each other instead of failing.

State machine (one row per `(kind, external_identifier)`)::

    enqueue ─▶ PENDING ──claim()──▶ SENDING ──mark_delivered()──▶ DELIVERED ──prune()──▶ (gone)
                 ▲  ▲                  │  │
                 │  └─mark_retry()─────┘  └──mark_dead()──▶ DEAD ──retry()──▶ PENDING
                 └──── recover() (process died while SENDING: ambiguous=True)
    drop(): PENDING or DEAD -> removed (DELIVERED is history, SENDING is in flight)

Exactly once. `claim()` is one `UPDATE ... WHERE state='pending'`, so of several workers
exactly one gets an item. An attempt that may have reached Leat sets `ambiguous`, which
stays set until delivery: the forwarder must look the order up before posting it again.

Returns. A return is due only once its order is DELIVERED here. When its order is DEAD, the
return is made DEAD too (error `ORDER_NOT_DELIVERED`), and `retry()` of the order revives
those returns with it. A return whose order is not in the outbox at all (sent before the
outbox saw it, or pruned after delivery) is not held back: Leat decides.

Commands. A give-back POS command (`appliance.commands_durable`: reverse, release,
collect-reverse) is kind COMMAND, keyed by its `request_id`, its body `{"verb", "args"}`. It
belongs to no order, but waits for an older command on the same Leat object that is still
PENDING or SENDING (the same reward reception or collectable, the same voucher): Leat
refuses reversing a reception whose collection is not reversed yet, so "reverse the
collection, then the reception" must reach Leat in that order. An outbox made before
commands existed is rebuilt once by `prepare` to take them, keeping every row, id and its
mark (`outbox_guard.migrate`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import sqlite_utils

from appliance import outbox_guard as guard
from appliance.errors import OutboxDamaged, OutboxError
from appliance.markfile import Mark, MarkFile
from appliance.outbox_items import (
    Enqueued,
    Item,
    Kind,
    OutboxConflict,
    OutboxFull,
    State,
    canonical_json,
    item_from_row,
)

log = logging.getLogger(__name__)

ORDER_NOT_DELIVERED: Final = "its order was not delivered"

def _subject(table: str) -> str:
    """SQL for the Leat object a command acts on (NULL: none known; an unreadable body too):
    a reward reception (`reception_uuid`, or `collectable_uuid`, the same uuid) or a voucher."""
    body = f"{table}.body"
    return (f"(CASE WHEN json_valid({body}) THEN coalesce("
            f"json_extract({body}, '$.args.reception_uuid'), "
            f"json_extract({body}, '$.args.collectable_uuid'), "
            f"json_extract({body}, '$.args.voucher_uuid')) END)")


# PENDING and due; a return not before its order is delivered; a command not before older
# unfinished commands on the same Leat object (constants only).
_DUE: Final = (
    """SELECT * FROM outbox AS r
    WHERE r.state = 'pending' AND r.next_attempt_at <= ?
      AND (r.kind != 'return' OR r.order_external_identifier IS NULL
           OR NOT EXISTS (SELECT 1 FROM outbox AS o
                          WHERE o.kind = 'order'
                            AND o.external_identifier = r.order_external_identifier
                            AND o.state != 'delivered'))
      AND (r.kind != 'command' OR NOT EXISTS (
           SELECT 1 FROM outbox AS c
           WHERE c.kind = 'command' AND c.id < r.id AND c.state IN ('pending', 'sending')
             AND """  # noqa: S608
    + _subject("c") + " = " + _subject("r") + "))\n    ORDER BY r.id LIMIT ?"
)


class Outbox:
    """The durable queue on one SQLite file; one object per thread (its own connection).

    Opening checks the file against its mark (OutboxDamaged when it must not be used) and
    prepares it if nobody did (`create=False`: never create one). `readonly=True` opens an
    existing file read-only with no checks (the technician's `list` and `show`).
    """

    def __init__(
        self,
        path: Path,
        *,
        max_items: int = 10_000,
        retention_s: float = 7 * 86400,
        min_free_bytes: int = 50 * 2**20,
        clock: Callable[[], float] = time.time,
        create: bool = True,
        readonly: bool = False,
    ) -> None:
        self.path = Path(path)
        self.max_items = max_items
        self.retention_s = retention_s
        self.min_free_bytes = min_free_bytes
        self._clock = clock
        self._mark = MarkFile(guard.mark_path(self.path))
        self._identity = ""
        self._inode = 0
        if readonly:
            self._conn = self._connect("ro")
        else:
            self._conn = self._open(create)
        self._db = sqlite_utils.Database(self._conn, execute_plugins=False)

    def _connect(self, mode: str) -> sqlite3.Connection:
        """A connection to the existing file (never creates it); OutboxError if there is none."""
        if not self.path.exists():
            reason = guard.read_flag(self.path)
            if reason is None:
                reason = guard.lost_file(self.path, self._mark.read())
                if reason is not None and mode != "ro":
                    guard.write_flag(self.path, reason)
            if reason is not None:
                raise OutboxDamaged(reason)
            raise OutboxError(f"there is no outbox at {self.path} (nothing stored yet)")
        try:
            conn = guard.connect(self.path, mode)
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open outbox {self.path}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        return conn

    def _open(self, create: bool) -> sqlite3.Connection:
        """Open for writing: prepared (WAL, schema) and the same database its mark describes."""
        if create and not self.path.exists():
            guard.prepare(self.path)
        if self.path.exists():  # SQLite would fall back to read-only without a word
            guard.settle_owner(self.path)
        conn = self._connect("rw")
        try:
            try:
                ready = self._ready(conn)
            except sqlite3.DatabaseError:  # corrupt: prepare() finds out why, and records it
                ready = False
            if not ready:  # 0 bytes, corrupt, or an outbox from before outbox_meta
                conn.close()
                guard.prepare(self.path)
                conn = self._connect("rw")
                if not self._ready(conn):
                    raise OutboxError(f"outbox {self.path} is not in WAL mode after prepare")
            conn.execute("PRAGMA synchronous = FULL")
            reason = guard.read_flag(self.path)
            if reason is not None:
                raise OutboxDamaged(reason)
            mark = self._mark.read()  # before the database: a mark follows its commit
            self._inode = os.stat(self.path).st_ino
            meta = guard.read_meta(conn)
            try:
                guard.compare(self.path, mark, meta)
            except OutboxDamaged as exc:
                guard.write_flag(self.path, exc.reason)
                raise
            assert meta is not None  # _ready checked outbox_meta
            self._identity = meta[0]
        except sqlite3.Error as exc:
            conn.close()
            raise self._translate(exc) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def prepare(path: Path) -> None:
        """Make the file ready before any thread opens it (`outbox_guard.prepare`)."""
        guard.prepare(path)

    @staticmethod
    def _ready(conn: sqlite3.Connection) -> bool:
        """WAL is set and the schema is current, with outbox_meta (a per-thread open never
        changes them: `prepare` does, under the directory lock)."""
        mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        return mode == "wal" and guard.read_meta(conn) is not None and guard.current(conn)

    # -- plumbing ------------------------------------------------------------------------

    @property
    def connection(self) -> sqlite3.Connection:
        """This object's own connection (diagnostics and tests; never share across threads)."""
        return self._conn

    def now(self) -> float:
        """The current time on this outbox's clock (seconds, as stored in the items)."""
        return self._clock()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT); sqlite errors -> Outbox*."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.commit()
            except BaseException:
                if conn.in_transaction:
                    conn.rollback()
                raise
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """Reads outside a transaction; sqlite errors -> OutboxError."""
        try:
            yield self._conn
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: sqlite3.Error) -> OutboxError:
        """Our error for a sqlite3 one (SQLITE_FULL becomes OutboxFull)."""
        code = getattr(exc, "sqlite_errorcode", 0)
        if code == sqlite3.SQLITE_FULL:
            return OutboxFull(f"disk full: {exc} ({self.path})")
        if code & 0xFF == sqlite3.SQLITE_READONLY:  # a file we cannot write: say which, and why
            try:
                guard.settle_owner(self.path)
            except OutboxError as owner:
                return owner
        return OutboxError(f"outbox {self.path}: {exc}")

    def _row(self, conn: sqlite3.Connection, item_id: int) -> sqlite3.Row | None:
        row: sqlite3.Row | None = conn.execute(
            "SELECT * FROM outbox WHERE id = ?", (item_id,)
        ).fetchone()
        return row

    def _transition(
        self, item_id: int, allowed: Collection[State], sets: str, params: tuple[Any, ...]
    ) -> Item:
        """UPDATE one row if its state is in `allowed`; OutboxError naming what it was."""
        states = tuple(str(s) for s in allowed)
        marks = ",".join("?" * len(states))
        with self._write() as conn:
            row = conn.execute(
                f"UPDATE outbox SET {sets}, updated_at = ? "  # noqa: S608 (constants only)
                f"WHERE id = ? AND state IN ({marks}) RETURNING *",
                (*params, self._clock(), item_id, *states),
            ).fetchone()
            if row is None:
                raise self._refusal(conn, item_id, f"expected {' or '.join(states)}")
        return item_from_row(row)

    def _refusal(self, conn: sqlite3.Connection, item_id: int, why: str) -> OutboxError:
        """Why a guarded write matched no row: the item is missing, or in the wrong state."""
        current = self._row(conn, item_id)
        if current is None:
            return OutboxError(f"no outbox item {item_id}")
        return OutboxError(f"outbox item {item_id} is {current['state']}: {why}")

    # -- the POS side ----------------------------------------------------------------------

    def enqueue(
        self,
        kind: Kind,
        external_identifier: str,
        body: Mapping[str, Any],
        *,
        customer_identifier: str | None = None,
        order_external_identifier: str | None = None,
        transaction: str | None = None,
    ) -> Enqueued:
        """Store an order/return durably (idempotent on kind + external_identifier)."""
        kind = Kind(kind)
        if not isinstance(external_identifier, str) or not external_identifier:
            raise OutboxError("external_identifier must be a non-empty string")
        if kind is not Kind.RETURN and order_external_identifier is not None:
            raise OutboxError("only a return belongs to an order (order_external_identifier)")
        text = canonical_json(body)
        self._check_damage()
        with self._write() as conn:
            row = conn.execute(
                "SELECT * FROM outbox WHERE kind = ? AND external_identifier = ?",
                (str(kind), external_identifier),
            ).fetchone()
            if row is not None:
                existing = item_from_row(row)
                if (
                    row["body"] != text
                    or existing.customer_identifier != customer_identifier
                    or existing.order_external_identifier != order_external_identifier
                ):
                    raise OutboxConflict(
                        f"{kind} {external_identifier!r} is already outbox item {existing.id} "
                        "with different content"
                    )
                return Enqueued(existing, created=False)
            waiting = conn.execute(
                "SELECT count(*) FROM outbox WHERE state IN ('pending', 'sending')"
            ).fetchone()[0]
            if waiting >= self.max_items:
                raise OutboxFull(f"outbox full: {waiting} orders waiting (max {self.max_items})")
            self._check_disk()
            now = self._clock()
            table = self._db.table("outbox")
            table.insert(
                {
                    "kind": str(kind),
                    "external_identifier": external_identifier,
                    "order_external_identifier": order_external_identifier,
                    "body": text,
                    "customer_identifier": customer_identifier,
                    "pos_transaction": transaction,
                    "state": str(State.PENDING),
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                    "updated_at": now,
                    "ambiguous": 0,
                }
            )
            new = self._row(conn, int(table.last_pk or 0))
            assert new is not None  # inserted in this very transaction
            stored = int(conn.execute(
                "UPDATE outbox_meta SET stored = stored + 1 WHERE id = 1 RETURNING stored"
            ).fetchone()[0])
        self._check_damage(after_commit=True)
        try:
            self._mark.write(Mark(self._identity, stored, int(new["id"])))
        except OSError as exc:  # stored, but not acknowledged: the POS sends it again
            raise OutboxError(f"cannot update the outbox mark {self._mark.path}: {exc}") from exc
        return Enqueued(item_from_row(new), created=True)

    def _check_damage(self, *, after_commit: bool = False) -> None:
        """OutboxDamaged when the outbox was found damaged, or (after a commit) its file was
        deleted or replaced while open: what was just committed would not survive."""
        reason = guard.read_flag(self.path)
        if reason is None and after_commit:
            try:
                same = os.stat(self.path).st_ino == self._inode
            except FileNotFoundError:
                same = False
            if not same:
                reason = f"{self.path} was deleted or replaced while it was open"
        if reason is not None:
            raise OutboxDamaged(reason)

    def _check_disk(self) -> None:
        """OutboxFull when the file's filesystem has less than min_free_bytes free."""
        try:
            free = shutil.disk_usage(self.path.parent).free
        except OSError as exc:
            raise OutboxError(f"cannot check free space for {self.path}: {exc}") from exc
        if free < self.min_free_bytes:
            raise OutboxFull(
                f"disk nearly full: {free // 2**20} MiB free on {self.path.parent}, "
                f"need {self.min_free_bytes // 2**20} MiB"
            )

    # -- the forwarder side ----------------------------------------------------------------

    def due(self, now: float | None = None, limit: int = 16) -> list[Item]:
        """PENDING items whose time has come, oldest first; a return only after its order,
        a command only after older unfinished commands on the same Leat object.

        Returns whose order is DEAD are made DEAD here; a row that cannot be read back is
        made DEAD (logged) rather than blocking the queue.
        """
        now = self._clock() if now is None else now
        self._kill_orphaned_returns()
        with self._read() as conn:
            rows = conn.execute(
                _DUE,
                (now, limit),
            ).fetchall()
        items: list[Item] = []
        for row in rows:
            try:
                items.append(item_from_row(row))
            except OutboxError as exc:
                log.error("%s; marking it dead", exc)
                with contextlib.suppress(OutboxError):
                    self.mark_dead(int(row["id"]), code=None, message=str(exc))
        return items

    def _kill_orphaned_returns(self) -> None:
        """Make PENDING returns whose order is DEAD here DEAD as well."""
        orphans = """kind = 'return' AND state = 'pending' AND order_external_identifier IN
            (SELECT external_identifier FROM outbox WHERE kind = 'order' AND state = 'dead')"""
        with self._read() as conn:
            query = f"SELECT 1 FROM outbox WHERE {orphans} LIMIT 1"  # noqa: S608 (constant)
            if conn.execute(query).fetchone() is None:
                return
        with self._write() as conn:
            killed = conn.execute(
                "UPDATE outbox SET state = 'dead', error_code = NULL, error_message = ?, "  # noqa: S608
                f"updated_at = ? WHERE {orphans}",
                (ORDER_NOT_DELIVERED, self._clock()),
            ).rowcount
        log.warning("%d return(s) made dead: %s", killed, ORDER_NOT_DELIVERED)

    def claim(self, item_id: int) -> Item | None:
        """PENDING -> SENDING (attempts + 1) atomically; None if it is not PENDING (taken)."""
        with self._write() as conn:
            row = conn.execute(
                "UPDATE outbox SET state = 'sending', attempts = attempts + 1, updated_at = ? "
                "WHERE id = ? AND state = 'pending' RETURNING *",
                (self._clock(), item_id),
            ).fetchone()
        return None if row is None else item_from_row(row)

    def mark_delivered(self, item_id: int, result: Mapping[str, Any]) -> Item:
        """SENDING -> DELIVERED with Leat's result; clears ambiguity and errors."""
        return self._transition(
            item_id,
            (State.SENDING,),
            "state = 'delivered', result = ?, ambiguous = 0, error_code = NULL, "
            "error_message = NULL",
            (canonical_json(result),),
        )

    def mark_retry(self, item_id: int, *, delay_s: float, error: str, ambiguous: bool) -> Item:
        """SENDING -> PENDING in `delay_s`; `ambiguous` is sticky until delivery."""
        return self._transition(
            item_id,
            (State.SENDING,),
            "state = 'pending', next_attempt_at = ?, error_message = ?, "
            "ambiguous = (ambiguous OR ?)",
            (self._clock() + max(delay_s, 0.0), error, int(ambiguous)),
        )

    def mark_dead(self, item_id: int, *, code: int | None, message: str) -> Item:
        """SENDING (or PENDING) -> DEAD with Leat's error code and message."""
        return self._transition(
            item_id,
            (State.SENDING, State.PENDING),
            "state = 'dead', error_code = ?, error_message = ?",
            (code, message),
        )

    # -- the technician side ---------------------------------------------------------------

    def retry(self, item_id: int) -> Item:
        """DEAD -> PENDING now with attempts reset; an order revives returns it took down."""
        now = self._clock()
        item = self._transition(
            item_id,
            (State.DEAD,),
            "state = 'pending', attempts = 0, next_attempt_at = ?, error_code = NULL, "
            "error_message = NULL",
            (now,),
        )
        if item.kind is Kind.ORDER:
            with self._write() as conn:
                conn.execute(
                    "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?, "
                    "error_code = NULL, error_message = NULL, updated_at = ? "
                    "WHERE kind = 'return' AND state = 'dead' AND error_message = ? "
                    "AND order_external_identifier = ?",
                    (now, now, ORDER_NOT_DELIVERED, item.external_identifier),
                )
        return item

    def drop(self, item_id: int) -> Item:
        """Remove a PENDING or DEAD item (never DELIVERED history or one in flight)."""
        allowed = (str(State.PENDING), str(State.DEAD))
        with self._write() as conn:
            row = conn.execute(
                "DELETE FROM outbox WHERE id = ? AND state IN (?, ?) RETURNING *",
                (item_id, *allowed),
            ).fetchone()
            if row is None:
                raise self._refusal(conn, item_id, "only pending or dead items can be dropped")
        return item_from_row(row)

    # -- reading ---------------------------------------------------------------------------

    def get(self, item_id: int) -> Item | None:
        """The item with this id, or None."""
        with self._read() as conn:
            row = self._row(conn, item_id)
        return None if row is None else item_from_row(row)

    def find(self, kind: Kind, external_identifier: str) -> Item | None:
        """The item for (kind, external_identifier), or None."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT * FROM outbox WHERE kind = ? AND external_identifier = ?",
                (str(Kind(kind)), external_identifier),
            ).fetchone()
        return None if row is None else item_from_row(row)

    def returns_of(self, order_external_identifier: str) -> list[Item]:
        """The returns stored for an order (any state), oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT * FROM outbox WHERE kind = 'return' AND order_external_identifier = ? "
                "ORDER BY id",
                (order_external_identifier,),
            ).fetchall()
        return [item_from_row(row) for row in rows]

    def items(self, states: Collection[State] | None = None, limit: int = 100) -> list[Item]:
        """Items (in these states), oldest first."""
        where, params = "", tuple[str, ...]()
        if states is not None:
            names = tuple(str(State(s)) for s in states)
            if not names:
                return []
            where, params = f"WHERE state IN ({','.join('?' * len(names))})", names
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT * FROM outbox {where} ORDER BY id LIMIT ?",  # noqa: S608 (placeholders)
                (*params, limit),
            ).fetchall()
        return [item_from_row(row) for row in rows]

    def depth(self) -> int:
        """How many items wait for Leat (PENDING + SENDING)."""
        with self._read() as conn:
            count: int = conn.execute(
                "SELECT count(*) FROM outbox WHERE state IN ('pending', 'sending')"
            ).fetchone()[0]
        return count

    def oldest_pending_age(self, now: float | None = None) -> float | None:
        """Seconds since the oldest waiting (PENDING/SENDING) item was enqueued, or None."""
        now = self._clock() if now is None else now
        with self._read() as conn:
            oldest = conn.execute(
                "SELECT min(created_at) FROM outbox WHERE state IN ('pending', 'sending')"
            ).fetchone()[0]
        if oldest is None:
            return None
        try:
            return max(0.0, now - float(oldest))
        except (TypeError, ValueError) as exc:
            raise OutboxError(f"outbox {self.path}: created_at {oldest!r} is not a time") from exc

    def damage(self) -> str | None:
        """Why this outbox must not take orders (recorded, or its mark disagrees), or None;
        reads only (also on a read-only outbox)."""
        reason = guard.read_flag(self.path)
        if reason is None:
            try:
                mark = self._mark.read()  # before the database: a mark follows its commit
                if self.path.stat().st_size == 0:
                    return guard.lost_file(self.path, mark)
                with self._read() as conn:
                    meta = guard.read_meta(conn)
                guard.compare(self.path, mark, meta)
            except OutboxDamaged as exc:
                reason = exc.reason
            except OSError as exc:
                raise OutboxError(f"cannot check outbox {self.path}: {exc}") from exc
        return reason

    # -- housekeeping ----------------------------------------------------------------------

    def recover(self) -> int:
        """At startup: SENDING -> PENDING, ambiguous (the process died mid-send); how many."""
        now = self._clock()
        with self._write() as conn:
            count: int = conn.execute(
                "UPDATE outbox SET state = 'pending', ambiguous = 1, next_attempt_at = ?, "
                "updated_at = ? WHERE state = 'sending'",
                (now, now),
            ).rowcount
        if count:
            log.warning("recovered %d item(s) interrupted while sending (ambiguous)", count)
        return count

    def prune(self, now: float | None = None) -> int:
        """Delete DELIVERED items older than retention_s; how many."""
        now = self._clock() if now is None else now
        with self._write() as conn:
            count: int = conn.execute(
                "DELETE FROM outbox WHERE state = 'delivered' AND updated_at < ?",
                (now - self.retention_s,),
            ).rowcount
        return count

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._conn.close()
        self._mark.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def outbox_state(path: Path) -> dict[str, Any]:
    """The `outbox` part of the retained state: depth and oldest pending age, or `damaged`
    with the reason (depth unknown); OutboxError for anything else."""
    try:
        with Outbox(path, create=False) as outbox:
            age = outbox.oldest_pending_age()
            return {
                "depth": outbox.depth(),
                "oldest_pending_age_s": None if age is None else round(age, 1),
            }
    except OutboxDamaged as exc:
        return {"depth": None, "oldest_pending_age_s": None, "damaged": exc.reason}
