"""Whether opening a SQLite file for writing could make SQLite throw its WAL away.

A database in WAL mode keeps its latest commits (acked orders, command outcomes) in the
`-wal` file beside it until a checkpoint copies them in. When the main file is empty or is
not a SQLite database at all (overwritten, a failed copy), a read-write connection does not
see a WAL database and SQLite deletes the `-wal` as it closes, and with it the commits that
could have been recovered (`sqlite3 .recover` on the file and its WAL, or SQLite's own
recovery once the main file is put back). So such a file is never opened: the caller refuses
it as damaged and the technician's repair moves both aside, the WAL intact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

HEADER: Final = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


def wal_at_risk(path: Path) -> str | None:
    """Why opening `path` read-write could lose its non-empty `-wal`, or None (no WAL, no
    file, or a file that starts as a SQLite database does)."""
    wal = path.with_name(path.name + "-wal")
    try:
        if wal.stat().st_size == 0:
            return None
        with path.open("rb") as file:
            head = file.read(len(HEADER))
    except FileNotFoundError:
        return None  # no WAL; or no database file, which its callers handle
    except OSError as exc:
        return f"cannot read {path} to check it: {exc}"
    if head == HEADER:
        return None
    what = "empty" if not head else "not a SQLite database (its first bytes are not SQLite's)"
    return (f"{path} is {what}, but {wal} holds {wal.stat().st_size} bytes of commits: it is "
            "left as it is for recovery (opening the file would let SQLite delete it)")
