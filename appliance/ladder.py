"""The ladder of zxing-cpp passes over one view, and one call mapped back to frame pixels.

What is read goes through a fixed ladder of cheap passes and stops at the first that finds a
symbol, so a frame with a code usually costs one sub-millisecond pass:

1. matrix codes on a 2x-subsampled view (zero-copy strides), global-histogram binarizer
   (skipped for a view under 320x240 pixels, such as a small changed part);
2. linear codes on every 8th row, then every 8th column (cards held sideways), each
   plain and inverted (zxing-cpp's own inversion covers matrix codes only); only the
   lines crossing enough bar-like edges are read, stacked (linear.py);
3. matrix codes at full resolution, local-average then global-histogram binarizer (the
   latter not inverted);
4. only for symbols a pass located but could not decode (at most two): the region,
   upscaled and sharpened, read again.

"QRCode" in the config means the classic QR symbol (models 1 and 2); Micro QR and rMQR,
which zxing-cpp files under the same family, must be named to be read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import zxingcpp
from PIL import Image, ImageFilter

from appliance.errors import ConfigError
from appliance.linear import ROW_STEP, bar_lines, line_corners

Corners = tuple[tuple[int, int], ...]

_F = zxingcpp.BarcodeFormat
_KNOWN: dict[str, zxingcpp.BarcodeFormat] = {
    name: fmt for name, fmt in _F.__members__.items() if name not in ("NONE", "All")
}
# "QRCode" means the classic symbol here: zxing-cpp's QRCode family also holds Micro QR and
# rMQR, whose tiny symbols with weak error correction misread clutter (a measured false
# positive in the bench corpus); name "MicroQRCode" / "RMQRCode" to read them as well.
_ALIASES: dict[str, tuple[zxingcpp.BarcodeFormat, ...]] = {
    "QRCode": (_F.QRCodeModel1, _F.QRCodeModel2),
}
_LINEAR = frozenset(zxingcpp.barcode_formats_list(zxingcpp.BarcodeFormats(_F.AllLinear)))
_HALF_PASS_PIXELS = 320 * 240  # a smaller view (a changed part) is read at full size only
_ROI_LIMIT = 2  # at most this many located-but-undecoded symbols get a closer look
# the full-resolution matrix passes: (binarizer, try inverted as configured)
_FULL_PASSES = (
    (zxingcpp.Binarizer.LocalAverage, True),
    (zxingcpp.Binarizer.GlobalHistogram, False),
)
_SHARPEN = ImageFilter.UnsharpMask(radius=3, percent=250, threshold=0)
# (upscale, sharpen, binarizer) tried in turn on a located symbol; chosen on the bench corpus
_ROI_ATTEMPTS = (
    (2, True, zxingcpp.Binarizer.LocalAverage),
    (2, True, zxingcpp.Binarizer.GlobalHistogram),
    (3, False, zxingcpp.Binarizer.GlobalHistogram),
)


class Affine(NamedTuple):
    """Maps view coordinates to frame coordinates: frame = (a*x + b*y + ox, c*x + d*y + oy)."""

    a: float = 1.0
    b: float = 0.0
    c: float = 0.0
    d: float = 1.0
    ox: float = 0.0
    oy: float = 0.0

    def corners(self, barcode: Any) -> Corners:
        """The barcode's corners in frame pixels, clockwise from top-left."""
        pos = barcode.position
        points = [pos.top_left, pos.top_right, pos.bottom_right, pos.bottom_left]
        mapped = tuple(
            (round(self.a * p.x + self.b * p.y + self.ox),
             round(self.c * p.x + self.d * p.y + self.oy))
            for p in points
        )
        if self.a * self.d - self.b * self.c < 0:  # a mirror (transposed view) reverses winding
            mapped = (mapped[0], mapped[3], mapped[2], mapped[1])
        return mapped


IDENTITY = Affine()


class Hit(NamedTuple):
    """A symbol zxing-cpp decoded, and its corners in frame pixels."""

    barcode: Any
    corners: Corners


def parse_formats(names: Sequence[str]) -> tuple[zxingcpp.BarcodeFormat, ...]:
    """zxing-cpp formats for config names; `ConfigError` for unknown or no names."""
    known = ", ".join(sorted(_KNOWN))
    problems = [f"decode.formats: unknown format {name!r}; known: {known}"
                for name in names if name not in _KNOWN]
    if not names:
        problems.append(f"decode.formats: empty; known: {known}")
    if problems:
        raise ConfigError(problems)
    return tuple(dict.fromkeys(f for name in names for f in _ALIASES.get(name, (_KNOWN[name],))))


