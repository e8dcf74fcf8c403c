"""Follow one code-like region over frames and combine its aligned crops.

The camera sees a held card 15-30 times a second. When a frame shows a symbol zxing-cpp
located but could not decode, `RegionStack` keeps that region; each later frame's crop of
it is aligned to the stack (integer shift by cross-correlation within `SEARCH` pixels: a
hand moves a card by a pixel or two per frame) and kept, up to `depth` crops. The decoder
then reads the newest crop (with fixes the whole frame did not get) and combinations of the
stack, cheapest and most useful first:

- mean: sensor noise falls with the square root of the crop count (dim, high-ISO frames);
- median: anything covering a pixel in fewer than half of the crops goes (a moving finger);
- min: a glare spot that moves as the card tilts (bright, so the darkest sample is right);
- max: a dark occluder that moves.

Everything is bounded: at most `depth` crops of at most `MAX_SIDE` pixels a side; a
region not confirmed for `4 * depth` frames (a guessed one: `depth`) is dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Final

import numpy as np
import numpy.typing as npt

Gray = npt.NDArray[np.uint8]
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in frame pixels, x1/y1 exclusive

SEARCH: Final = 6  # pixels a card may move between two frames and still be aligned
MAX_SIDE: Final = 320  # a larger region is not followed (it would be read whole anyway)
MIN_SIDE: Final = 24


class RegionStack:
    """Aligned crops of one region, newest last; `decode` owns one per Decoder."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.box: Box | None = None
        self._crops: deque[Gray] = deque(maxlen=depth)
        self._sum: npt.NDArray[np.float32] | None = None
        self._unconfirmed = 0
        self._patience = 4 * depth
        self._frame_shape: tuple[int, ...] = (0, 0)

    def __len__(self) -> int:
        return len(self._crops)

    def clear(self) -> None:
        """Forget the region."""
        self.box, self._sum, self._unconfirmed = None, None, 0
        self._crops.clear()

    def start(self, pixels: Gray, box: Box, patience: int | None = None) -> bool:
        """Follow `box` from this frame on (False: too small, too large or off the frame).

        The region is dropped after `patience` frames (default `4 * depth`) in a row
        without `confirm` or a confirmed `follow`.
        """
        self.clear()
        self._patience = 4 * self.depth if patience is None else patience
        h, w = pixels.shape
        x0, y0, x1, y1 = max(0, box[0]), max(0, box[1]), min(w, box[2]), min(h, box[3])
        if not (MIN_SIDE <= x1 - x0 <= MAX_SIDE and MIN_SIDE <= y1 - y0 <= MAX_SIDE):
            return False
        self.box = (x0, y0, x1, y1)
        self._frame_shape = pixels.shape
        self._push(np.array(pixels[y0:y1, x0:x1]))
        return True

    def follow(self, pixels: Gray, confirmed: bool) -> bool:
        """Add this frame's crop of the region, aligned; False (and cleared) when lost.

        `confirmed`: the frame located a symbol inside the region again.
        """
        if self.box is None or self._sum is None:
            return False
        self._unconfirmed = 0 if confirmed else self._unconfirmed + 1
        if self._unconfirmed >= self._patience:
            self.clear()
            return False
        x0, y0, x1, y1 = self.box
        h, w = pixels.shape
        if pixels.shape != self._frame_shape:  # another camera mode: start again
            self.clear()
            return False
        if x0 >= SEARCH and y0 >= SEARCH and x1 + SEARCH <= w and y1 + SEARCH <= h:
            window = pixels[y0 - SEARCH:y1 + SEARCH, x0 - SEARCH:x1 + SEARCH]
            dx, dy = _shift(self._sum, window)
            x0, y0, x1, y1 = x0 + dx, y0 + dy, x1 + dx, y1 + dy  # stays inside the window
        # else: at the frame's edge there is no room to search; followed in place
        self.box = (x0, y0, x1, y1)
        self._push(np.array(pixels[y0:y1, x0:x1]))
        return True

    def confirm(self) -> None:
        """The region was read: keep following it."""
        self._unconfirmed = 0

    def combinations(self, glare: bool, every: bool = True) -> Iterator[tuple[str, Gray]]:
        """The newest crop, then combined images of the stack (2+ crops), computed lazily,
        in the order to try; not `every`: the newest and the mean only."""
        if not self._crops or self._sum is None:
            return
        yield "newest", self._crops[-1]
        if len(self._crops) < 2:
            return
        stack = np.stack(self._crops)
        mean = np.rint(self._sum / len(self._crops)).astype(np.uint8)
        order: tuple[str, ...] = ("mean",)
        if every:
            order = ("min", "mean", "median", "max") if glare else ("mean", "median", "min", "max")
        for name in order:
            if name == "mean":
                yield name, mean
            elif name == "median" and len(self._crops) >= 3:
                yield name, np.median(stack, axis=0).astype(np.uint8)
            elif name == "min":
                yield name, stack.min(axis=0)
            elif name == "max":
                yield name, stack.max(axis=0)

    def _push(self, crop: Gray) -> None:
        if len(self._crops) == self.depth and self._sum is not None:
            self._sum -= self._crops[0]
        self._crops.append(crop)
        self._sum = crop.astype(np.float32) if self._sum is None else self._sum + crop


def _shift(reference: npt.NDArray[np.float32], window: Gray) -> tuple[int, int]:
    """The (dx, dy) within +-SEARCH at which `window` best matches `reference`.

    `window` is the reference's box grown by SEARCH on every side; the match is the peak of
    the cross-correlation (FFT) of their edges (a 4-neighbour Laplacian), so a lighting
    gradient does not pull it and sensor noise, uncorrelated, does not move it.
    """
    ref = _edges(reference)
    win = _edges(window.astype(np.float32))
    fh, fw = win.shape
    spectrum = np.fft.rfft2(win) * np.conj(np.fft.rfft2(ref, s=(fh, fw)))
    corr = np.fft.irfft2(spectrum, s=(fh, fw))[: 2 * SEARCH + 1, : 2 * SEARCH + 1]
    dy, dx = np.unravel_index(int(np.argmax(corr)), corr.shape)
    return int(dx) - SEARCH, int(dy) - SEARCH


def _edges(image: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """A 4-neighbour Laplacian (one pixel smaller on every side)."""
    out: npt.NDArray[np.float32] = (4 * image[1:-1, 1:-1] - image[:-2, 1:-1] - image[2:, 1:-1]
                                    - image[1:-1, :-2] - image[1:-1, 2:])
    return out
