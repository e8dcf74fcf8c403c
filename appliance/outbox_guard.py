"""What keeps the outbox file from crashing a start or losing acked orders in silence.

Prepared once. `prepare(path)` runs before any thread opens the outbox (daemon `build`):
under an exclusive lock on the state directory it creates a new outbox whole (WAL, schema,
identity) under a temporary name and renames it into place, so no connection ever sees a
half-made file or has to change its journal mode (three threads doing that at the first
start raced: `database is locked`). It then runs `PRAGMA quick_check`.

The mark. `outbox.sqlite3.mark` lives OUTSIDE the database: the database's identity, how
many items it ever stored, and the last id. The outbox writes it (in place, two
checksummed slots, fdatasync) after each commit that stores an item, so the mark is never
ahead of the database. A database behind its mark (an older copy restored, a file rolled
back), missing or zero bytes while the mark says items were stored, a different database,
or one SQLite finds corrupt is DAMAGED: the reason goes into `outbox.sqlite3.damaged`, every
`Outbox` then refuses to open (`OutboxDamaged`) and the POS is answered `storage_damaged`,
until a technician runs `leat-scanner outbox repair --accept-loss` (or moves all the
`outbox.sqlite3*` files aside). A database that held acked orders is never recreated
silently. A fresh device (no database and no mark) gets both.

Versions. `outbox_meta` says which schema wrote the file (`schema_version`) and the oldest
schema a reader must know to use it (`min_reader_version`). Schema changes are additive, so
a newer file stays readable by older code (provision --upgrade can roll back) unless a
change raises `min_reader_version`; code that finds it above its own SCHEMA_VERSION refuses
to start (`OutboxTooNew`, exit status 3) and changes nothing in the file.

Owners. `sudo leat-scanner outbox ...` would leave root-owned files the service user
cannot write (systemd's StateDirectory= does not descend into a directory that is already
owned right: src/shared/chown-recursive.c, "if the top-level directory is properly owned,
we don't descend"). As root the outbox files are given to the state directory's owner;
anyone else is refused with the file, its owner and the `chown` that fixes it.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import grp
import logging
import os
import pwd
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from appliance.errors import OutboxDamaged, OutboxError
from appliance.markfile import Mark, MarkFile, fsync_dir, write_atomically
from appliance.sqlite_file import wal_at_risk

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S: Final = 5.0
MAX_FLAG_BYTES: Final = 4096
# The outbox schema this code writes: 1 orders and returns, 2 commands (kind 'command').
SCHEMA_VERSION: Final = 2
# The oldest schema that can read what this code writes (every change so far is additive).
MIN_READER_VERSION: Final = 1

# Plain DDL rather than sqlite-utils' create(): it cannot express the CHECK constraints that
# keep a bad write from ever reaching the file.
KINDS: Final = ("order", "return", "command")
_TABLE: Final = """
CREATE TABLE IF NOT EXISTS {name} (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('order', 'return', 'command')),
    external_identifier TEXT NOT NULL CHECK (length(external_identifier) > 0),
    order_external_identifier TEXT,
    body TEXT NOT NULL,
    customer_identifier TEXT,
    pos_transaction TEXT,
    state TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at REAL NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    ambiguous INTEGER NOT NULL DEFAULT 0 CHECK (ambiguous IN (0, 1)),
    result TEXT,
    error_code INTEGER,
    error_message TEXT
);
"""
_COLUMNS: Final = (
    "id, kind, external_identifier, order_external_identifier, body, customer_identifier, "
    "pos_transaction, state, attempts, next_attempt_at, created_at, updated_at, ambiguous, "
    "result, error_code, error_message"
)
_INDEXES: Final = """
CREATE UNIQUE INDEX IF NOT EXISTS outbox_kind_external ON outbox (kind, external_identifier);
CREATE INDEX IF NOT EXISTS outbox_state_next ON outbox (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbox_state_updated ON outbox (state, updated_at);
"""
SCHEMA: Final = _TABLE.format(name="outbox") + _INDEXES + """
CREATE TABLE IF NOT EXISTS outbox_meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    identity TEXT NOT NULL,
    stored INTEGER NOT NULL CHECK (stored >= 0),
    schema_version INTEGER NOT NULL DEFAULT 1,
    min_reader_version INTEGER NOT NULL DEFAULT 1
);
"""
# Added to an outbox_meta made before the versions (ALTER TABLE ADD COLUMN: additive).
_VERSION_COLUMNS: Final = (
    ("schema_version", "INTEGER NOT NULL DEFAULT 1"),
    ("min_reader_version", "INTEGER NOT NULL DEFAULT 1"),
)
# Rebuilds an outbox made before commands (its CHECK allowed only 'order' and 'return'): SQLite
# cannot change a CHECK in place (https://www.sqlite.org/lang_altertable.html#otheralter, the
# "12 steps"), so the rows move to a new table with the same ids; `outbox_meta` and the mark
# (identity, stored, last id) stay as they are and still describe the database.
_MIGRATE_COMMANDS: Final = (
    "BEGIN IMMEDIATE;"  # noqa: S608 (constants only)
    + _TABLE.format(name="outbox_new")
    + f"INSERT INTO outbox_new ({_COLUMNS}) SELECT {_COLUMNS} FROM outbox ORDER BY id;"  # noqa: S608
    + "DROP TABLE outbox;"
    + "ALTER TABLE outbox_new RENAME TO outbox;"
    + _INDEXES
    + "COMMIT;"
)


def current(conn: sqlite3.Connection) -> bool:
    """True when the outbox table takes every kind (False: it needs `migrate`; no table: True)."""
    row = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'outbox'").fetchone()
    return row is None or "'command'" in str(row[0])


def migrate(conn: sqlite3.Connection) -> bool:
    """Bring an older outbox table up to the current schema, keeping every row and its id;
    True when it did. One transaction: a crash leaves the old table or the new one whole."""
    if current(conn):
        return False
    try:
        conn.executescript(_MIGRATE_COMMANDS)
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise
    log.info("outbox: table rebuilt to take commands (every row kept)")
    return True


class OutboxNotWritable(OutboxDamaged):
    """An outbox file this process cannot write (e.g. created by root); names the fix."""


class OutboxTooNew(OutboxError):
    """The outbox was written by a newer version that this one cannot read: nothing in it is
    changed; the daemon exits with status 3 (the unit's RestartPreventExitStatus=)."""

    def __init__(self, path: Path, schema_version: int, min_reader_version: int) -> None:
        super().__init__(
            f"outbox {path} was written by a newer leat-scanner (schema {schema_version}, "
            f"readable from schema {min_reader_version}; this version knows schema "
            f"{SCHEMA_VERSION}): refusing to start without touching it. Go back to that "
            f"version: sudo provisioning/provision --upgrade --version <it>")
        self.path = path
        self.schema_version = schema_version
        self.min_reader_version = min_reader_version


def check_readable(path: Path) -> None:
    """OutboxTooNew when the outbox at `path` needs a reader newer than this code. Reads
    only (no checkpoint, no file made); any other problem is left to `examine`, which says
    what it is."""
    if not _size(path):
        return
    # Without a -wal the file holds everything: `immutable` reads it with no -shm or -wal
    # made (https://www.sqlite.org/uri.html#uriimmutable); with one, a read-only connection.
    wal = path.with_name(path.name + "-wal")
    query = "mode=ro" if wal.exists() else "mode=ro&immutable=1"
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?{query}", uri=True,
                               timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error:
        return
    try:
        columns = {str(r[1]) for r in conn.execute("PRAGMA table_info(outbox_meta)")}
        if "min_reader_version" not in columns:
            return
        row = conn.execute("SELECT schema_version, min_reader_version FROM outbox_meta "
                           "WHERE id = 1").fetchone()
    except sqlite3.Error:
        return
    finally:
        conn.close()
    if row is not None and int(row[1]) > SCHEMA_VERSION:
        raise OutboxTooNew(path, int(row[0]), int(row[1]))


def _stamp_versions(conn: sqlite3.Connection) -> None:
    """Give an older outbox_meta the version columns; raise them to this code's (never
    lower: a newer, still readable file keeps its numbers)."""
    columns = {str(r[1]) for r in conn.execute("PRAGMA table_info(outbox_meta)")}
    with conn:
        for name, spec in _VERSION_COLUMNS:
            if name not in columns:
                conn.execute(f"ALTER TABLE outbox_meta ADD COLUMN {name} {spec}")
        conn.execute("UPDATE outbox_meta SET schema_version = max(schema_version, ?), "
                     "min_reader_version = max(min_reader_version, ?) WHERE id = 1",
                     (SCHEMA_VERSION, MIN_READER_VERSION))


def mark_path(path: Path) -> Path:
    """The mark file next to the outbox database."""
    return path.with_name(path.name + ".mark")


def flag_path(path: Path) -> Path:
    """The damage flag next to the outbox database (its text is the reason)."""
    return path.with_name(path.name + ".damaged")


def companions(path: Path) -> list[Path]:
    """Every file that belongs to the outbox at `path`."""
    return [path, *(path.with_name(path.name + s) for s in ("-wal", "-shm")),
            mark_path(path), flag_path(path)]


# -- the damage flag ----------------------------------------------------------------------


def read_flag(path: Path) -> str | None:
    """The recorded damage of the outbox at `path`, or None."""
    try:
        with flag_path(path).open("rb") as file:
            text = file.read(MAX_FLAG_BYTES).decode("utf-8", "replace").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OutboxError(f"cannot read {flag_path(path)}: {exc}") from exc
    return text or "marked damaged (no reason recorded)"


def write_flag(path: Path, reason: str) -> None:
    """Record the damage durably; logged at ERROR (best effort: the caller raises anyway)."""
    log.error("outbox %s is damaged, new orders are refused until a technician runs "
              "`leat-scanner outbox repair`: %s", path, reason)
    try:
        write_atomically(flag_path(path), reason.encode("utf-8")[:MAX_FLAG_BYTES] + b"\n")
    except OSError as exc:
        log.error("cannot record the damage in %s: %s", flag_path(path), exc)


# -- owners -------------------------------------------------------------------------------


def settle_owner(path: Path, files: Sequence[Path] | None = None) -> None:
    """As root: give the outbox files (or `files` beside it) to the state directory's owner.
    Otherwise refuse (OutboxNotWritable) files this process cannot read and write, naming
    the fix."""
    files = companions(path) if files is None else files
    try:
        directory = path.parent.stat()
        if os.geteuid() == 0:
            for file in files:
                with contextlib.suppress(FileNotFoundError):  # -wal/-shm come and go
                    st = file.stat()
                    if (st.st_uid, st.st_gid) != (directory.st_uid, directory.st_gid):
                        os.chown(file, directory.st_uid, directory.st_gid)
                        log.warning("gave %s to %s (it was %s's)", file,
                                    _user(directory.st_uid), _user(st.st_uid))
            return
        dir_ok = os.access(path.parent, os.R_OK | os.W_OK | os.X_OK)
        denied = [p for p in files
                  if not os.access(p, os.R_OK | os.W_OK) and p.exists()]
        if dir_ok and not denied:
            return
        first = denied[0] if denied else path.parent
        st = first.stat()
    except OSError as exc:
        raise OutboxError(f"cannot check the owner of {path}: {exc}") from exc
    targets = " ".join(str(p) for p in (denied or [path.parent]))
    if st.st_uid == os.geteuid():  # ours already: its mode is what keeps us out
        fix = f"chmod u+{'rw' if denied else 'rwx'} {targets}"
    else:
        owner = (directory.st_uid, directory.st_gid) if dir_ok else (os.geteuid(), os.getegid())
        fix = (f"sudo chown {_name(owner[0], pwd.getpwuid)}:{_name(owner[1], grp.getgrgid)} "
               f"{targets}")
    raise OutboxNotWritable(
        f"{first} belongs to {_user(st.st_uid)} (mode {st.st_mode & 0o777:04o}) and this "
        f"process runs as {_user(os.geteuid())}, who cannot write it; fix: {fix}"
    )


def _user(uid: int) -> str:
    name = _name(uid, pwd.getpwuid)
    return f"uid {uid}" if name == str(uid) else f"{name} (uid {uid})"


def _name(number: int, lookup: Callable[[int], Any]) -> str:
    """The user or group name for a number (the number itself when it has none)."""
    try:
        return str(lookup(number)[0])
    except KeyError:
        return str(number)


# -- opening, preparing, repairing --------------------------------------------------------


def connect(path: Path, mode: str) -> sqlite3.Connection:
    """A connection that never creates the file (`mode` "ro" or "rw", SQLite URI);
    OutboxDamaged, without opening it, when that could lose its WAL (sqlite_file.py)."""
    risk = wal_at_risk(path)
    if risk is not None:
        raise OutboxDamaged(risk)
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode={mode}", uri=True,
                           timeout=BUSY_TIMEOUT_S)
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    return conn


