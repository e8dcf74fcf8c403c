"""The mark file: a small record kept beside a database, written after each commit, by which
the database's owner can tell an older copy put back (the database behind its mark).

Used for the outbox (`outbox.sqlite3.mark`, outbox_guard.py) and the command ledger
(`commands.sqlite3.mark`, pos/ledger.py). Also `write_atomically`, by which a small file is
replaced whole or not at all.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import OutboxDamaged, OutboxError


@dataclass(frozen=True, slots=True)
class Mark:
    """The high-water mark: which database, how many items it ever stored, the last id."""

    identity: str
    stored: int
    last_id: int



class MarkFile:
    """The mark on disk: two fixed slots, each with a CRC, written alternately in place.

    A write is one pwrite of 44 bytes into the slot `stored % 2` and one fdatasync (the file
    never changes size), so a power cut can tear at most the slot being written; `read()`
    takes the valid slot with the highest count.
    """

    _SLOT = struct.Struct("<8s16sQQ")
    _MAGIC = b"LSMARK01"
    _SPACING = 512  # each slot in its own disk sector

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def read(self) -> Mark | None:
        """The mark, None when there is no file; OutboxDamaged when it is unreadable."""
        try:
            with self.path.open("rb") as file:
                data = file.read(2 * self._SPACING)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise OutboxError(f"cannot read the mark {self.path}: {exc}") from exc
        marks = [m for m in (self._unpack(data[i * self._SPACING:]) for i in (0, 1)) if m]
        if not marks:
            raise OutboxDamaged(f"its mark {self.path} is unreadable ({len(data)} bytes)")
        return max(marks, key=lambda m: m.stored)

    def write(self, mark: Mark, *, sync: bool = True) -> None:
        """Record `mark` (creates the file when it is missing); `sync`: durably, before
        returning (False: the kernel writes it back within seconds)."""
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                self.create(mark)
                return
        os.pwrite(self._fd, self._pack(mark), (mark.stored % 2) * self._SPACING)
        if sync:
            os.fdatasync(self._fd)

    def create(self, mark: Mark) -> None:
        """A new mark file with `mark` in both slots (temp file, fsync, rename, dir fsync)."""
        self.close()
        slot = self._pack(mark).ljust(self._SPACING, b"\0")
        write_atomically(self.path, slot + slot)

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _pack(self, mark: Mark) -> bytes:
        body = self._SLOT.pack(self._MAGIC, bytes.fromhex(mark.identity), mark.stored,
                               mark.last_id)
        return body + struct.pack("<I", zlib.crc32(body))

    def _unpack(self, data: bytes) -> Mark | None:
        size = self._SLOT.size
        if len(data) < size + 4:
            return None
        body, (crc,) = data[:size], struct.unpack("<I", data[size:size + 4])
        if zlib.crc32(body) != crc:
            return None
        magic, identity, stored, last_id = self._SLOT.unpack(body)
        return Mark(identity.hex(), stored, last_id) if magic == self._MAGIC else None


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: temp file, fsync, rename, fsync of the directory."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """fsync `directory`, so a rename or a new file in it survives a power cut."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
