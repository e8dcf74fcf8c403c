"""Is this frame the same scene as the last one read? A cheap thumbnail difference.

The thumbnail is the mean of 16 samples (every 4th pixel of every 4th row) per 16x16 tile,
so sensor noise shrinks 4x before frames are compared; computing it reads 1/16 of the
pixels (about 20 us for 640x480 here). A frame counts as changed when any tile moved by
more than `threshold` grey levels, or by more than five standard deviations of its mean's
sensor noise (measured by the caller on the scene: dim, high-ISO scenes need more), so a
card entering the view changes many tiles by far more than either. A change of the light
alone (a lamp's flicker, the camera's exposure) scales every tile alike: when a sample of
tiles got brighter or darker by more than 1% in all, the reference is scaled by the median
of their ratios first, and each tile may miss that by the light's change itself, up to 10%
(pixels clipped at 0 or 255 do not scale), so only what changed against the rest of the
scene counts.
`changed_box` also says where: the bounding box of the changed tiles, so a partial change
is read only there.
"""

from __future__ import annotations

import math
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

TILE: Final = 16  # pixels per thumbnail tile side
_STEP: Final = 4  # sample every 4th pixel and row inside a tile
_NOISE_SIGMAS: Final = 5.0  # a tile must move by this many noise standard deviations
_RELIGHT: Final = 0.01  # the sampled tiles' sum changed by more: the light may have
_SLACK_MAX: Final = 0.1  # a tile may miss the scaled reference by at most 10% of it: a
# bigger change of the light (a lamp switched on) must not hide a card that came with it
_GAIN_SAMPLE: Final = 7  # every 7th tile estimates the light's change (a card covers few)
_GAIN_MIN_SUM: Final = 16 * 16  # tiles darker than 16 grey levels say little of the gain

Thumb = npt.NDArray[np.int16]
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in frame pixels, x1/y1 exclusive


def thumbnail(pixels: npt.NDArray[np.uint8]) -> Thumb:
    """Per-tile sums of 16 samples (not divided: comparisons scale the threshold instead).

    Frames smaller than a tile give an empty thumbnail, which never compares as still.
    """
    h, w = pixels.shape
    rows, cols = h // TILE, w // TILE
    if rows == 0 or cols == 0:
        return np.zeros((0, 0), np.int16)
    height, width = rows * TILE, cols * TILE
    lines = pixels[0:height:TILE, :width].astype(np.int16)  # <= 16 * 255: fits int16
    for dy in range(_STEP, TILE, _STEP):  # strided adds: far cheaper than a 4-D sum
        lines += pixels[dy:height:TILE, :width]
    out: Thumb = lines[:, 0:width:TILE].copy()
    for dx in range(_STEP, TILE, _STEP):
        out += lines[:, dx:width:TILE]
    return out


class Change(NamedTuple):
    """What changed since the reference: the changed tiles' box (frame pixels) and count."""

    box: Box  # (0, 0, 0, 0): the whole frame (no comparable reference)
    tiles: int  # 0 with no comparable reference


def changed_box(thumb: Thumb, reference: Thumb | None, threshold: float, noise: float = 0.0,
                margin: int = 1) -> Box | None:
    """`change(...)`'s box (None: the same scene)."""
    found = change(thumb, reference, threshold, noise, margin)
    return None if found is None else found.box


def change(thumb: Thumb, reference: Thumb | None, threshold: float, noise: float = 0.0,
           margin: int = 1) -> Change | None:
    """Where `thumb` differs from `reference` beyond `threshold` grey levels and the noise:
    the changed tiles' bounding box grown by `margin` tiles, and how many tiles changed
    (None: the same scene).

    `noise` is the scene's sensor noise (standard deviation of one pixel, grey levels),
    measured by the caller on a frame of the scene: a tile mean of 16 samples carries a
    quarter of it, a difference of two tile means sqrt(2) times that, and a tile must move
    by five of those. (Not estimated from the difference itself: a whole new scene would
    pass for noise.) The whole frame when there is no comparable reference; the box of an
    empty thumbnail is (0, 0, 0, 0), which callers read as "the whole frame" too.
    """
    if reference is None or thumb.shape != reference.shape or thumb.size == 0:
        return Change((0, 0, 0, 0), 0)
    samples = (TILE // _STEP) ** 2
    limit = max(threshold, _NOISE_SIGMAS * noise * math.sqrt(2.0 / samples)) * samples
    changed = _changed(thumb, reference, limit)
    if changed.size:  # the light, or the scene?
        relit, gain = _relit(reference, thumb)
        if relit is not reference:
            slack = min(abs(gain - 1.0), _SLACK_MAX)  # clipped pixels did not scale
            changed = _changed(thumb, relit, limit + slack * relit)
    if not changed.size:
        return None
    width = thumb.shape[1]
    cols = changed % width
    r0 = max(0, int(changed[0]) // width - margin)
    r1 = min(thumb.shape[0], int(changed[-1]) // width + 1 + margin)
    c0, c1 = max(0, int(cols.min()) - margin), min(width, int(cols.max()) + 1 + margin)
    return Change((c0 * TILE, r0 * TILE, c1 * TILE, r1 * TILE), int(changed.size))


def _changed(thumb: Thumb, reference: Thumb, limit: float | npt.NDArray[np.float32]
             ) -> npt.NDArray[np.intp]:
    """The flat indices of the tiles that moved by more than `limit` (per tile, or one for
    all), in order."""
    difference = thumb - reference
    np.abs(difference, out=difference)
    return np.flatnonzero(difference > limit)  # a third cheaper than np.nonzero's two arrays


def _relit(reference: Thumb, thumb: Thumb) -> tuple[Thumb, float]:
    """`reference` under `thumb`'s light and that light's gain: scaled by the median ratio
    of a sample of tiles when their sum changed by more than `_RELIGHT` (else `reference`
    itself and 1.0: cheap)."""
    before, after = reference.ravel()[::_GAIN_SAMPLE], thumb.ravel()[::_GAIN_SAMPLE]
    total = int(before.sum())  # numpy sums int16 as int64
    if total <= 0 or abs(int(after.sum()) / total - 1.0) <= _RELIGHT:
        return reference, 1.0
    lit = before >= _GAIN_MIN_SUM
    ratios = after[lit] / before[lit].astype(np.float32)
    if ratios.size < 8:
        return reference, 1.0
    middle = ratios.size // 2
    gain = min(max(float(np.partition(ratios, middle)[middle]), 0.25), 4.0)
    scaled = reference * np.float32(gain)
    scaled += 0.5  # rounded: at most 4 x 16 x 255, well inside int16
    return scaled.astype(np.int16), gain