def is_corrupt(exc: sqlite3.Error) -> bool:
    """True for SQLite's "database disk image is malformed" and "file is not a database"."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def read_meta(conn: sqlite3.Connection) -> tuple[str, int] | None:
    """(identity, stored) of the database, or None when it has no outbox_meta (old file)."""
    try:
        row = conn.execute("SELECT identity, stored FROM outbox_meta WHERE id = 1").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None
        raise
    return None if row is None else (str(row[0]), int(row[1]))


def compare(path: Path, mark: Mark | None, meta: tuple[str, int] | None) -> None:
    """OutboxDamaged when the database is not the one its mark describes, or behind it.
    Read the mark BEFORE the database: it is written only after its commit."""
    if mark is None or (meta is None and mark.stored == 0):
        return
    if meta is None:
        raise OutboxDamaged(f"{path} is not the database its mark belongs to (no identity; "
                            f"the mark says {mark.stored} item(s) were stored)")
    identity, stored = meta
    if identity != mark.identity:
        raise OutboxDamaged(
            f"{path} is not the database its mark belongs to (database {identity[:8]}, mark "
            f"{mark.identity[:8]}): another file was put in its place")
    if stored < mark.stored:
        raise OutboxDamaged(
            f"{path} was rolled back: it has stored {stored} item(s), its mark says "
            f"{mark.stored} (the last was item {mark.last_id}); an older copy?")


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """An exclusive lock on the state directory (flock), across threads and processes."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def prepare(path: Path) -> None:
    """Make the outbox at `path` ready before any thread opens it (see the module doc).

    Creates it on a fresh device; otherwise sets WAL if needed, runs `PRAGMA quick_check`
    and checks the mark. OutboxDamaged (recorded, logged) when it must not be used;
    OutboxNotWritable for files this process cannot write; OutboxError otherwise.
    """
    path = Path(path)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise OutboxError(f"cannot create {path.parent}: {exc}") from exc
    settle_owner(path)
    try:
        with locked(path.parent):
            flagged = read_flag(path)
            if flagged is not None:
                raise OutboxDamaged(flagged)
            try:
                _prepare(path)
            except OutboxNotWritable:
                raise
            except OutboxDamaged as exc:
                write_flag(path, exc.reason)
                raise
    finally:
        if os.geteuid() == 0:
            with contextlib.suppress(OutboxError):
                settle_owner(path)


