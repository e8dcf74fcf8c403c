"""Small test doubles shared by several test modules (not tests themselves)."""

from __future__ import annotations

SHOP = "4f1c2a9e-5b7d-4e3a-9c1f-2d8e6a0b7c35"  # the sandbox seed's shop


class Clock:
    """Wall-clock seconds that only move when a test says so."""

    def __init__(self) -> None:
        self.now = 1_790_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
