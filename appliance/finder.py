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

ROW_STEP: Final = 3  # rows sampled: a finder's centre band is >= 2 modules of >= 1.6 px
_BLOCK: Final = 32  # columns per block of the local threshold
_CONTRAST: Final = 16  # grey levels: a block window with less spread holds no pattern
_MIN_MODULE: Final = 1.0  # pixels: smaller modules are beyond zxing-cpp as well
_MAX_MODULE: Final = 40.0  # pixels: a symbol filling a 1280x720 frame
_SIDE: Final = (0.3, 2.0)  # a side run, in modules (nominal 1), plus one pixel of slack
_CENTRE: Final = (1.6, 5.0)  # the centre run, in modules (nominal 3)
_MAX_CANDIDATES: Final = 512  # candidates traced across per frame at most


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
    total = edges[5:] - edges[:-5]  # seven modules; windows across a row end fail below
    centre = edges[3:-2] - edges[2:-3]
    ok = (total >= 7 * _MIN_MODULE) & (total <= 7 * _MAX_MODULE)
    ok &= (7 * centre >= _CENTRE[0] * total - 7) & (7 * centre <= _CENTRE[1] * total + 7)
    at = np.flatnonzero(ok)
    for k in (0, 1, 3, 4):
        side = edges[at + k + 1] - edges[at + k]
        keep = (7 * side >= _SIDE[0] * total[at] - 7) & (7 * side <= _SIDE[1] * total[at] + 7)
        at = at[keep]
    rows = edges[at] // w
    at = at[rows == (edges[at + 5] - 1) // w]  # all five runs in one row
    middle = (edges[at + 2] + edges[at + 3]) // 2
    return middle // w, middle % w, total[at] / 7.0, flat[middle]


# (modules from the centre along the column, must match the centre's polarity): any of
# each group of three will do (blur and perspective move the rings)
_PROBES: Final = np.array([0.0, 1.6, 2.0, 2.4, -1.6, -2.0, -2.4, 2.6, 3.0, 3.4, -2.6, -3.0, -3.4])


def _confirmed(pixels: Gray, ys: npt.NDArray[np.intp], xs: npt.NDArray[np.intp],
               units: npt.NDArray[np.float64], levels: Gray,
               centre_dark: npt.NDArray[np.bool_]) -> bool:
    """Whether any row candidate shows the pattern along its column and both diagonals.

    A few pixels of the column first (the centre, the ring about two modules above and
    below, the outer ring about three: along the column a finder's module is the row's,
    whatever its rotation), which rejects most candidates (vertical stripes) cheaply; then
    whole runs along the column and the diagonals.
    """
    h = pixels.shape[0]
    at = ys[:, None] + np.rint(units[:, None] * _PROBES[None, :]).astype(np.intp)
    same = (pixels[np.clip(at, 0, h - 1), xs[:, None]] < levels[:, None]) == centre_dark[:, None]
    keep = same[:, 0] & ~same[:, 1:4].all(axis=1) & ~same[:, 4:7].all(axis=1)
    keep &= same[:, 7:10].any(axis=1) & same[:, 10:13].any(axis=1)
    picked = np.flatnonzero(keep)[:_MAX_CANDIDATES]
    if picked.size == 0:
        return False
    n = picked.size
    steps = np.repeat(np.array([[1, 0], [1, 1], [1, -1]]), n, axis=0)
    ok = _runs_across(pixels, np.tile(ys[picked], 3), np.tile(xs[picked], 3),
                      np.tile(units[picked], 3), np.tile(levels[picked], 3),
                      np.tile(centre_dark[picked], 3), steps)
    return bool(ok.reshape(3, n).all(axis=0).any())


def _runs_across(pixels: Gray, ys: npt.NDArray[np.intp], xs: npt.NDArray[np.intp],
                 units: npt.NDArray[np.float64], levels: Gray,
                 centre_dark: npt.NDArray[np.bool_],
                 steps: npt.NDArray[np.intp]) -> npt.NDArray[np.bool_]:
    """Which candidates show 1:1:3:1:1 runs along the line through them in direction
    `steps` (one (dy, dx) per candidate)."""
    h, w = pixels.shape
    reach = int(np.ceil(units.max() * 6)) + 2
    offsets = np.arange(-reach, reach + 1)
    row_at = ys[:, None] + steps[:, :1] * offsets[None, :]
    col_at = xs[:, None] + steps[:, 1:] * offsets[None, :]
    inside = (row_at >= 0) & (row_at < h) & (col_at >= 0) & (col_at < w)
    line = pixels[np.clip(row_at, 0, h - 1), np.clip(col_at, 0, w - 1)]
    dark = (line < levels[:, None]) & inside
    ok = dark[:, reach] == centre_dark
    change = dark[:, 1:] != dark[:, :-1]  # change[j]: between offsets j and j+1
    up_at, up_n = _first_three(change[:, :reach][:, ::-1])  # nearest first
    down_at, down_n = _first_three(change[:, reach:])
    ok &= (up_n >= 3) & (down_n >= 3)
    up_d = up_at + 0.5  # distance of each edge from the centre pixel
    down_d = down_at + 0.5
    centre = up_d[:, 0] + down_d[:, 0]
    rings = np.stack([up_d[:, 1] - up_d[:, 0], up_d[:, 2] - up_d[:, 1],
                      down_d[:, 1] - down_d[:, 0], down_d[:, 2] - down_d[:, 1]], axis=1)
    unit = (centre + rings.sum(axis=1)) / 7.0
    slack = 1.0  # pixels: quantisation and blur
    ok &= (unit >= 0.4 * units - slack) & (unit <= 2.5 * units + slack)
    ok &= ((rings >= _SIDE[0] * unit[:, None] - slack)
           & (rings <= _SIDE[1] * unit[:, None] + slack)).all(axis=1)
    ok &= (centre >= _CENTRE[0] * unit - slack) & (centre <= _CENTRE[1] * unit + slack)
    return ok


def _first_three(change: npt.NDArray[np.bool_]) -> tuple[npt.NDArray[np.float64],
                                                         npt.NDArray[np.intp]]:
    """Per row: the indices of the first three True values (0 when missing), and how many
    there are (capped at 3)."""
    counts = np.cumsum(change, axis=1)
    found = np.minimum(counts[:, -1], 3)
    at = np.stack([np.argmax(counts >= k, axis=1) for k in (1, 2, 3)], axis=1)
    return at.astype(np.float64), found
