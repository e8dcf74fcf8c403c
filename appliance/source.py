"""The frame-source seam: `Frame` (grayscale pixels, when, what the sensor used),
`FrameSource` (anything that yields frames: camera.py's picamera2, replay.py's images) and
`ExposureControl` (a source whose exposure glare steering can move).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

MAX_WIDTH, MAX_HEIGHT = 4608, 2592  # the largest sensor we support (Camera Module 3)


@dataclass(frozen=True, slots=True)
class Exposure:
    """What the sensor used for one frame, from picamera2's per-request metadata
    (`CompletedRequest.get_metadata()`, as picamera2's examples/metadata_with_image.py reads
    it): ExposureTime (µs), AnalogueGain, LensPosition (dioptres, on autofocus modules),
    FocusFoM (libcamera's focus figure of merit: higher is sharper) and Lux. A value that
    is missing, not a number or out of range is None."""

    exposure_us: int | None = None
    analogue_gain: float | None = None
    lens_position: float | None = None
    focus_fom: int | None = None
    lux: float | None = None

    @classmethod
    def from_metadata(cls, metadata: object) -> Exposure | None:
        """From a metadata dict; None when it is not one or holds none of the five."""
        if not isinstance(metadata, dict):
            return None
        found = cls(
            exposure_us=_bounded_int(metadata.get("ExposureTime"), 10_000_000),
            analogue_gain=_bounded_float(metadata.get("AnalogueGain"), 1_000.0),
            lens_position=_bounded_float(metadata.get("LensPosition"), 1_000.0),
            focus_fom=_bounded_int(metadata.get("FocusFoM"), 10**9),
            lux=_bounded_float(metadata.get("Lux"), 10**6),
        )
        return None if found == cls() else found


def _bounded_float(value: object, limit: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0 <= value <= limit else None  # NaN fails both


def _bounded_int(value: object, limit: int) -> int | None:
    number = _bounded_float(value, limit)
    return None if number is None else round(number)


@dataclass(frozen=True, slots=True)
class Frame:
    """One grayscale frame.

    `pixels` is 2-D (height, width) uint8 and may be a strided view into a camera buffer
    (no copy); `timestamp` is `time.monotonic()` seconds at capture; `sequence` counts up;
    `exposure` is what the camera used (None for replayed frames).
    """

    pixels: npt.NDArray[np.uint8]
    timestamp: float
    sequence: int
    exposure: Exposure | None = None


class FrameSource(Protocol):
    """Anything that yields frames."""

    def read(self) -> Frame | None:
        """The next frame (blocking for at most about one frame interval); None at end of stream."""
        ...

    def close(self) -> None:
        """Release the device or files."""
        ...


@runtime_checkable
class ExposureControl(Protocol):
    """A frame source whose exposure can be steered (glare: appliance/exposure.py)."""

    def set_ev(self, ev: float) -> None:
        """Ask for exposure compensation `ev` (stops, 0 = the AGC's own choice); it applies
        some frames later, as far as the camera can; never raises for a missing control."""
        ...
