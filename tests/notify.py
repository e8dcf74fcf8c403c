"""Test helper: the service manager's end of sd_notify, a real AF_UNIX datagram socket."""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path


class NotifySocket:
    """Receives sd_notify datagrams at a path, or at an abstract name (`abstract=True`).

    `address` is what `$NOTIFY_SOCKET` must hold; `messages` are the datagrams received so
    far, each as a dict of its `KEY=VALUE` lines.
    """

    def __init__(self, directory: Path, *, abstract: bool = False) -> None:
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"leat-scanner-test/{uuid.uuid4().hex}"
            self._socket.bind("\0" + name)
            self.address = "@" + name
        else:
            path = directory / "notify.sock"
            self._socket.bind(str(path))
            self.address = str(path)
        self.messages: list[dict[str, str]] = []

    def __enter__(self) -> NotifySocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def environment(self, watchdog_s: float | None = None) -> dict[str, str]:
        """The variables systemd would set for a `Type=notify` service with `WatchdogSec=`."""
        env = {"NOTIFY_SOCKET": self.address}
        if watchdog_s is not None:
            env["WATCHDOG_USEC"] = str(round(watchdog_s * 1_000_000))
        return env

    def wait_for(
        self, predicate: Callable[[list[dict[str, str]]], bool], timeout: float = 10.0
    ) -> list[dict[str, str]]:
        """Receive until `predicate(messages)` holds; AssertionError after `timeout` s."""
        deadline = time.monotonic() + timeout
        while not predicate(self.messages):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"notify condition not met in {timeout} s: {self.messages}")
            self._socket.settimeout(remaining)
            try:
                data = self._socket.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.messages.append(fields)
        return list(self.messages)

    def count(self, key: str) -> int:
        """How many datagrams carried `key`."""
        return sum(key in message for message in self.messages)

    def close(self) -> None:
        """Close (and remove a path socket)."""
        self._socket.close()
        if not self.address.startswith("@"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.address)
