"""Follow one code-like region over frames and combine its aligned crops.

The camera sees a held card 15-30 times a second. When a frame shows a symbol zxing-cpp
located but could not decode, `RegionStack` keeps that region; each later frame's crop of
it is aligned to the stack (integer shift by cross-correlation within `SEARCH` pixels: a
hand moves a card by a pixel or two per frame) and kept, up to `depth` crops. The decoder
then reads the newest crop (with fixes the whole frame did not get) and combinations of the
stack, cheapest and most useful first:

- mean: sensor noise falls with the square root of the crop count (dim, high-ISO frames);
- median: anything covering a pixel in fewer than half of the crops goes (a moving finger);
- low: the per-pixel minimum over the last `LOW_SPAN`..`2 * LOW_SPAN` depths of crops, not
  only the stack: a lamp's reflection on a phone screen is larger than a card's glare spot
  and takes more frames to move off every module (light is only ever added, so the darkest
  sample is right); two running minima, swapped every `LOW_SPAN * depth` crops, keep it
  bounded and let a change (a finger that passed) age out;
- min: a glare spot that moves as the card tilts (the stack's crops only);
- max: a dark occluder that moves.

Everything is bounded: at most `depth` crops (and two minima) of at most `MAX_SIDE` pixels
a side; a region not confirmed for `4 * depth` frames (a guessed one: `depth`) is dropped.
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
LOW_SPAN: Final = 2  # the running minimum covers the last 2-4 stack depths of crops
_GLARE_LEVEL: Final = 245  # grey level from which a pixel counts as glare for alignment
_GLARE_REACH: Final = 3  # pixels around glare left out of the alignment
_HALVED: Final = 96 * 96  # a region of this many pixels or more is aligned at half size
_RESIZED: Final = 0.8  # a moved glare kept its size: came and went differ by less than this
_MOVED: Final = 12  # half-size pixels of glare that must both come and go for it to have moved
GLARE_EVERY: Final = 3  # a region guessed from glare is looked at every this many frames
GLARE_STILL: Final = 3  # looks at unmoving glare after which a glare guess is dropped
GLARE_PATIENCE: Final = 3  # stack depths a region guessed from glare is followed unconfirmed


class RegionStack:
    """Aligned crops of one region, newest last; `decode` owns one per Decoder."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.box: Box | None = None
        self._crops: deque[Gray] = deque(maxlen=depth)
        self._sum: npt.NDArray[np.float32] | None = None
        self._low: Gray | None = None  # minimum of the crops before `_fresh` began
        self._fresh: Gray | None = None  # minimum of the crops since the last swap
        self._since = 0  # crops in `_fresh`
        self._pushed = 0  # crops since the region was started
        self._glare: npt.NDArray[np.bool_] | None = None  # the newest crop's glare
        self.glare_still = 0  # looks in a row whose glare did not move (a `glared` region)
        self._skipped = 0  # frames since a `glared` region was last looked at
        self.added = False  # the last `follow` added a crop
        self._unconfirmed = 0
        self._patience = 4 * depth
        self._frame_shape: tuple[int, ...] = (0, 0)
        self.glared = False  # guessed from glare: read its combinations against glare

    def __len__(self) -> int:
        return len(self._crops)

    def clear(self) -> None:
        """Forget the region."""
        self.box, self._sum, self._unconfirmed, self.glared = None, None, 0, False
        self._low, self._fresh, self._since, self._pushed = None, None, 0, 0
        self._glare, self.glare_still, self._skipped, self.added = None, 0, 0, False
        self._crops.clear()

    def start(self, pixels: Gray, box: Box, patience: int | None = None,
              glared: bool = False) -> bool:
        """Follow `box` from this frame on (False: too small, too large or off the frame).

        The region is dropped after `patience` frames (default `4 * depth`) in a row
        without `confirm` or a confirmed `follow`. `glared`: the region was guessed from
        glare (kept in `glared` until the region is dropped).
        """
        self.clear()
        self.glared = glared
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

        `confirmed`: the frame located a symbol inside the region again. A `glared`
        region is looked at every `GLARE_EVERY` frames only (`added` says whether this one
        was): a lamp's reflection moves a few pixels a frame, so the minimum of every third
        frame uncovers about what every frame's would, for a third of the alignments.
        """
        self.added = False
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
        if self.glared:
            self._skipped = (self._skipped + 1) % GLARE_EVERY
            if self._skipped:
                return True
            self._glare_moved(pixels[y0:y1, x0:x1])
            if self.glare_still:  # nothing new under the glare: not worth aligning
                self._glare = _glare_mask(pixels[y0:y1, x0:x1])  # the box stays
                return True
        window = pixels[max(0, y0 - SEARCH):y1 + SEARCH, max(0, x0 - SEARCH):x1 + SEARCH]
        pad = ((max(0, SEARCH - y0), max(0, y1 + SEARCH - h)),
               (max(0, SEARCH - x0), max(0, x1 + SEARCH - w)))
        if any(any(p) for p in pad):  # at the frame's edge: searched as if it went on
            window = np.pad(window, pad, mode="edge")
        dx, dy = _shift(self._sum, window, len(self._crops), self.glared)
        dx, dy = min(max(dx, -x0), w - x1), min(max(dy, -y0), h - y1)  # inside the frame
        x0, y0, x1, y1 = x0 + dx, y0 + dy, x1 + dx, y1 + dy
        self.box = (x0, y0, x1, y1)
        self._push(np.array(pixels[y0:y1, x0:x1]))
        return True

    def confirm(self) -> None:
        """The region was read: keep following it."""
        self._unconfirmed = 0

    def combinations(self, glare: bool, every: bool = True) -> Iterator[tuple[str, Gray]]:
        """The newest crop, then combined images of the stack (2+ crops), computed lazily,
        in the order to try; not `every`: the newest and the mean (glare: the low) only.

        "low" is yielded only once it covers more crops than the stack ("min" otherwise).
        """
        if not self._crops or self._sum is None:
            return
        yield "newest", self._crops[-1]
        if len(self._crops) < 2:
            return
        if not every:
            order: tuple[str, ...] = ("low", "min") if glare else ("mean",)
        elif glare:
            order = ("low", "min", "mean", "median", "max")
        else:
            order = ("mean", "median", "min", "max", "low")
        longer = self._pushed > len(self._crops)
        for name in order:
            if name == "low" and longer:
                yield name, self.low()
            elif name == "min" and (every or not longer):
                yield name, np.stack(self._crops).min(axis=0)
            elif name == "mean":
                yield name, np.rint(self._sum / len(self._crops)).astype(np.uint8)
            elif name == "median" and len(self._crops) >= 3:
                yield name, np.median(np.stack(self._crops), axis=0).astype(np.uint8)
            elif name == "max":
                yield name, np.stack(self._crops).max(axis=0)

    def _glare_moved(self, crop: Gray) -> None:
        """Count the frames in a row whose glare stayed where it was (`glare_still`).

        A frame whose glare did not move is not added (its minimum would add nothing).
        `crop` is this frame at the last crop's box, before alignment: a lamp's reflection
        on a tilting phone moves in the frame, a white sheet on the counter does not (and
        an alignment that wanders over a plain sheet must not make it seem to). It moved
        when `_MOVED` pixels of glare (at half size) both came and went and its size changed
        by less than `_RESIZED` of that (a dark object sliding over a white one covers or
        uncovers it, and flicker at the edge of a bright area does not keep a size).
        """
        glare = _glare_mask(crop)
        if self._glare is not None and glare.shape == self._glare.shape:
            came = int(np.count_nonzero(glare & ~self._glare))
            went = int(np.count_nonzero(self._glare & ~glare))
            # both came and went (not just covered or uncovered), and kept its size
            moved = min(came, went) >= _MOVED and abs(came - went) <= _RESIZED * max(came, went)
            self.glare_still = 0 if moved else self.glare_still + 1

    def low(self) -> Gray:
        """The per-pixel minimum of the last `LOW_SPAN`..`2 * LOW_SPAN` depths of crops."""
        if self._fresh is None:
            raise ValueError("no region is followed")
        return self._fresh if self._low is None else np.minimum(self._low, self._fresh)

    def _push(self, crop: Gray) -> None:
        self.added = True
        if len(self._crops) == self.depth and self._sum is not None:
            self._sum -= self._crops[0]
        self._crops.append(crop)
        self._sum = crop.astype(np.float32) if self._sum is None else self._sum + crop
        self._pushed += 1
        if self.glared:
            self._glare = _glare_mask(crop)
        if self._fresh is None or self._since >= LOW_SPAN * self.depth:
            self._low, self._fresh, self._since = self._fresh, crop.copy(), 1
        else:
            np.minimum(self._fresh, crop, out=self._fresh)
            self._since += 1


def _glare_mask(crop: Gray) -> npt.NDArray[np.bool_]:
    """Solid glare at half size: where the mean of 2x2 pixels is `_GLARE_LEVEL` or more
    (noise averaged out), and so are its four neighbours (specks and thin bands of
    clipped noise are not a lamp's reflection)."""
    h, w = (crop.shape[0] // 2) * 2, (crop.shape[1] // 2) * 2
    quads = crop[:h:2, :w:2].astype(np.uint16) + crop[1:h:2, :w:2] + crop[:h:2, 1:w:2]
    bright = (quads + crop[1:h:2, 1:w:2]) >= 4 * _GLARE_LEVEL
    mask = np.zeros_like(bright)
    mask[1:-1, 1:-1] = (bright[1:-1, 1:-1] & bright[:-2, 1:-1] & bright[2:, 1:-1]
                        & bright[1:-1, :-2] & bright[1:-1, 2:])
    return mask


def fitted(box: Box, shape: tuple[int, ...]) -> Box:
    """`box` cut to `MAX_SIDE` (about its centre) and kept `SEARCH` pixels inside a frame of
    `shape` (rows, columns), so that it can be followed and aligned."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    half = MAX_SIDE // 2
    h, w = shape[:2]
    return (max(SEARCH, x0, cx - half), max(SEARCH, y0, cy - half),
            min(w - SEARCH, x1, cx + half), min(h - SEARCH, y1, cy + half))


def _shift(reference: npt.NDArray[np.float32], window: Gray, count: int = 1,
           glare: bool = False) -> tuple[int, int]:
    """The (dx, dy) within +-SEARCH at which `window` best matches `reference` (the sum of
    `count` crops).

    `window` is the reference's box grown by SEARCH on every side; the match is the peak of
    the cross-correlation of their edges (a 4-neighbour Laplacian), so a lighting gradient
    does not pull it and sensor noise, uncorrelated, does not move it. A region of
    `_HALVED` pixels or more is correlated at half size (2x2 means: numpy's FFT is slow
    along columns, and a 320-pixel region took 7 ms at full size); the pixel is where the
    parabola through the peak and its neighbours peaks (an odd shift falls halfway between
    two half-size lags, an even one on a lag).
    `glare`: edges next to saturated pixels are left out (a glare's rim moves over the
    card, it would pull the match with it).
    """
    ref = (reference / max(1, count)).astype(np.float32)
    win = window.astype(np.float32)
    if ref.size < _HALVED:
        corr = _correlation(_edges(ref, glare), _edges(win, glare), SEARCH)
        row, col = np.unravel_index(int(np.argmax(corr)), corr.shape)
        return int(col) - SEARCH, int(row) - SEARCH
    reach = (_GLARE_REACH + 1) // 2
    half = SEARCH // 2
    # one lag more on every side, so that a peak at the last lag has two neighbours
    corr = _correlation(_edges(_halved(ref), glare, reach), _edges(_halved(win), glare, reach),
                        half, beyond=1)
    core = corr[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(core)), core.shape)
    y, x = int(row) + 1, int(col) + 1
    dx = round(2 * (x - 1 - half + _vertex(corr[y, x - 1:x + 2])))
    dy = round(2 * (y - 1 - half + _vertex(corr[y - 1:y + 2, x])))
    return min(max(dx, -SEARCH), SEARCH), min(max(dy, -SEARCH), SEARCH)


def _vertex(samples: npt.NDArray[np.float64]) -> float:
    """Where, between -0.5 and 0.5, the parabola through three samples around a peak peaks."""
    left, centre, right = (float(v) for v in samples)
    curve = left - 2 * centre + right
    if curve >= 0:
        return 0.0
    return min(max(0.5 * (left - right) / curve, -0.5), 0.5)


def _correlation(ref_edges: npt.NDArray[np.float32], win_edges: npt.NDArray[np.float32],
                 search: int, beyond: int = 0) -> npt.NDArray[np.float64]:
    """The cross-correlation at lags -`search`-`beyond` .. `search`+`beyond` on both axes
    (index `search + beyond`: no shift), by FFT, zero-padded so that no lag wraps (the
    lags `beyond` the window overlap it in part)."""
    size = (_fast(win_edges.shape[0] + beyond), _fast(win_edges.shape[1] + beyond))
    spectrum = np.fft.rfft2(win_edges, s=size) * np.conj(np.fft.rfft2(ref_edges, s=size))
    full = np.fft.irfft2(spectrum, s=size)
    lags = np.arange(-beyond, 2 * search + beyond + 1)
    corr: npt.NDArray[np.float64] = full[np.ix_(lags, lags)]
    return corr


def _halved(image: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """`image` at half size: the mean of each 2x2 block (an odd last row or column dropped)."""
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    out: npt.NDArray[np.float32] = (image[0:h:2, 0:w:2] + image[1:h:2, 0:w:2]
                                     + image[0:h:2, 1:w:2] + image[1:h:2, 1:w:2]) * np.float32(0.25)
    return out


def _fast(n: int) -> int:
    """The smallest length >= `n` whose only prime factors are 2, 3 and 5 (a fast FFT)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _edges(image: npt.NDArray[np.float32], glare: bool = False,
           reach: int = _GLARE_REACH) -> npt.NDArray[np.float32]:
    """A 4-neighbour Laplacian (one pixel smaller on every side); `glare`: zero within
    `reach` pixels of glare (a 5-point mean of `_GLARE_LEVEL` or more)."""
    out: npt.NDArray[np.float32] = (4 * image[1:-1, 1:-1] - image[:-2, 1:-1] - image[2:, 1:-1]
                                    - image[1:-1, :-2] - image[1:-1, 2:])
    if glare:
        centre = image[1:-1, 1:-1]  # glare where the 5-point mean is bright (not noise)
        bright = (5 * centre - out) / 5 >= _GLARE_LEVEL
        for _ in range(reach):  # a cheap dilation: a cross of the reach
            grown = bright.copy()
            grown[1:] |= bright[:-1]
            grown[:-1] |= bright[1:]
            grown[:, 1:] |= bright[:, :-1]
            grown[:, :-1] |= bright[:, 1:]
            bright = grown
        out[bright] = 0
    return out
