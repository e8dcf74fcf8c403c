"""Where in a frame a matrix code can be: blocks of tiles with contrast.

A code's modules alternate dark and light, so every 16x16 tile of a code (modules of up to
about 8 pixels) holds samples more than `MIN_RANGE` grey levels apart, and so does each 2x2
block of its tiles. A counter, a wall or a phone's blank screen mostly has no such tiles;
a line or a box's edge makes thin chains of them, not 2x2 blocks. The full-resolution
passes (ladder.py), the costliest part of a frame without a code, read only the box around
such blocks.

`MIN_RANGE` is zxing-cpp's own limit: its local-average binarizer leaves a block whose grey
levels span less than 24 blank (a faint code is read stretched instead: preprocess.py).
The samples are every 4th pixel of two rows of each tile, 8 apart (as stillness.thumbnail).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

TILE: Final = 16
MIN_RANGE: Final = 24
_ROWS: Final = (0, 8)
_STEP: Final = 4

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1/y1 exclusive


def textured_box(pixels: npt.NDArray[np.uint8]) -> Box | None:
    """The box around every 2x2 block of tiles with contrast, grown by a tile (and
    reaching the edge where the last whole tile does); None when there is no such block.

    A view smaller than 2x2 tiles is returned whole.
    """
    h, w = pixels.shape
    rows, cols = h // TILE, w // TILE
    if rows < 2 or cols < 2:
        return (0, 0, w, h)
    spans = _tile_ranges(pixels, rows, cols) > MIN_RANGE
    blocks = spans[:-1, :-1] & spans[1:, :-1] & spans[:-1, 1:] & spans[1:, 1:]
    across, down = np.flatnonzero(blocks.any(axis=0)), np.flatnonzero(blocks.any(axis=1))
    if not across.size:
        return None
    c0, c1 = int(across[0]) - 1, int(across[-1]) + 3  # a block is two tiles wide
    r0, r1 = int(down[0]) - 1, int(down[-1]) + 3
    return (max(0, c0) * TILE, max(0, r0) * TILE,
            w if c1 >= cols else c1 * TILE, h if r1 >= rows else r1 * TILE)


def _tile_ranges(pixels: npt.NDArray[np.uint8], rows: int, cols: int
                 ) -> npt.NDArray[np.uint8]:
    """Per tile, the highest sample minus the lowest: strided maxima and minima, far
    cheaper than reducing a 4-D view."""
    height, width = rows * TILE, cols * TILE
    first, second = pixels[_ROWS[0]:height:TILE, :width], pixels[_ROWS[1]:height:TILE, :width]
    high, low = np.maximum(first, second), np.minimum(first, second)
    top, bottom = high[:, 0:width:TILE].copy(), low[:, 0:width:TILE].copy()
    for dx in range(_STEP, TILE, _STEP):
        np.maximum(top, high[:, dx:width:TILE], out=top)
        np.minimum(bottom, low[:, dx:width:TILE], out=bottom)
    top -= bottom
    return top
