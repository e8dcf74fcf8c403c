"""Where in a frame a linear code (EAN-13, Code 128) may be: the gate before its reader.

zxing-cpp's cost on linear codes follows the pixel lines it is given, so the Decoder gives it
only every `ROW_STEP`-th row (and column: cards held sideways) that crosses enough bar-like
edges, stacked, and maps what it reads back to frame pixels.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

Corners = tuple[tuple[int, int], ...]

ROW_STEP: Final = 8  # linear codes are tall: every 8th row still crosses the bars many times
_BAR_STEP: Final = 10  # grey levels over two pixels: an edge for the gate
_BAR_EDGES: Final = 40  # edge pixels a line needs before the linear reader is asked


def bar_lines(lines: npt.NDArray[np.uint8]) -> npt.NDArray[np.intp]:
    """The indices of the pixel lines that cross enough edges to hold a linear code.

    An edge is a step of more than `_BAR_STEP` grey levels over two pixels (blurred,
    low-contrast bars included); EAN-13 has 59 edges and our Code 128 values more, each
    counted once or more, so a line with fewer than `_BAR_EDGES` cannot hold one.
    """
    if lines.shape[1] < 3:
        return np.zeros(0, np.intp)
    ahead, behind = lines[:, 2:], lines[:, :-2]
    steps = (np.maximum(ahead, behind) - np.minimum(ahead, behind)) > _BAR_STEP  # uint8
    counts = steps.view(np.uint8).sum(axis=1, dtype=np.uint16)  # count_nonzero is slower
    return np.flatnonzero(counts >= _BAR_EDGES)


def line_corners(corners: Corners, busy: npt.NDArray[np.intp], step: int,
                 transposed: bool) -> Corners:
    """Corners read on stacked `busy` lines (every `step`-th row, or column when
    `transposed`) in frame pixels."""
    last = busy.size - 1
    mapped = []
    for x, y in corners:
        line = int(busy[min(max(y, 0), last)]) * step
        mapped.append((line, x) if transposed else (x, line))
    if transposed:  # a mirror reverses the winding
        mapped = [mapped[0], mapped[3], mapped[2], mapped[1]]
    return tuple(mapped)