def _prepare(path: Path) -> None:
    check_readable(path)
    marks = MarkFile(mark_path(path))
    mark = marks.read()
    conn = examine(path, mark)
    if conn is None:
        create(path)
        return
    try:
        db = _settle(conn, path)
    except sqlite3.Error as exc:
        if is_corrupt(exc):
            raise OutboxDamaged(f"{path} is not a readable SQLite database ({exc})") from exc
        raise OutboxError(f"cannot prepare outbox {path}: {exc}") from exc
    finally:
        conn.close()
    if mark is None or mark.identity != db.identity:  # no mark yet (a fresh or older outbox)
        if db.stored:
            log.warning("outbox %s had no mark: made one (%d item(s) stored)", path, db.stored)
        marks.create(db)
    elif mark.stored < db.stored:  # the process died between a commit and its mark
        marks.write(db)
        marks.close()


def _settle(conn: sqlite3.Connection, path: Path) -> Mark:
    """WAL on and the schema complete (an outbox from before the mark gets outbox_meta, its
    count taken from the ids); returns the mark that describes the database."""
    if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise OutboxError(f"cannot switch {path} to WAL (journal_mode={mode})")
    conn.execute("PRAGMA synchronous = FULL")
    migrate(conn)
    conn.executescript(SCHEMA)
    with conn:
        conn.execute("INSERT OR IGNORE INTO outbox_meta (id, identity, stored) "
                      "SELECT 1, ?, coalesce(max(id), 0) FROM outbox", (uuid.uuid4().hex,))
    _stamp_versions(conn)
    identity, stored = conn.execute(
        "SELECT identity, stored FROM outbox_meta WHERE id = 1").fetchone()
    last_id = conn.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()[0]
    return Mark(str(identity), int(stored), int(last_id))


