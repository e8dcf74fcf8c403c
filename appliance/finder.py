"""Could this frame hold a QR or Micro QR symbol? A cheap look for finder patterns.

Every QR and Micro QR symbol carries a finder pattern: concentric squares whose cross-section
along any line through their centre runs dark-light-dark-light-dark in the ratio 1:1:3:1:1
(the other way round when the symbol is inverted). This module looks for that ratio on
sparse rows, then confirms each candidate across it, along its column, as zxing-cpp's own
detector does; a frame without one confirmed candidate cannot hold a symbol zxing-cpp would
read, so the decoder skips its matrix passes (docs/decoding.md).

Binarisation is local (the midpoint of the darkest and brightest pixel within about 100
pixels along the row), so gradients, glare beside the symbol and faint print are handled;
noisy frames are smoothed along the column by averaging two neighbouring rows. The
tolerances are generous: blur, perspective and rotation bend the ratio, and a frame let
through costs only the full reader's time, while a symbol refused is a symbol lost.
Linear in the pixels read (a third of the rows), numpy only.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

Gray = npt.NDArray[np.uint8]

ROW_STEP: Final = 4  # rows sampled: a finder's centre band is >= 2 modules of >= 1.6 px
_BLOCK: Final = 32  # columns per block of the local threshold
_CONTRAST: Final = 16  # grey levels: a block window with less spread holds no pattern
_MIN_MODULE: Final = 1.0  # pixels: smaller modules are beyond zxing-cpp as well
_MAX_MODULE: Final = 40.0  # pixels: a symbol filling a 1280x720 frame
_SIDE: Final = (0.3, 2.0)  # a side run, in modules (nominal 1), plus one pixel of slack
_CENTRE: Final = (1.6, 5.0)  # the centre run, in modules (nominal 3)
_MAX_CANDIDATES: Final = 256  # candidates traced across at most (more: "maybe")


def may_hold_finder(pixels: Gray) -> bool:
    """Whether `pixels` (2-D uint8) may hold a QR or Micro QR finder pattern.

    False means no row shows a 1:1:3:1:1 run pattern that its column and both diagonals
    confirm; True is "maybe". Frames too small to analyse are "maybe" (cheap to read).
    """
    h, w = pixels.shape
    if h < 3 * ROW_STEP or w < 3 * _BLOCK:
        return True
    dark, mids = _dark(pixels[1::ROW_STEP, :])
    ys, xs, units, centre_dark = _row_candidates(dark)
    if ys.size == 0:
        return False
    levels = mids[ys // 2, xs // _BLOCK]
    return _confirmed(pixels, ys * ROW_STEP + 1, xs, units, levels, centre_dark)


def _dark(rows: Gray) -> tuple[npt.NDArray[np.bool_], Gray]:
    """The dark pixels of `rows` (cut to whole blocks), and the thresholds per pair of rows
    and block.

    A pixel is dark below the midpoint of the darkest and brightest sample (every 8th pixel
    of its pair of rows) in its block of `_BLOCK` columns and the two neighbouring blocks;
    nothing is dark where that spread is under `_CONTRAST` (threshold 0).
    """
    n, w = rows.shape
    nb = w // _BLOCK
    low = high = rows[::2, :nb * _BLOCK:8]
    while low.shape[1] > nb:  # pairwise halving: cheaper than a reduction on a short axis
        low = np.minimum(low[:, 0::2], low[:, 1::2])
        high = np.maximum(high[:, 0::2], high[:, 1::2])
    low = np.minimum(low, np.minimum(_shift(low, 1), _shift(low, -1)))
    high = np.maximum(high, np.maximum(_shift(high, 1), _shift(high, -1)))
    mid = (low >> 1) + (high >> 1)
    mid[high - low < _CONTRAST] = 0  # uint8: high >= low
    full = np.repeat(np.repeat(mid, 2, axis=0)[:n], _BLOCK, axis=1)
    return rows[:, :nb * _BLOCK] < full, mid


def _shift(values: Gray, by: int) -> Gray:
    """`values` moved `by` columns along the rows, the edge column repeated."""
    out = np.empty_like(values)
    if by > 0:
        out[:, by:], out[:, :by] = values[:, :-by], values[:, :1]
    else:
        out[:, :by], out[:, by:] = values[:, -by:], values[:, -1:]
    return out


def _row_candidates(dark: npt.NDArray[np.bool_]) -> tuple[
        npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.float64],
        npt.NDArray[np.bool_]]:
    """Runs of 1:1:3:1:1 along the rows of `dark`: their row, centre column, module size
    and whether the centre run is dark (False: an inverted symbol)."""
    n, w = dark.shape
    flat = dark.ravel()
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1  # where a run starts (flat index)
    if edges.size < 6:
        empty = np.zeros(0, np.intp)
        return empty, empty, np.zeros(0), np.zeros(0, bool)
    runs = np.diff(edges)  # windows that cross a row's end are dropped below
    total = (edges[5:] - edges[:-5]) / 7.0  # the module size, if this is a finder
    low, high = total * _SIDE[0] - 1.0, total * _SIDE[1] + 1.0
    ok = (total >= _MIN_MODULE) & (total <= _MAX_MODULE)
    ok &= (runs[2:-2] >= total * _CENTRE[0] - 1.0) & (runs[2:-2] <= total * _CENTRE[1] + 1.0)
    for k in (0, 1, 3, 4):
        side = runs[k:runs.size - 4 + k]
        ok &= (side >= low) & (side <= high)
    at = np.flatnonzero(ok)
    at = at[edges[at] // w == (edges[at + 5] - 1) // w]  # all five runs in one row
    middle = (edges[at + 2] + edges[at + 3]) // 2
    return middle // w, middle % w, total[at], flat[middle]


# Pixels probed along a candidate's column, in modules from its centre: the centre must
# have the row's polarity, the ring (about two modules out) the other one and the outer
# ring (about three) the row's again, on both sides; any probe of a group of three will do
# (blur and perspective move the rings). The first group rejects most candidates (stripes).
_FIRST_PROBES: Final = np.array([0.0, 1.6, 2.0, 2.4, -1.6, -2.0, -2.4])
_RING_PROBES: Final = np.array([2.6, 3.0, 3.4, -2.6, -3.0, -3.4])


def _confirmed(pixels: Gray, ys: npt.NDArray[np.intp], xs: npt.NDArray[np.intp],
               units: npt.NDArray[np.float64], levels: Gray,
               centre_dark: npt.NDArray[np.bool_]) -> bool:
    """Whether any row candidate shows the pattern along its column and both diagonals.

    A few pixels of the column first (`_FIRST_PROBES`, `_RING_PROBES`: along the column a
    finder's module is the row's, whatever its rotation); then whole runs along the column
    and the diagonals for what is left.
    """
    same = _probe(pixels, ys, xs, units, levels, centre_dark, _FIRST_PROBES)
    picked = np.flatnonzero(same[:, 0] & ~same[:, 1:4].all(axis=1) & ~same[:, 4:].all(axis=1))
    if picked.size == 0:
        return False
    same = _probe(pixels, ys[picked], xs[picked], units[picked], levels[picked],
                  centre_dark[picked], _RING_PROBES)
    picked = picked[same[:, :3].any(axis=1) & same[:, 3:].any(axis=1)]
    if picked.size == 0:
        return False
    if picked.size > _MAX_CANDIDATES:
        return True  # a frame this busy is read anyway
    ok = _runs_across(pixels, ys[picked], xs[picked], units[picked], levels[picked],
                      centre_dark[picked])
    return bool(ok.all(axis=0).any())


def _probe(pixels: Gray, ys: npt.NDArray[np.intp], xs: npt.NDArray[np.intp],
           units: npt.NDArray[np.float64], levels: Gray, centre_dark: npt.NDArray[np.bool_],
           modules: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """Per candidate and probe: whether the pixel `modules` up or down the column has the
    centre's polarity (rows clipped to the frame)."""
    at = ys[:, None] + np.rint(units[:, None] * modules[None, :]).astype(np.intp)
    np.clip(at, 0, pixels.shape[0] - 1, out=at)
    dark: npt.NDArray[np.bool_] = pixels[at, xs[:, None]] < levels[:, None]
    return dark == centre_dark[:, None]


