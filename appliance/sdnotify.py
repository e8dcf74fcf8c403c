"""systemd's notify protocol over the standard library: READY=1, WATCHDOG=1, STATUS=, STOPPING=1.

The protocol (man sd_notify(3), sd_watchdog_enabled(3)): newline-separated `KEY=VALUE`
lines in one datagram on an `AF_UNIX` `SOCK_DGRAM` socket whose address is in
`$NOTIFY_SOCKET`: a file system path, or an abstract socket name written with a leading
`@` (sent as a leading NUL byte). With `WatchdogSec=` in the unit, systemd sets
`$WATCHDOG_USEC` (and `$WATCHDOG_PID`, the process meant to ping); a service should send
`WATCHDOG=1` at about half that interval. Without `$NOTIFY_SOCKET` (not started by
systemd: a laptop, the tests without a socket) every call does nothing.

Sending never raises: a lost notification must not take the daemon down. The first
failure is logged as a warning, later ones only at debug level until one succeeds.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping

log = logging.getLogger(__name__)

MAX_STATUS_CHARS = 200  # one readable line in `systemctl status`; bounded datagram


class Notifier:
    """Sends notifications to the service manager at `address` (None: do nothing)."""

    def __init__(self, address: str | None, watchdog_s: float | None = None) -> None:
        self.address = address or None
        self.watchdog_s = watchdog_s
        self._lock = threading.Lock()
        self._failing = False
        self._socket: socket.socket | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """The notifier systemd asked for through `$NOTIFY_SOCKET` and `$WATCHDOG_USEC`."""
        environ = os.environ if environ is None else environ
        return cls(environ.get("NOTIFY_SOCKET"), watchdog_interval(environ))

    @property
    def enabled(self) -> bool:
        """True when there is a socket to notify."""
        return self.address is not None

    def ready(self, status: str) -> bool:
        """Startup finished: the process serves."""
        return self.send(READY="1", STATUS=status)

    def watchdog(self) -> bool:
        """All is well: reset systemd's watchdog timer."""
        return self.send(WATCHDOG="1")

    def status(self, status: str) -> bool:
        """A one-line health summary for `systemctl status`."""
        return self.send(STATUS=status)

    def stopping(self, status: str = "stopping") -> bool:
        """Shutdown has begun."""
        return self.send(STOPPING="1", STATUS=status)

    def send(self, **fields: str) -> bool:
        """Send `fields` as one datagram; True when it went out (False when disabled)."""
        if self.address is None:
            return False
        lines = [f"{key}={one_line(value) if key == 'STATUS' else value}"
                 for key, value in fields.items()]
        data = "\n".join(lines).encode("utf-8", "replace")
        target = self.address
        if target.startswith("@"):  # abstract namespace: a leading NUL, no file
            target = "\0" + target[1:]
        with self._lock:
            try:
                if self._socket is None:
                    self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._socket.setblocking(False)  # never stall a caller on the manager
                self._socket.sendto(data, target)
            except OSError as exc:
                if not self._failing:
                    log.warning("sd_notify to %s failed: %s", self.address, exc)
                else:
                    log.debug("sd_notify to %s failed: %s", self.address, exc)
                self._failing = True
                return False
            if self._failing:
                log.info("sd_notify to %s works again", self.address)
                self._failing = False
        return True

    def close(self) -> None:
        """Close the socket (a later `send` opens a new one)."""
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None


def watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """systemd's watchdog timeout in seconds for this process, or None when there is none.

    As sd_watchdog_enabled(3): `$WATCHDOG_USEC` is a positive integer, and when
    `$WATCHDOG_PID` is set it must be this process (else the watchdog is another's).
    """
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID")
    if not usec.isdigit() or int(usec) <= 0:
        return None
    if pid is not None and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000


def one_line(text: str) -> str:
    """`text` as one printable line of at most `MAX_STATUS_CHARS` characters."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    if len(flat) > MAX_STATUS_CHARS:
        flat = flat[: MAX_STATUS_CHARS - 3] + "..."
    return flat
