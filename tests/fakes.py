"""Small test doubles shared by several test modules (not tests themselves)."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

SHOP = "4f1c2a9e-5b7d-4e3a-9c1f-2d8e6a0b7c35"  # the sandbox seed's shop


def unreachable_url() -> str:
    """An http URL on a loopback port nobody listens on: Leat unreachable (refused)."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{closed.getsockname()[1]}"


class Clock:
    """Wall-clock seconds that only move when a test says so."""

    def __init__(self) -> None:
        self.now = 1_790_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SandboxClock:
    """The Leat sandbox's clock, settable: locks, expiries and transaction times without
    sleeping."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def prepared_stores(state_dir: Path) -> tuple[Path, Path]:
    """The outbox and command ledger of a device in `state_dir`, prepared as the daemon
    prepares them before its threads start."""
    from appliance.outbox import Outbox
    from appliance.pos.ledger import Ledger

    outbox, ledger = state_dir / "outbox.sqlite3", state_dir / "commands.sqlite3"
    Outbox.prepare(outbox)
    Ledger.prepare(ledger)
    return outbox, ledger


class QuietBus:
    """A daemon bus (`appliance.daemon.BusLike`) that keeps every event; always connected."""

    def __init__(self) -> None:
        self.events: list[Mapping[str, Any]] = []

    def start(self) -> None: ...

    def publish_event(self, name: str, payload: Mapping[str, Any],
                      expiry_s: float | None = None) -> None:
        self.events.append(payload)

    def set_state(self, payload: Mapping[str, Any]) -> None: ...

    def wait_connected(self, timeout: float) -> bool:
        return True

    def supervise(self) -> bool:
        return False

    def stop(self, timeout: float = 5.0) -> None: ...
