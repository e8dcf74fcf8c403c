"""Aiming hints computed from one grayscale frame: glare, a code too small, out of focus.

Glare is what the camera clips: with automatic exposure (and camera.ev slightly negative)
white paper stays below saturation, so saturated pixels are a reflection or a lamp.

Pure functions on a numpy frame (no camera, no state), so they are tested on generated
frames. They look at the code's region when one was read, else at the whole frame. The
thresholds were set on the generated frames of `appliance.samples` (tests/test_web_hints.py)
and err on the quiet side: a hint is a suggestion for a technician, never a verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Corners = tuple[tuple[int, int], ...]

SATURATED = 250  # a pixel this bright has lost its detail (a reflection)
GLARE_SHARE = 0.04  # this share of the code's region saturated: glare on the code
GLARE_SHARE_FRAME = 0.01  # without a code read, this share of the whole frame
SMALL_SHARE = 0.15  # a code whose side is under this share of the frame's height: too far
SHARPNESS_MIN = 0.12  # edge strength over contrast below this: out of focus
DARK_MEAN = 35  # a region this dark on average: too dark
MIN_CONTRAST = 24  # a region flatter than this has nothing to judge focus on


@dataclass(frozen=True, slots=True)
class Hint:
    """One suggestion: a stable `code` for tests and scripts, a `text` for people."""

    code: str
    text: str


GLARE = "glare"
TOO_SMALL = "too_small"
OUT_OF_FOCUS = "out_of_focus"
TOO_DARK = "too_dark"


def frame_hints(pixels: npt.NDArray[np.uint8], codes: Sequence[Corners] = ()) -> list[Hint]:
    """What would help the camera read: about the first code's region, or the whole frame."""
    if pixels.ndim != 2 or pixels.size == 0:
        return []
    height = pixels.shape[0]
    region = pixels
    side = None
    if codes:
        region, side = _region(pixels, codes[0])
    hints = []
    if glare_share(region) >= (GLARE_SHARE if codes else GLARE_SHARE_FRAME):
        where = "on the code" if codes else "in view"
        hints.append(Hint(GLARE, f"glare {where}: tilt the camera or move the lamp so its "
                                 "reflection misses the counter"))
    if side is not None and side < SMALL_SHARE * height:
        hints.append(Hint(TOO_SMALL, f"the code is small ({side:.0f} px across): move the "
                                     "camera closer or lower"))
    if float(region.mean()) < DARK_MEAN:
        hints.append(Hint(TOO_DARK, "too dark: more light on the counter, or raise camera.ev"))
    score = sharpness(region)
    if score is not None and score < SHARPNESS_MIN:
        hints.append(Hint(OUT_OF_FOCUS, "looks out of focus: check camera.autofocus / "
                                        "camera.lens_position and the distance"))
    return hints


def glare_share(region: npt.NDArray[np.uint8]) -> float:
    """The share of saturated pixels in `region`."""
    return float(np.count_nonzero(region >= SATURATED)) / max(region.size, 1)


def sharpness(region: npt.NDArray[np.uint8]) -> float | None:
    """Edge strength over contrast (about 1 for crisp edges, under 0.1 when blurred); None
    when the region is too flat or too small to judge. Measured on 2x2 averages, which halves
    sensor noise that would otherwise pass for detail."""
    h, w = (region.shape[0] // 2) * 2, (region.shape[1] // 2) * 2
    if h < 8 or w < 8:
        return None
    full = region[:h, :w].astype(np.float32)
    f = (full[0::2, 0::2] + full[1::2, 0::2] + full[0::2, 1::2] + full[1::2, 1::2]) / 4
    low, high = np.percentile(f, [1, 99])
    if high - low < MIN_CONTRAST:
        return None
    lap = np.abs(4 * f[1:-1, 1:-1] - f[:-2, 1:-1] - f[2:, 1:-1] - f[1:-1, :-2] - f[1:-1, 2:])
    return float(np.percentile(lap, 99.5) / (high - low))


def _region(pixels: npt.NDArray[np.uint8],
            corners: Corners) -> tuple[npt.NDArray[np.uint8], float]:
    """The code's bounding box (clipped to the frame) and its mean side in pixels."""
    xs = [x for x, _ in corners]
    ys = [y for _, y in corners]
    h, w = pixels.shape
    x0, x1 = max(min(xs), 0), min(max(xs) + 1, w)
    y0, y1 = max(min(ys), 0), min(max(ys) + 1, h)
    sides = [float(np.hypot(corners[i][0] - corners[i - 1][0], corners[i][1] - corners[i - 1][1]))
             for i in range(len(corners))]
    side = sum(sides) / max(len(sides), 1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return pixels, side
    return pixels[y0:y1, x0:x1], side
