"""The page's parts on their own: the preview tap, saved-frame retention, sessions."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fakes import Clock

from appliance.config import CameraConfig
from appliance.decode import DecodeResult, Rejected, Scan
from appliance.source import Exposure, Frame
from appliance.web import auth, frames
from appliance.web.preview import HOLD_S, LINGER_S, PreviewTap, TooManyViewers
from appliance.web.server import WebPage, WebSettings

PIXELS = np.zeros((36, 64), np.uint8)
CARD = Scan("LC-7F3K9Q2MWX", "QRCode", ((1, 1), (9, 1), (9, 9), (1, 9)), 0.0)


def test_the_tap_is_wanted_only_while_a_viewer_polls(clock: Clock) -> None:
    tap = PreviewTap(max_viewers=1, clock=clock)
    assert not tap.wanted
    tap.watch("a")
    assert tap.wanted
    with pytest.raises(TooManyViewers):
        tap.watch("b")
    tap.offer(Frame(PIXELS, 0.0, 1), DecodeResult((CARD,), ()))
    assert tap.seen()["read"] == {"value": "LC******WX", "format": "QRCode"}
    clock.advance(HOLD_S + 0.1)
    assert tap.seen()["state"] == "none"
    tap.offer(Frame(PIXELS, 0.0, 2), DecodeResult((), (Rejected("binary", "QRCode", 0.0),)))
    assert tap.seen()["refused"] == {"reason": "binary", "format": "QRCode"}
    clock.advance(LINGER_S + 0.1)
    tap.offer(Frame(PIXELS, 0.0, 3), DecodeResult((), ()))
    assert not tap.wanted and tap.latest() is None
    tap.watch("b")  # "a" left: room for another


def test_a_snapshot_asks_the_camera_thread_for_a_fresh_frame() -> None:
    tap = PreviewTap()
    got: list[Frame | None] = []
    waiter = threading.Thread(target=lambda: got.append(tap.fresh_frame(5.0)))
    waiter.start()
    deadline = time.monotonic() + 5
    while not tap.wanted:
        assert time.monotonic() < deadline
        threading.Event().wait(0.01)
    frame = Frame(PIXELS, 0.0, 7)
    tap.offer(frame, DecodeResult((), ()))
    waiter.join(5)
    assert got == [frame]
    assert not tap.wanted
    assert tap.fresh_frame(0.05) is None  # nobody offers: a timeout, not a hang


def test_saved_frames_are_private_and_expire(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    saved = frames.save_frame(PIXELS, folder, keep_s=3600)
    assert oct(saved.stat().st_mode & 0o777) == "0o600"
    old = time.time() - 7200
    os.utime(saved, (old, old))
    assert frames.prune(folder, keep_s=3600) == 1
    assert not saved.exists()
    for _ in range(frames.MAX_SAVED + 3):
        frames.save_frame(PIXELS, folder, keep_s=3600)
    assert len(list(folder.glob("frame-*.png"))) == frames.MAX_SAVED


def test_sessions_end_when_idle_and_are_bounded(clock: Clock) -> None:
    guard = auth.Guard(None, clock=clock)
    first = guard.open_session()
    assert guard.session(first.token) is first
    clock.advance(auth.IDLE_S + 1)
    assert guard.session(first.token) is None
    made = [guard.open_session() for _ in range(auth.MAX_SESSIONS + 1)]
    assert guard.session(made[0].token) is None and guard.session(made[-1].token)
    assert not auth.csrf_ok(made[-1], None) and auth.csrf_ok(made[-1], made[-1].csrf)


def test_failed_logins_from_everywhere_are_limited_too(clock: Clock) -> None:
    guard = auth.Guard("secret", clock=clock)
    with pytest.raises(PermissionError):
        guard.open_session()
    for n in range(auth.FAILURES_TOTAL):
        assert guard.login(f"10.0.0.{n}", "guess") is None
    with pytest.raises(auth.TooManyAttempts):
        guard.login("10.0.1.1", "secret")
    clock.advance(auth.WINDOW_S + 1)
    assert guard.login("10.0.1.1", "secret") is not None


class _Quiet:
    """A `Device` with nothing to say."""

    device_id = "parts"
    last_state = None

    def play(self, signal: object) -> None:
        pass


def test_the_aim_panel_shows_the_exposure_the_sensor_used(tmp_path: Path) -> None:
    settings = WebSettings("127.0.0.1", 0, None, None, tmp_path, 60.0, 2, CameraConfig())
    used = Exposure(exposure_us=9980, analogue_gain=2.0, lens_position=5.0, focus_fom=380,
                    lux=312.5)
    shown = []
    for exposure in (used, None):  # None: a replayed frame says nothing
        tap = PreviewTap()
        tap.watch("v")
        tap.offer(Frame(PIXELS, 0.0, 1, exposure), DecodeResult((), ()))
        page = WebPage(settings, _Quiet(), tap).start()
        try:
            shown.append(page.aim()["frame"]["exposure"])
        finally:
            page.close()
    assert shown == [{"exposure_us": 9980, "analogue_gain": 2.0, "lens_position": 5.0,
                      "focus_fom": 380, "lux": 312.5}, None]