def examine(path: Path, mark: Mark | None) -> sqlite3.Connection | None:
    """None when there is no database and nothing says one held items (create it);
    an open connection when it passes quick_check and matches its mark; else OutboxDamaged."""
    if not _size(path):
        lost = lost_file(path, mark)
        if lost is not None:
            raise OutboxDamaged(lost)
        return None
    try:
        conn = connect(path, "rw")
    except sqlite3.Error as exc:
        raise OutboxError(f"cannot open outbox {path}: {exc}") from exc
    try:
        problems = [str(r[0]) for r in conn.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise OutboxDamaged(f"{path} fails SQLite's quick_check: {'; '.join(problems)}")
        compare(path, mark, read_meta(conn))
    except sqlite3.Error as exc:
        conn.close()
        if is_corrupt(exc):
            raise OutboxDamaged(f"{path} is not a readable SQLite database ({exc})") from exc
        raise OutboxError(f"cannot check outbox {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def lost_file(path: Path, mark: Mark | None) -> str | None:
    """Why a missing or empty (0 bytes) database file is damage, or None when nothing says
    it ever held anything (a fresh device)."""
    size = _size(path)
    what = "missing" if size is None else "empty (0 bytes)"
    wal = path.with_name(path.name + "-wal")
    if mark is not None and mark.stored > 0:
        return (f"{path} is {what}, but its mark says {mark.stored} item(s) were stored "
                f"(the last was item {mark.last_id})")
    if _size(wal):
        return f"{path} is {what}, but {wal} is not"
    return None


def create(path: Path) -> None:
    """A new, empty outbox at `path`: made whole under a temporary name, its mark written,
    then renamed into place (the caller holds the directory lock)."""
    identity = uuid.uuid4().hex
    tmp = path.with_name(f".{path.name}.{identity[:8]}.new")
    try:
        conn = sqlite3.connect(tmp)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.executescript(SCHEMA)
            with conn:
                conn.execute("INSERT INTO outbox_meta (id, identity, stored, schema_version, "
                             "min_reader_version) VALUES (1, ?, 0, ?, ?)",
                             (identity, SCHEMA_VERSION, MIN_READER_VERSION))
        finally:
            conn.close()  # checkpoints: the file alone holds everything
        fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        MarkFile(mark_path(path)).create(Mark(identity, 0, 0))
        for stale in ("-wal", "-shm"):  # an empty -wal or an index of a file that is gone
            path.with_name(path.name + stale).unlink(missing_ok=True)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except (OSError, sqlite3.Error) as exc:
        tmp.unlink(missing_ok=True)
        raise OutboxError(f"cannot create outbox {path}: {exc}") from exc
    log.info("created outbox %s", path)


def diagnose(path: Path) -> str | None:
    """Why the outbox at `path` must not be used, or None (reads only; a technician's check)."""
    flagged = read_flag(path)
    if flagged is not None:
        return flagged
    try:
        check_readable(path)
        conn = examine(path, MarkFile(mark_path(path)).read())
    except OutboxTooNew as exc:
        return str(exc)
    except OutboxDamaged as exc:
        return exc.reason
    if conn is not None:
        conn.close()
    return None


def repair(path: Path) -> str:
    """Accept the loss: keep a database that is readable (re-marked), or move the damaged
    files aside and start empty; clear the damage. Returns what was done. Run it with the
    service stopped."""
    path = Path(path)
    settle_owner(path)
    try:
        with locked(path.parent):
            check_readable(path)  # a newer version's outbox is not ours to repair
            kept = _keepable(path)
            if kept is not None:
                db, waiting = kept
                MarkFile(mark_path(path)).create(db)
                done = (f"kept {path} ({waiting} item(s) waiting); its mark now matches it "
                        f"({db.stored} stored)")
            else:
                stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
                moved = []
                for file in companions(path)[:4]:
                    if file.exists():
                        aside = file.with_name(f"{file.name}.aside-{stamp}")
                        file.rename(aside)
                        moved.append(aside.name)
                create(path)
                done = (f"moved {', '.join(moved) or 'nothing'} aside and started an empty "
                        f"outbox at {path}")
            flag_path(path).unlink(missing_ok=True)
            fsync_dir(path.parent)
    except OSError as exc:
        raise OutboxError(f"cannot repair outbox {path}: {exc}") from exc
    finally:
        if os.geteuid() == 0:
            with contextlib.suppress(OutboxError):
                settle_owner(path)
    log.warning("outbox repaired: %s", done)
    return done


def _keepable(path: Path) -> tuple[Mark, int] | None:
    """The mark and the waiting count of a database that passes quick_check, else None."""
    if not _size(path):
        return None
    try:
        conn = connect(path, "rw")
    except (sqlite3.Error, OutboxDamaged):  # moved aside whole, its WAL with it
        return None
    try:
        if [str(r[0]) for r in conn.execute("PRAGMA quick_check(1)")] != ["ok"]:
            return None
        db = _settle(conn, path)
        waiting = conn.execute(
            "SELECT count(*) FROM outbox WHERE state IN ('pending', 'sending')").fetchone()[0]
    except (sqlite3.Error, OutboxError):
        return None
    finally:
        conn.close()
    return db, int(waiting)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None
