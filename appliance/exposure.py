"""Exposure steering: the decoder's per-frame glare advice turned into camera EV requests.

`Decoder.decode` returns `DecodeResult.advice`: -1.0 (one stop darker) on a frame where
glare saturates a followed, unread code region, 0.0 otherwise. `ExposureSteer` turns that
stream into a few EV requests for the camera (`source.ExposureControl.set_ev`):

- a step darker (the advice, at most `step` stops) at most once per `interval_s`, because
  a control set with picamera2's `set_controls` only reaches the sensor a few frames later
  (it rides on the next request queued to libcamera, picamera2/request.py
  `CompletedRequest.release`, and the sensor applies exposure with a delay of its own:
  raspberrypi/picamera2 issues #340 and #1333) and the AGC then converges over more frames;
- never more than `depth` stops below the configured base (`camera.ev`);
- held while glare is advised, and while a code is still in view once steered;
- back to the base in one request after `hold_s` seconds without either.

Pure logic: the time comes with each observation (the daemon passes the frame's capture
timestamp, so a replay with an injected clock steers exactly as a camera would) and nothing
here touches a camera.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.config import CameraConfig


@dataclass(frozen=True, slots=True)
class SteerSettings:
    """How far and how fast glare may darken the picture (`[camera]` glare_ev_* keys)."""

    base_ev: float  # camera.ev: where the camera starts and returns to
    step: float = 1.0  # most stops per step; 0 turns steering off
    depth: float = 2.0  # most stops below base_ev; 0 turns steering off
    interval_s: float = 1.0  # at least this long between two steps darker
    hold_s: float = 2.0  # without advice (and, once steered, without a code) this long: back

    @classmethod
    def from_config(cls, cfg: CameraConfig) -> SteerSettings:
        """The settings `cfg` names."""
        return cls(cfg.ev, cfg.glare_ev_step, cfg.glare_ev_depth, cfg.glare_ev_interval_s,
                   cfg.glare_ev_hold_s)

    @property
    def enabled(self) -> bool:
        """Whether glare may change the exposure at all."""
        return self.step > 0 and self.depth > 0


class ExposureSteer:
    """Per-frame advice in, occasional EV requests out (see the module docstring)."""

    def __init__(self, settings: SteerSettings) -> None:
        self._settings = settings
        self._ev = settings.base_ev
        self._stepped_at: float | None = None  # the last step darker
        self._seen_at: float | None = None  # the last advice (or code in view, once steered)

    @property
    def ev(self) -> float:
        """The EV last requested (the base until a step)."""
        return self._ev

    def reset(self) -> None:
        """A new camera started at the base EV: forget every step."""
        self._ev = self._settings.base_ev
        self._stepped_at = self._seen_at = None

    def observe(self, advice: float, now: float, code_in_view: bool = False) -> float | None:
        """One frame's advice (negative: darker) at `now` (monotonic seconds, e.g. the
        frame's timestamp); the EV to request now, or None (no change)."""
        cfg = self._settings
        if not cfg.enabled:
            return None
        steered = self._ev != cfg.base_ev
        if advice < 0 or (steered and code_in_view):
            self._seen_at = now
        if advice < 0:
            return self._darker(now, max(advice, -cfg.step))
        if steered and self._seen_at is not None and now - self._seen_at >= cfg.hold_s:
            self.reset()
            return self._ev
        return None

    def _darker(self, now: float, step: float) -> float | None:
        """A step darker when the last one is old enough and the floor not reached."""
        cfg = self._settings
        if self._stepped_at is not None and now - self._stepped_at < cfg.interval_s:
            return None
        target = max(self._ev + step, cfg.base_ev - cfg.depth)
        if target >= self._ev:
            return None  # at the floor: hold
        self._ev, self._stepped_at = target, now
        return target