_DY: Final = np.array([1, 1, 1])[:, None, None]  # the column, then the two diagonals
_DX: Final = np.array([0, 1, -1])[:, None, None]
_FIRST_EDGES: Final = np.array([1, 2, 3])


def _runs_across(pixels: Gray, ys: npt.NDArray[np.intp], xs: npt.NDArray[np.intp],
                 units: npt.NDArray[np.float64], levels: Gray,
                 centre_dark: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Per direction (the column, then the diagonals) and candidate: whether the line
    through the candidate shows 1:1:3:1:1 runs of the right polarity. (Written with few
    numpy calls: candidates are few, and each call costs microseconds.)"""
    h, w = pixels.shape
    reach = int(units.max() * 6) + 3
    offsets = np.arange(-reach, reach + 1)
    row_at = ys[:, None] + _DY * offsets  # (3, n, 2 reach + 1)
    col_at = xs[:, None] + _DX * offsets
    outside = (row_at < 0) | (row_at >= h) | (col_at < 0) | (col_at >= w)
    line = pixels[np.minimum(np.maximum(row_at, 0), h - 1),
                  np.minimum(np.maximum(col_at, 0), w - 1)]
    dark = (line < levels[:, None]) & ~outside
    change = dark[:, :, 1:] != dark[:, :, :-1]  # [j]: between offsets j and j+1
    # edges met going up (nearest first), then going down: (6, n, reach)
    met = np.cumsum(np.concatenate((change[:, :, reach - 1::-1], change[:, :, reach:])), axis=2)
    # distances (pixels) from the centre to the first three edges each way: (6, n, 3)
    dist = (met[:, :, :, None] < _FIRST_EDGES).sum(axis=2)
    up, down = dist[:3], dist[3:]
    centre = up[:, :, 0] + down[:, :, 0] + 1.0
    unit = (up[:, :, 2] + down[:, :, 2] + 1.0) / 7.0
    rings = (dist[:, :, 1:] - dist[:, :, :2]).reshape(2, 3, -1, 2)  # up/down, dir, n, ring
    ok = (dark[:, :, reach] == centre_dark) & (met[:, :, -1] >= 3).reshape(2, 3, -1).all(axis=0)
    ok &= ((rings >= (unit * _SIDE[0] - 1.0)[:, :, None])  # a pixel of slack: blur
           & (rings <= (unit * _SIDE[1] + 1.0)[:, :, None])).all(axis=(0, 3))
    ok &= (centre >= unit * _CENTRE[0] - 1.0) & (centre <= unit * _CENTRE[1] + 1.0)
    ok &= (unit >= 0.4 * units - 1.0) & (unit <= 2.5 * units + 1.0)
    return ok
