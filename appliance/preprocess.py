"""Image fixes for the weak conditions, tried only after the plain read failed.

- `noise_level`: a cheap estimate of sensor noise (grey levels) from the second difference
  along sparse rows; a dim, high-ISO frame scores far above a clean one.
- `denoise`: a 3x3 box mean (Pillow, C speed): a third of the noise, modules of 3 pixels
  and more survive it. zxing-cpp's own `try_downscale` averages too, but halves the size.
- `stretch`: maps the 1st..99th percentile of a region to 0..255, for faded print and haze,
  whose grey band is narrower than zxing-cpp's binarizers accept (a local range under 24).
- `busiest_box`: where a symbol too noisy or faint for zxing-cpp to locate most likely is:
  the densest cluster of 16x16 tiles whose grey levels vary far more than the frame's
  typical tile (modules alternate; a counter, a box or a line mostly does not).
- `flatten`: the region minus its 17x17 box mean, amplified: what survives of the modules
  at a glare spot's bright rim (and under uneven light) becomes full contrast again.
- `with_glare`: a guessed box grown over the saturated pixels next to it (a glare spot is
  flat, not busy, and may hide a third of a code).
- `glare_fraction`: the share of saturated pixels in a region, the basis of the exposure
  advice (`DecodeResult.advice`).

Pillow and numpy only: OpenCV's CLAHE was measured in bench/decode.py's sequences (see
docs/decoding.md) and did not earn a second imaging library on the device.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFilter

Gray = npt.NDArray[np.uint8]

_NOISE_ROW_STEP: Final = 8
_NOISE_ROWS: Final = 12  # rows sampled at most: about ten thousand differences
_LAPLACE_TO_SIGMA: Final = 1.0 / (0.6745 * np.sqrt(6.0))  # median |2a-b-c| of N(0,s): 1.65 s
SATURATED: Final = 250
SATURATED_DENOISED: Final = 240  # a denoised frame's glare: its noisy pixels were clipped
_TILE: Final = 16
_FLAT_RADIUS: Final = 8  # pixels: wider than a module, narrower than a glare spot
_WINDOW: Final = 5  # tiles: the smallest symbol we follow spans about 5x5 tiles
_BUSY_FACTOR: Final = 1.6  # a busy tile varies this many times more than the median tile
_BUSY_MIN: Final = 3.0  # grey levels: below this nothing is busy (a flat frame)
_BUSY_TILES: Final = 12  # busy tiles of 25 in the window: a filled square, not a line
NARROW: Final = 64  # grey levels: a 1st..99th percentile band narrower than this is stretched


def noise_level(pixels: Gray) -> float:
    """Estimated noise standard deviation in grey levels (0 for frames under 3x3 pixels)."""
    rows = pixels[::max(_NOISE_ROW_STEP, pixels.shape[0] // _NOISE_ROWS), :]
    if rows.shape[1] < 3:
        return 0.0
    wide = rows.astype(np.int16)
    second = np.abs(2 * wide[:, 1:-1] - wide[:, :-2] - wide[:, 2:]).ravel()
    counts = np.cumsum(np.bincount(second, minlength=1))  # a median without sorting
    median = int(np.searchsorted(counts, second.size / 2))
    return median * float(_LAPLACE_TO_SIGMA)


def denoise(pixels: Gray) -> Gray:
    """A 3x3 box mean of `pixels` (same size)."""
    image = Image.fromarray(np.ascontiguousarray(pixels))
    return np.asarray(image.filter(ImageFilter.BoxBlur(1)))


def _span(pixels: Gray) -> tuple[float, float]:
    """The 1st and 99th percentile of a few thousand samples of `pixels`."""
    step = max(1, min(pixels.shape) // 60)
    counts = np.cumsum(np.bincount(pixels[::step, ::step].ravel(), minlength=256))
    total = int(counts[-1])
    low = int(np.searchsorted(counts, total * 0.01, side="right"))
    high = int(np.searchsorted(counts, total * 0.99))
    return float(low), float(high)


def narrow_range(pixels: Gray) -> bool:
    """Whether most of `pixels` lies in a band too narrow for zxing-cpp's binarizers."""
    if pixels.size == 0:
        return False
    low, high = _span(pixels)
    return 4 <= high - low < NARROW


def stretch(pixels: Gray) -> Gray:
    """`pixels` with its 1st..99th percentile spread over 0..255."""
    low, high = _span(pixels)
    high = max(high, low + 1)
    lut = np.clip((np.arange(256, dtype=np.float32) - low) * (255.0 / (high - low)), 0, 255)
    out: Gray = lut.astype(np.uint8)[pixels]
    return out


