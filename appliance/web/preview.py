"""The preview tap: the camera thread's frames for the page, only while someone looks.

The camera thread checks `PreviewTap.wanted` (a plain attribute: one load per frame) and
calls `offer` only when it is true: while a viewer polled within `LINGER_S`, or while a
snapshot waits for a frame. `offer` keeps a reference to the newest frame and its decode
result (no copy, no encoding); JPEG encoding, outlines and hints are done by the page's
own threads, at most `PREVIEW_FPS` times a second whatever the number of viewers.
"""

from __future__ import annotations

import io
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw

from appliance.decode import DecodeResult, Scan
from appliance.feedback import Signal
from appliance.privacy import mask
from appliance.source import Frame

LINGER_S = 2.0  # a viewer that has not polled for this long is gone
HOLD_S = 1.5  # a read (or refusal) stays shown this long: codes flash by in a frame or two
RECENT = 10  # handled scans remembered for the page
PREVIEW_WIDTH = 640  # wider frames are scaled down for the page
JPEG_QUALITY = 70
READ_COLOUR = (0, 200, 80)


@dataclass(frozen=True, slots=True)
class Seen:
    """A code the preview saw: masked value (or refusal reason), format, when (monotonic)."""

    what: str
    format: str
    at: float


class TooManyViewers(Exception):
    """More viewers than `web.max_viewers` are polling the preview."""


class PreviewTap:
    """Frames offered by the camera thread while `wanted`; thread-safe."""

    def __init__(self, max_viewers: int = 2, clock: Callable[[], float] = time.monotonic) -> None:
        self.wanted = False  # read by the camera thread on every frame
        self._max_viewers = max_viewers
        self._clock = clock
        self._cond = threading.Condition()
        self._latest: tuple[Frame, DecodeResult] | None = None
        self._offers = 0
        self._viewers: dict[str, float] = {}  # viewer (session) -> last poll, monotonic
        self._waiting = 0  # snapshots waiting for a frame
        self._read: Seen | None = None
        self._refused: Seen | None = None
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT)

    # ------------------------------------------------------------- the daemon's threads

    def offer(self, frame: Frame, result: DecodeResult) -> None:
        """The camera thread's newest frame and what was decoded in it."""
        with self._cond:
            self._latest = (frame, result)
            self._offers += 1
            now = self._clock()
            if result.scans:
                scan = result.scans[0]
                self._read = Seen(mask(scan.text), scan.format, now)
            if result.rejected:
                refused = result.rejected[0]
                self._refused = Seen(refused.reason, refused.format, now)
            self._viewers = {v: at for v, at in self._viewers.items() if now - at <= LINGER_S}
            self._update()
            self._cond.notify_all()

    def handled(self, scan: Scan, outcome: Signal) -> None:
        """The worker handled `scan` (once per scan, not per frame): kept masked."""
        with self._cond:
            self._recent.appendleft({"at": time.time(), "value": mask(scan.text),
                                     "format": scan.format, "outcome": outcome.value})

    # ------------------------------------------------------------------ the page's side

    def watch(self, viewer: str) -> None:
        """`viewer` polls the preview now; TooManyViewers past `max_viewers`."""
        with self._cond:
            now = self._clock()
            self._viewers = {v: at for v, at in self._viewers.items() if now - at <= LINGER_S}
            if viewer not in self._viewers and len(self._viewers) >= self._max_viewers:
                raise TooManyViewers(f"{len(self._viewers)} viewers already watch the preview")
            self._viewers[viewer] = now
            self._update()

    def latest(self) -> tuple[Frame, DecodeResult] | None:
        """The newest frame offered and its result, or None before the first."""
        with self._cond:
            return self._latest

    def fresh_frame(self, timeout: float) -> Frame | None:
        """A frame read after this call (asking the camera thread for one); None on timeout."""
        with self._cond:
            since = self._offers
            self._waiting += 1
            self._update()
            try:
                if not self._cond.wait_for(lambda: self._offers > since, timeout):
                    return None
                assert self._latest is not None
                return self._latest[0]
            finally:
                self._waiting -= 1
                self._update()

    def seen(self) -> dict[str, Any]:
        """The aim state: "read" / "refused" / "none", with the masked value or the reason."""
        with self._cond:
            now = self._clock()
            read = self._read if self._read and now - self._read.at <= HOLD_S else None
            refused = (self._refused if self._refused and now - self._refused.at <= HOLD_S
                       else None)
            state = "none"
            if read is not None and (refused is None or read.at >= refused.at):
                state = "read"
            elif refused is not None:
                state = "refused"
            return {
                "state": state,
                "read": None if read is None else {"value": read.what, "format": read.format},
                "refused": (None if refused is None
                            else {"reason": refused.what, "format": refused.format}),
                "recent": list(self._recent),
            }

    def _update(self) -> None:
        self.wanted = bool(self._viewers) or self._waiting > 0
        if not self.wanted:
            self._latest = None  # a frame can show a card: not kept once nobody looks


def render_jpeg(frame: Frame, result: DecodeResult) -> bytes:
    """`frame` as a JPEG (at most `PREVIEW_WIDTH` wide) with each read code outlined."""
    image = Image.fromarray(frame.pixels, "L").convert("RGB")
    draw = ImageDraw.Draw(image)
    width = max(2, image.width // 200)
    for scan in result.scans:
        points = [(float(x), float(y)) for x, y in scan.position]
        draw.line([*points, points[0]], fill=READ_COLOUR, width=width)
    if image.width > PREVIEW_WIDTH:
        scale = PREVIEW_WIDTH / image.width
        image = image.resize((PREVIEW_WIDTH, max(1, round(image.height * scale))),
                             Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()
