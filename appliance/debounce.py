"""Which decoded values are fresh scans: one report per presentation of a code.

Called once per decoded frame, with or without codes, with the frame's monotonic timestamp.

- A value not seen before (or forgotten) is reported at once; several new values in one
  frame are all reported, in input order, each once.
- While a value stays in view it is not reported again. Missed detections shorter than
  `leave_after_s` (glare, motion blur) do not count as leaving.
- A value has left view once it has gone unseen for `leave_after_s`; its departure time
  is its last sighting + `leave_after_s`. It is reported again at the first sighting at
  or after departure + `cooldown_s`; that includes a code shown again during the
  cooldown and still held up when the cooldown ends (the customer gets a beep without
  having to take the card away a second time).
- Memory is bounded: a value unseen for `leave_after_s + cooldown_s` is forgotten (it would
  be reported anyway), and at most `max_entries` values are remembered (the least recently
  seen is evicted first).
- Timestamps that go backwards are treated as "no time passed" (the clock is clamped).

Not thread-safe: the camera thread owns its debouncer.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

from appliance.config import DebounceConfig

log = logging.getLogger(__name__)

MAX_ENTRIES: Final = 256


@dataclass(slots=True)
class _Seen:
    """What is known about one value."""

    last_seen: float
    left_at: float | None = None  # departure time once it left view after being reported


class Debouncer:
    """Turns per-frame detections into one report per presentation of a code."""

    def __init__(self, cfg: DebounceConfig, max_entries: int = MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._leave_after = cfg.leave_after_s
        self._cooldown = cfg.cooldown_s
        self._max_entries = max_entries
        self._seen: OrderedDict[str, _Seen] = OrderedDict()  # least recently seen first
        self._now: float | None = None

    def __len__(self) -> int:
        """How many values are remembered."""
        return len(self._seen)

    def observe(self, values: Collection[str], timestamp: float) -> list[str]:
        """Record one frame's values; return those to report now, in input order."""
        if self._now is not None and timestamp < self._now:
            log.debug("frame timestamp went back by %.3fs; clamped", self._now - timestamp)
            timestamp = self._now
        self._now = timestamp
        self._forget(timestamp)
        fresh: list[str] = []
        for value in dict.fromkeys(values):  # drops duplicates, keeps order
            seen = self._seen.get(value)
            if seen is None:
                self._seen[value] = _Seen(timestamp)
                fresh.append(value)
                continue
            if seen.left_at is None and timestamp - seen.last_seen > self._leave_after:
                seen.left_at = seen.last_seen + self._leave_after
            if seen.left_at is not None and timestamp >= seen.left_at + self._cooldown:
                seen.left_at = None
                fresh.append(value)
            seen.last_seen = timestamp
            self._seen.move_to_end(value)
        self._evict()
        return fresh

    def _forget(self, now: float) -> None:
        """Drop values unseen for `leave_after_s + cooldown_s` (oldest first, so stop early)."""
        horizon = self._leave_after + self._cooldown
        while self._seen:
            value, seen = next(iter(self._seen.items()))
            if now - seen.last_seen < horizon:
                break
            del self._seen[value]

    def _evict(self) -> None:
        """Keep at most `max_entries` values, evicting the least recently seen."""
        while len(self._seen) > self._max_entries:
            self._seen.popitem(last=False)
            log.debug("debounce memory full (%d values); evicted the oldest", self._max_entries)