def flatten(pixels: Gray) -> Gray:
    """`pixels` minus its local mean (17x17 box), times three, around mid-grey."""
    image = Image.fromarray(np.ascontiguousarray(pixels))
    local = np.asarray(image.filter(ImageFilter.BoxBlur(_FLAT_RADIUS)), dtype=np.int16)
    out: Gray = np.clip((pixels.astype(np.int16) - local) * 3 + 128, 0, 255).astype(np.uint8)
    return out


def glare_fraction(pixels: Gray, level: int = SATURATED) -> float:
    """The share of saturated pixels (>= `level`, default 250) in `pixels`."""
    if pixels.size == 0:
        return 0.0
    return float(np.count_nonzero(pixels >= level)) / pixels.size


def with_glare(pixels: Gray, box: tuple[int, int, int, int],
               reach: int = 2 * _TILE) -> tuple[int, int, int, int] | None:
    """`box` grown to hold the saturated pixels in it and within `reach` of it (every 2nd
    pixel looked at), plus a margin of half a tile; None when there are none."""
    h, w = pixels.shape
    x0, y0 = max(0, box[0] - reach), max(0, box[1] - reach)
    x1, y1 = min(w, box[2] + reach), min(h, box[3] + reach)
    ys, xs = np.nonzero(pixels[y0:y1:2, x0:x1:2] >= SATURATED)
    if not len(xs):
        return None
    m = _TILE // 2
    return (min(box[0], x0 + 2 * int(xs.min()) - m), min(box[1], y0 + 2 * int(ys.min()) - m),
            max(box[2], x0 + 2 * int(xs.max()) + m), max(box[3], y0 + 2 * int(ys.max()) + m))


def busiest_box(pixels: Gray) -> tuple[int, int, int, int] | None:
    """The box (x0, y0, x1, y1) around the densest cluster of busy tiles, or None."""
    rows, cols = pixels.shape[0] // _TILE, pixels.shape[1] // _TILE
    if rows < _WINDOW or cols < _WINDOW:
        return None
    spread = _tile_spread(pixels, rows, cols)
    busy = spread > max(_BUSY_FACTOR * float(_median(spread)), _BUSY_MIN)
    sums = np.zeros((rows + 1, cols + 1), np.int32)  # np.pad costs several times more
    np.cumsum(np.cumsum(busy, 0, dtype=np.int32), 1, out=sums[1:, 1:])
    w = _WINDOW
    counts = sums[w:, w:] - sums[:-w, w:] - sums[w:, :-w] + sums[:-w, :-w]
    r, c = np.unravel_index(int(np.argmax(counts)), counts.shape)
    if counts[r, c] < _BUSY_TILES:
        return None
    r0, c0 = max(0, int(r) - w // 2), max(0, int(c) - w // 2)
    window = busy[r0:int(r) + w + w // 2, c0:int(c) + w + w // 2]
    ys, xs = np.nonzero(window)
    y0, y1 = r0 + int(ys.min()), r0 + int(ys.max()) + 1
    x0, x1 = c0 + int(xs.min()), c0 + int(xs.max()) + 1
    return ((x0 - 1) * _TILE, (y0 - 1) * _TILE, (x1 + 1) * _TILE, (y1 + 1) * _TILE)


def _median(values: npt.NDArray[np.float32]) -> np.float32:
    """`np.median(values)`, the same number (float32) for a third of its cost."""
    flat = values.ravel()
    k = flat.size // 2
    if flat.size % 2:
        return np.float32(np.partition(flat, k)[k])
    part = np.partition(flat, (k - 1, k))
    return np.float32((part[k - 1] + part[k]) / np.float32(2))


def _tile_spread(pixels: Gray, rows: int, cols: int) -> npt.NDArray[np.float32]:
    """The standard deviation of 16 samples (every 4th pixel of every 4th row) per tile.

    Strided adds, as in stillness.thumbnail: numpy reduces tiny axes (a 4-D view's std)
    several times slower.
    """
    sub = pixels[: rows * _TILE : 4, : cols * _TILE : 4].astype(np.int32)
    k = _TILE // 4
    sums, power = _tile_sums(sub, k), _tile_sums(sub * sub, k)
    n = k * k
    spread: npt.NDArray[np.float32] = np.sqrt(
        np.maximum(n * power - sums * sums, 0).astype(np.float32)) * np.float32(1 / n)
    return spread


def _tile_sums(samples: npt.NDArray[np.int32], k: int) -> npt.NDArray[np.int32]:
    """Sums of `k` x `k` blocks of `samples`."""
    rows = samples[0::k].copy()
    for i in range(1, k):
        rows += samples[i::k]
    out = rows[:, 0::k].copy()
    for i in range(1, k):
        out += rows[:, i::k]
    return out