class Ladder:
    """Reads views of one frame with zxing-cpp for the configured formats."""

    def __init__(self, formats: Sequence[zxingcpp.BarcodeFormat], try_invert: bool) -> None:
        linear = [f for f in formats if f in _LINEAR]
        matrix = [f for f in formats if f not in _LINEAR]
        self.linear = zxingcpp.BarcodeFormats(linear) if linear else None
        self.matrix = zxingcpp.BarcodeFormats(matrix) if matrix else None
        self._invert = try_invert

    def find(self, pixels: npt.NDArray[np.uint8], located: list[Corners]) -> list[Hit]:
        """Run the pass ladder; stop at the first pass that finds anything.

        Symbols located but not decoded are added to `located` (in `pixels` coordinates).
        """
        formats = self.matrix
        if formats is not None and pixels.size >= _HALF_PASS_PIXELS:
            half = Affine(a=2.0, d=2.0)
            hits = self.read(pixels[::2, ::2], formats, half, located,
                             binarizer=zxingcpp.Binarizer.GlobalHistogram)
            if hits:
                return hits
        if self.linear is not None:
            hits = self._read_linear(pixels, self.linear)
            if hits:
                return hits
        if formats is None:
            return []
        return self._matrix_fallback(pixels, formats, located)

    def _matrix_fallback(self, pixels: npt.NDArray[np.uint8], formats: zxingcpp.BarcodeFormats,
                         located: list[Corners]) -> list[Hit]:
        """Full resolution with both binarizers, then a closer look at located symbols.

        The global-histogram pass does not try inverted: the local-average pass before it
        and the half-resolution pass already did (no bench frame needs a third look, and
        it is a tenth of an empty frame's cost).
        """
        for binarizer, invert in _FULL_PASSES:
            hits = self.read(pixels, formats, IDENTITY, located, invert=invert,
                             binarizer=binarizer)
            if hits:
                return hits
        for corners in distinct(located)[:_ROI_LIMIT]:
            hits = self.region(pixels, formats, corners)
            if hits:
                return hits
        return []

    def _read_linear(self, pixels: npt.NDArray[np.uint8],
                     formats: zxingcpp.BarcodeFormats) -> list[Hit]:
        """Linear codes along sparse rows, then sparse columns; each also inverted.

        Only the lines that cross enough bar-like edges (`bar_lines`) are read, stacked:
        a code's lines all qualify, and zxing-cpp's cost follows the lines it is given.
        """
        step = ROW_STEP
        columns = np.ascontiguousarray(pixels[:, ::step]).T  # a strided view is slower
        for view, transposed in ((pixels[::step, :], False), (columns, True)):
            busy = bar_lines(view)
            if busy.size == 0:
                continue
            lines = view[busy]
            hits = self.read(lines, formats, IDENTITY)
            if not hits and self._invert:
                hits = self.read(255 - lines, formats, IDENTITY)
            if hits:
                return [Hit(h.barcode, line_corners(h.corners, busy, step, transposed))
                        for h in hits]
        return []

    def region(self, pixels: npt.NDArray[np.uint8], formats: zxingcpp.BarcodeFormats,
               corners: Corners, ox: int = 0, oy: int = 0) -> list[Hit]:
        """A closer look at a symbol zxing-cpp located but could not decode."""
        xs = [x for x, _ in corners]
        ys = [y for _, y in corners]
        margin = max(8, (max(xs) - min(xs) + max(ys) - min(ys)) // 6)
        h, w = pixels.shape
        x0, y0 = max(0, min(xs) - margin), max(0, min(ys) - margin)
        x1, y1 = min(w, max(xs) + margin), min(h, max(ys) + margin)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return []
        crop = Image.fromarray(np.ascontiguousarray(pixels[y0:y1, x0:x1]))
        views: dict[tuple[int, bool], npt.NDArray[np.uint8]] = {}  # made once, read twice
        for scale, sharpen, binarizer in _ROI_ATTEMPTS:
            view = views.get((scale, sharpen))
            if view is None:
                size = ((x1 - x0) * scale, (y1 - y0) * scale)
                image = crop.resize(size, Image.Resampling.BICUBIC)
                if sharpen:
                    image = image.filter(_SHARPEN)
                view = views[scale, sharpen] = np.asarray(image)
            affine = Affine(a=1.0 / scale, d=1.0 / scale, ox=x0 + ox, oy=y0 + oy)
            hits = self.read(view, formats, affine, binarizer=binarizer)
            if hits:
                return hits
        return []

    def read(self, view: npt.NDArray[np.uint8], formats: zxingcpp.BarcodeFormats, affine: Affine,
             located: list[Corners] | None = None, *, invert: bool = True,
             **options: Any) -> list[Hit]:
        """One zxing-cpp call on `view`; symbols located but not decoded go to `located`.

        `invert` False: not inverted even when the config asks for it."""
        barcodes = zxingcpp.read_barcodes(
            view, formats=formats, try_rotate=False, try_downscale=False,
            try_invert=self._invert and invert, text_mode=zxingcpp.TextMode.Plain,
            return_errors=located is not None, **options,
        )
        hits = []
        for barcode in barcodes:
            if barcode.valid:
                hits.append(Hit(barcode, affine.corners(barcode)))
            elif located is not None:
                located.append(affine.corners(barcode))
        return hits


def distinct(located: list[Corners]) -> list[Corners]:
    """Located symbols without repeats (the same symbol seen by two passes)."""
    kept: list[Corners] = []
    for corners in located:
        cx = sum(x for x, _ in corners) / 4
        cy = sum(y for _, y in corners) / 4
        if not any(min(x for x, _ in k) <= cx <= max(x for x, _ in k)
                   and min(y for _, y in k) <= cy <= max(y for _, y in k) for k in kept):
            kept.append(corners)
    return kept
