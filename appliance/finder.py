"""Could this frame hold a QR or Micro QR symbol? A look for finder patterns in numpy.

Every QR and Micro QR symbol carries a finder pattern: concentric squares whose cross-section
along any line through their centre runs dark-light-dark-light-dark in the ratio 1:1:3:1:1
(light-dark-light-dark-light when the symbol is inverted). `find_finders` looks for that
ratio along every 4th row, keeps the candidates whose column and diagonals change polarity
where a finder's rings would be (a few probed pixels: this rejects stripes and most text),
then measures whole runs along the column and both diagonals, as zxing-cpp's own detector
cross-checks. A frame without a confirmed candidate holds no symbol zxing-cpp could read.

Rows are binarised locally (the midpoint of the darkest and brightest sample within about
100 pixels), so gradients, glare beside a symbol and faint print are handled. Tolerances
are generous (blur, perspective, rotation and 1.6-pixel modules bend the ratio): a frame let
through costs only the full reader's time, a symbol refused is a symbol lost. Bounded: at
most `_MAX_CANDIDATES` candidates are traced along whole runs (more: "maybe").

Measured (docs/benchmarks.md): every QR frame of the bench corpora (seeds 1, 2) that the
Decoder reads is "maybe"; plain, text and stripes frames are mostly "no". But in numpy, with
microseconds per call, the look costs about as much as the full-resolution passes it would
save, so `[decode] finder_gate` is off by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

Gray = npt.NDArray[np.uint8]

ROW_STEP: Final = 4  # rows sampled: a finder's centre band is >= 2 modules of >= 1.6 px
_ROW_OFFSET: Final = 2  # the first row sampled
_BLOCK: Final = 32  # columns per block of the local threshold
_CONTRAST: Final = 16  # grey levels: a block window with less spread holds no pattern
_MIN_MODULE: Final = 1.0  # pixels: smaller modules are beyond zxing-cpp as well
_MAX_MODULE: Final = 30.0  # pixels: a 21-module symbol filling a 1280x720 frame
_SIDE: Final = (0.3, 2.0)  # a side run, in modules (nominal 1), plus one pixel of slack
_CENTRE: Final = (1.6, 5.0)  # the centre run, in modules (nominal 3)
# Pixels probed along a candidate's column and diagonals, in the row's modules, each way:
# the centre's polarity must give way to the other one (the ring) and come back (the outer
# ring). The row may cross the centre block anywhere and a diagonal step is 1 to 1.4
# modules long, so the rings may sit from 0.4 to 4.6 away; the first, cheap look at the
# column only asks for the other polarity within three modules.
_STEPS: Final = np.array([0.4, 0.7, 1.0, 1.4, 1.8, 2.2, 2.6, 3.0, 3.4, 3.8, 4.2, 4.6])
_FEW_STEPS: Final = np.array([0.7, 1.4, 2.2, 3.0])
_COLUMN: Final = np.array([[1, 0], [-1, 0]])  # (dy, dx) each way
_DIAGONALS: Final = np.array([[1, 1], [-1, -1], [1, -1], [-1, 1]])
_MAX_CANDIDATES: Final = 256  # candidates traced along whole runs at most
_ALL_DY: Final = np.array([1, 1, 1])[:, None, None]  # whole runs: the column, the diagonals
_ALL_DX: Final = np.array([0, 1, -1])[:, None, None]
_FIRST_EDGES: Final = np.array([1, 2, 3])


@dataclass(frozen=True, slots=True)
class Finders:
    """Which finder patterns a frame showed: with a dark centre (a symbol printed dark on
    light) and with a light centre (an inverted symbol, e.g. a phone in dark mode)."""

    dark: bool
    light: bool

    @property
    def any(self) -> bool:
        """Whether the frame may hold a symbol at all."""
        return self.dark or self.light


MAYBE: Final = Finders(dark=True, light=True)
NONE: Final = Finders(dark=False, light=False)


class _Candidates(NamedTuple):
    """Row runs in 1:1:3:1:1: frame row and column of the centre, module size (pixels),
    binarisation threshold there, and whether the centre run is dark."""

    ys: npt.NDArray[np.intp]
    xs: npt.NDArray[np.intp]
    units: npt.NDArray[np.float64]
    levels: Gray
    dark: npt.NDArray[np.bool_]

    def take(self, picked: npt.NDArray[np.intp]) -> _Candidates:
        """The candidates at indices `picked`."""
        return _Candidates(self.ys[picked], self.xs[picked], self.units[picked],
                           self.levels[picked], self.dark[picked])


def find_finders(pixels: Gray) -> Finders:
    """The finder patterns `pixels` (2-D uint8) may hold, by polarity.

    A polarity is False when no row shows a 1:1:3:1:1 run pattern of it that its column
    and both diagonals confirm. Frames too small to analyse (under 12x96) and frames with
    very many candidates left after the probes are `MAYBE`: cheap to read, or worth it.
    """
    h, w = pixels.shape
    if h < 3 * ROW_STEP or w < 3 * _BLOCK:
        return MAYBE
    dark, mids = _dark(pixels[_ROW_OFFSET::ROW_STEP, :])
    rows, xs, units, centre_dark = _row_candidates(dark)
    if rows.size == 0:
        return NONE
    levels = mids[rows // 2, xs // _BLOCK]
    return _confirmed(pixels, _Candidates(rows * ROW_STEP + _ROW_OFFSET, xs, units, levels,
                                          centre_dark))


def may_hold_finder(pixels: Gray) -> bool:
    """Whether `pixels` may hold a QR or Micro QR finder pattern of either polarity."""
    return find_finders(pixels).any


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
    w = dark.shape[1]
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


def _confirmed(pixels: Gray, found: _Candidates) -> Finders:
    """The polarities of the row candidates that show the pattern along their column and
    both diagonals.

    Probed pixels first (`_STEPS`: along the column a finder's module is the row's
    whatever its rotation, along a diagonal up to 1.4 times shorter), which rejects most
    candidates cheaply; then whole runs along the column and the diagonals for the rest.
    """
    found = found.take(np.flatnonzero((pixels[found.ys, found.xs] < found.levels) == found.dark))
    for ways, steps, outer in ((_COLUMN, _FEW_STEPS, False), (_COLUMN, _STEPS, True),
                               (_DIAGONALS, _STEPS, True)):
        found = found.take(np.flatnonzero(_rings_seen(pixels, found, ways, steps, outer=outer)))
        if found.ys.size == 0:
            return NONE
    if found.ys.size > _MAX_CANDIDATES:
        return MAYBE  # a frame this busy is worth reading; and the arrays stay bounded
    polarity = found.dark[_runs_across(pixels, found).all(axis=0)]
    if polarity.size == 0:
        return NONE
    return Finders(dark=bool(polarity.any()), light=not bool(polarity.all()))


def _rings_seen(pixels: Gray, found: _Candidates, ways: npt.NDArray[np.intp],
                steps: npt.NDArray[np.float64], *, outer: bool) -> npt.NDArray[np.bool_]:
    """Which candidates show the other polarity (then, if `outer`, their own again) at
    `steps` (in modules) along every one of `ways` ((dy, dx) rows)."""
    h, w = pixels.shape
    reach = np.rint(found.units[:, None, None] * steps).astype(np.intp)  # (n, 1, steps)
    rows = np.minimum(np.maximum(found.ys[:, None, None] + ways[:, :1] * reach, 0), h - 1)
    cols = np.minimum(np.maximum(found.xs[:, None, None] + ways[:, 1:] * reach, 0), w - 1)
    same = (pixels[rows, cols] < found.levels[:, None, None]) == found.dark[:, None, None]
    if not outer:
        other: npt.NDArray[np.bool_] = (~same).any(axis=2).all(axis=1)
        return other
    ring_met = np.cumsum(~same, axis=2) > 0  # the other polarity seen by this step
    seen: npt.NDArray[np.bool_] = (same & ring_met).any(axis=2).all(axis=1)
    return seen


def _runs_across(pixels: Gray, found: _Candidates) -> npt.NDArray[np.bool_]:
    """Per direction (the column, then the diagonals) and candidate: whether the line
    through the candidate shows 1:1:3:1:1 runs of the candidate's polarity. (Few numpy
    calls: each costs microseconds, and candidates are few.)"""
    ys, xs, units, levels, centre_dark = found
    dy, dx = _ALL_DY, _ALL_DX
    h, w = pixels.shape
    reach = int(units.max() * 6) + 3
    offsets = np.arange(-reach, reach + 1)
    row_at = ys[:, None] + dy * offsets  # (k, n, 2 reach + 1)
    col_at = xs[:, None] + dx * offsets
    outside = (row_at < 0) | (row_at >= h) | (col_at < 0) | (col_at >= w)
    line = pixels[np.minimum(np.maximum(row_at, 0), h - 1),
                  np.minimum(np.maximum(col_at, 0), w - 1)]
    dark = (line < levels[:, None]) & ~outside
    change = dark[:, :, 1:] != dark[:, :, :-1]  # [j]: between offsets j and j+1
    # edges met going up (nearest first), then going down: (2k, n, reach)
    met = np.cumsum(np.concatenate((change[:, :, reach - 1::-1], change[:, :, reach:])), axis=2)
    # distances (pixels) from the centre to the first three edges each way: (2k, n, 3)
    dist = (met[:, :, :, None] < _FIRST_EDGES).sum(axis=2)
    k = dy.shape[0]
    up, down = dist[:k], dist[k:]
    centre = up[:, :, 0] + down[:, :, 0] + 1.0
    unit = (up[:, :, 2] + down[:, :, 2] + 1.0) / 7.0
    rings = (dist[:, :, 1:] - dist[:, :, :2]).reshape(2, k, -1, 2)  # up/down, dir, n, ring
    ok: npt.NDArray[np.bool_] = dark[:, :, reach] == centre_dark
    ok &= (met[:, :, -1] >= 3).reshape(2, k, -1).all(axis=0)
    ok &= ((rings >= (unit * _SIDE[0] - 1.0)[:, :, None])  # a pixel of slack: blur
           & (rings <= (unit * _SIDE[1] + 1.0)[:, :, None])).all(axis=(0, 3))
    ok &= (centre >= unit * _CENTRE[0] - 1.0) & (centre <= unit * _CENTRE[1] + 1.0)
    ok &= (unit >= 0.4 * units - 1.0) & (unit <= 2.5 * units + 1.0)
    return ok
