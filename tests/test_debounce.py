"""The debouncer, driven by explicit frame timestamps (no clock, no sleeps)."""

from __future__ import annotations

import itertools

import pytest

from appliance.config import DebounceConfig
from appliance.debounce import MAX_ENTRIES, Debouncer

LEAVE, COOLDOWN = 0.6, 3.0
FRAME = 1 / 15  # 15 fps


@pytest.fixture
def debouncer() -> Debouncer:
    return Debouncer(DebounceConfig(leave_after_s=LEAVE, cooldown_s=COOLDOWN))


def _frames(start: float, end: float) -> list[float]:
    """Timestamps of the frames between `start` (included) and `end` (excluded)."""
    count = round((end - start) / FRAME)
    return [start + i * FRAME for i in range(count)]


def _play(debouncer: Debouncer, frames: list[tuple[float, list[str]]]) -> list[tuple[float, str]]:
    return [(t, v) for t, values in frames for v in debouncer.observe(values, t)]


def test_debouncer_reports_value_in_view_for_minutes_once(debouncer: Debouncer) -> None:
    reports = _play(debouncer, [(t, ["LC-7F3K9Q2M"]) for t in _frames(100.0, 400.0)])
    assert reports == [(100.0, "LC-7F3K9Q2M")]


def test_debouncer_ignores_flicker_shorter_than_leave(debouncer: Debouncer) -> None:
    frames = []
    for i, t in enumerate(_frames(0.0, 60.0)):
        missed = i % 14 >= 8  # seen 8 frames, missed 6: sightings 0.47 s apart (< 0.6 s)
        frames.append((t, [] if missed else ["GC-8H2J4K6L8M"]))
    assert _play(debouncer, frames) == [(0.0, "GC-8H2J4K6L8M")]


def test_debouncer_suppresses_return_before_cooldown(debouncer: Debouncer) -> None:
    assert debouncer.observe(["SPRING-2X7Q"], 0.0) == ["SPRING-2X7Q"]
    assert debouncer.observe([], 1.0) == []  # left at 0.0 + 0.6
    assert debouncer.observe(["SPRING-2X7Q"], 2.0) == []  # back within the cooldown
    assert debouncer.observe(["SPRING-2X7Q"], 2.5) == []
    assert debouncer.observe([], 3.5) == []


def test_debouncer_reports_again_after_cooldown(debouncer: Debouncer) -> None:
    assert debouncer.observe(["SPRING-2X7Q"], 0.0) == ["SPRING-2X7Q"]
    assert debouncer.observe([], 1.0) == []
    almost = LEAVE + COOLDOWN - 0.01
    assert debouncer.observe(["SPRING-2X7Q"], almost) == []
    assert debouncer.observe([], almost + 1.0) == []
    # Left at 0.6, so the cooldown ended at 3.6: the next sighting is a fresh scan.
    assert debouncer.observe(["SPRING-2X7Q"], almost + 1.1) == ["SPRING-2X7Q"]
    assert debouncer.observe(["SPRING-2X7Q"], almost + 1.2) == []


def test_debouncer_reports_held_code_when_cooldown_ends(debouncer: Debouncer) -> None:
    frames = [(0.0, ["ABC-123"])] + [(t, ["ABC-123"]) for t in _frames(1.0, 10.0)]
    reports = _play(debouncer, frames)
    assert [v for _, v in reports] == ["ABC-123", "ABC-123"]
    assert reports[1][0] == pytest.approx(LEAVE + COOLDOWN, abs=FRAME)


def test_debouncer_reports_different_values_at_once(debouncer: Debouncer) -> None:
    assert debouncer.observe(["A1"], 0.0) == ["A1"]
    assert debouncer.observe(["A1", "B2"], 0.1) == ["B2"]
    assert debouncer.observe(["C3", "D4", "C3", "A1"], 0.2) == ["C3", "D4"]
    assert debouncer.observe(["D4", "C3", "B2", "A1"], 0.3) == []


def test_debouncer_alternating_values_each_reported_once(debouncer: Debouncer) -> None:
    frames = [(t, ["LC-7F3K9Q2M"] if i % 2 else ["GC-8H2J4K6L8M"])
              for i, t in enumerate(_frames(0.0, 30.0))]
    assert [v for _, v in _play(debouncer, frames)] == ["GC-8H2J4K6L8M", "LC-7F3K9Q2M"]


def test_debouncer_alternating_slowly_respects_cooldown(debouncer: Debouncer) -> None:
    frames = []
    for t in _frames(0.0, 20.0):  # each value shown 2 s, then the other
        frames.append((t, ["X-ONE"] if int(t // 2) % 2 == 0 else ["X-TWO"]))
    reports = _play(debouncer, frames)
    # each is back 2 s after it left (< 3 s cooldown), held 2 s: reported when cooldown ends
    times = {v: [round(t, 1) for t, w in reports if w == v] for v in ("X-ONE", "X-TWO")}
    assert times["X-ONE"][0] == 0.0
    assert times["X-TWO"][0] == pytest.approx(2.0, abs=FRAME)
    for seen in times.values():
        assert len(seen) >= 4
        gaps = [b - a for a, b in itertools.pairwise(seen)]
        assert all(gap >= LEAVE + COOLDOWN for gap in gaps)


def test_debouncer_forgets_values_after_cooldown(debouncer: Debouncer) -> None:
    for i in range(100):
        debouncer.observe([f"V{i}"], float(i) * 0.01)
    assert len(debouncer) == 100
    debouncer.observe([], 1.0 + LEAVE + COOLDOWN)
    assert len(debouncer) == 0


def test_debouncer_memory_is_capped(debouncer: Debouncer) -> None:
    for i in range(MAX_ENTRIES * 4):
        assert debouncer.observe([f"V{i}"], i * 0.001) == [f"V{i}"]
    assert len(debouncer) == MAX_ENTRIES
    # the newest are still remembered, the oldest were evicted (and count as new)
    last = MAX_ENTRIES * 4 * 0.001
    assert debouncer.observe([f"V{MAX_ENTRIES * 4 - 1}"], last) == []
    assert debouncer.observe(["V0"], last) == ["V0"]


def test_debouncer_survives_timestamps_going_backwards(debouncer: Debouncer) -> None:
    assert debouncer.observe(["A1"], 50.0) == ["A1"]
    assert debouncer.observe(["A1"], 10.0) == []  # treated as 50.0
    assert debouncer.observe(["B2"], 5.0) == ["B2"]
    assert debouncer.observe([], 50.0 + LEAVE + COOLDOWN) == []
    assert debouncer.observe(["A1", "B2"], 50.0 + LEAVE + COOLDOWN) == ["A1", "B2"]


def test_debouncer_zero_timings_report_every_frame() -> None:
    debouncer = Debouncer(DebounceConfig(leave_after_s=0.0, cooldown_s=0.0))
    assert [debouncer.observe(["A1"], t) for t in (0.0, 0.1, 0.2)] == [["A1"]] * 3


def test_debouncer_rejects_empty_memory() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        Debouncer(DebounceConfig(), max_entries=0)
