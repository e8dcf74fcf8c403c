"""Find codes in a grayscale frame with zxing-cpp, over frames: the scene, the weak
conditions and the symbols followed.

A frame of the same scene as the last one read repeats its result, and a partly changed
scene without codes is read only where it changed (stillness.py). What is read goes
through the ladder of cheap passes (ladder.py: the only module that calls zxing-cpp),
then, when that read nothing:

5. a noisy or faint frame denoised and stretched (preprocess.py);
6. a located-but-unread symbol (or the busiest region of a noisy, faint or glared frame; a
   glared one grown over its glare and followed while the glare moves) followed over
   frames; aligned combinations of its crops read within a time budget (multiframe.py).
   docs/decoding.md shows each stage on hard frames.

What was read is then judged (payload.py): binary payloads, over-long texts and control
characters are refused (`Rejected`), and logged without the payload (it may be personal data).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import zxingcpp
from PIL import Image

from appliance.config import DecodeConfig
from appliance.ladder import IDENTITY, Affine, Corners, Hit, Ladder, distinct, parse_formats
from appliance.multiframe import (
    GLARE_PATIENCE,
    GLARE_STILL,
    RegionStack,
    fitted,
)
from appliance.payload import judge
from appliance.preprocess import (
    SATURATED,
    SATURATED_DENOISED,
    busiest_box,
    denoise,
    flatten,
    glare_fraction,
    narrow_range,
    noise_level,
    stretch,
    with_glare,
)
from appliance.source import Frame
from appliance.stillness import TILE, Box, Thumb, change, thumbnail

log = logging.getLogger(__name__)


_NEW_SCENE = 0.6  # a change over this share of the frame is read in full, as a new scene
_REVEAL_TILES = 4  # changed tiles that may have uncovered part of a code (see _to_read)
_NOISY = 6.0  # estimated noise (grey levels) above which a failed frame is denoised
_GLARE_SHARE = 0.04  # saturated share of a followed region that calls for less exposure
_GLARE_ADVICE_EV = -1.0
_GLARE_PIXELS = 400  # saturated pixels (estimated) that make a frame worth a guessed region
_GLARE_REST = 8  # stack depths without a new guess after one dropped for unmoving glare
@dataclass(frozen=True, slots=True)
class Scan:
    """A code read from a frame and accepted."""

    text: str
    format: str  # zxing-cpp format name, e.g. "QRCode"
    position: Corners  # top-left, top-right, bottom-right, bottom-left, in frame pixels
    timestamp: float  # the frame's time.monotonic() timestamp


@dataclass(frozen=True, slots=True)
class Rejected:
    """A code that was read but refused (binary, too long, control characters).

    `text` is what was read, for the technician's `decode`; it may be personal data, so it
    is left out of `repr` and equality, and never logged.
    """

    reason: str
    format: str
    timestamp: float
    text: str = field(default="", repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class DecodeResult:
    """Everything one frame yielded.

    `advice` is a suggested exposure change in EV stops for the camera layer (negative:
    darker, e.g. -1.0 when glare saturates a located symbol); 0.0 when there is none.
    """

    scans: tuple[Scan, ...]
    rejected: tuple[Rejected, ...]
    advice: float = 0.0


class Decoder:
    """Reads codes from frames; `decode` is safe to call from one thread at a time."""

    def __init__(self, cfg: DecodeConfig) -> None:
        self._ladder = Ladder(parse_formats(cfg.formats), cfg.try_invert)
        self._matrix = self._ladder.matrix
        self._max_length = cfg.max_text_length
        self._still_threshold = cfg.still_threshold
        self._recheck = cfg.still_recheck_frames
        self._reference: Thumb | None = None  # thumbnail of the last frame read in full
        self._unread: Box | None = None  # changed parts read alone (nothing found) since the
        # last read of them whole: see `decode`
        self._last = DecodeResult((), ())
        self._repeats = 0
        self._preprocess = cfg.preprocess
        self._stack = RegionStack(cfg.multiframe_frames)
        self._budget_s = cfg.multiframe_budget_ms / 1000
        self._weak: npt.NDArray[np.uint8] | None = None  # this frame's denoised region
        self._weak_wait = 0  # frames before the busiest region may be followed again
        self._weak_glare = False  # the guess comes from glare, not noise or a faint frame
        self._follow_still = True  # the followed region is read in still frames too
        self._located = False  # the followed region was located by zxing-cpp (not guessed)
        self._fruitless = 0  # frames the followed region has been tried without a read
        self._noisy = self._narrow = False  # the scene, as measured at its last full read
        self._noise = 0.0  # the scene's sensor noise (grey levels), from its last full read

    def decode(self, frame: Frame) -> DecodeResult:
        """Every code in `frame`, accepted or rejected; no code is an empty result.

        A frame of the same scene as the last one read (stillness.py) repeats that result
        with this frame's timestamp; when only part of a scene without codes changed, only
        that part is read. Such parts are remembered until the change there ends (a still
        frame, or a change elsewhere): that frame is read in full, as a code revealed piece
        by piece (a finger sliding off a still card) was never whole in any part read.
        Every `still_recheck_frames`-th frame is read in full anyway.
        """
        pixels = _checked(frame.pixels)
        h, w = pixels.shape
        box: Box | None = (0, 0, w, h)
        thumb, small = None, False
        if self._still_threshold > 0:
            thumb = thumbnail(pixels)
            found = change(thumb, self._reference, self._still_threshold, self._noise)
            box = None if found is None else found.box
            small = found is not None and found.tiles < _REVEAL_TILES
            if box is not None and _area(_whole_tiles(box, w, h)) >= _NEW_SCENE * w * h:
                self._stack.clear()  # another scene: what was followed is gone
        if self._repeats + 1 >= self._recheck or self._last.scans or self._last.rejected:
            box = None if box is None and self._repeats + 1 < self._recheck else (0, 0, w, h)
        if box is None and self._stack.box is not None and self._follow_still:
            box = (0, 0, w, h)  # a symbol is being followed: every frame counts
        unread, self._unread = self._unread, None
        if box is None and unread is None:
            self._repeats += 1
            return _restamped(self._last, frame.timestamp)
        (x0, y0, x1, y1), unread = _to_read(box, unread, w, h, small)
        if _area((x0, y0, x1, y1)) >= _NEW_SCENE * w * h:
            x0, y0, x1, y1 = 0, 0, w, h
            self._repeats = 0
            self._noise = noise_level(pixels)  # the scene's, for telling change from noise
            unread = None
        else:
            self._repeats += 1  # the rest of the frame was not read again
        self._reference = thumb
        start = time.perf_counter()
        located: list[Corners] = []
        hits = _shifted(self._find(pixels[y0:y1, x0:x1], located), x0, y0)
        self._weak, self._weak_glare = None, False
        if not hits and self._preprocess:
            whole = (x1 - x0, y1 - y0) == (w, h)
            hits = _shifted(self._preprocessed(pixels[y0:y1, x0:x1], located, whole), x0, y0)
        located = [tuple((x + x0, y + y0) for x, y in c) for c in located]
        advice = 0.0
        if hits:
            self._stack.clear()
        elif self._stack.depth > 1:
            weak = None
            if (self._weak is not None and not located and self._stack.box is None
                    and self._weak_wait <= 1):  # _multiframe counts it down first
                weak = self._guess(self._weak)  # zxing-cpp located nothing
            if weak is not None:
                weak = (weak[0] + x0, weak[1] + y0, weak[2] + x0, weak[3] + y0)
            hits, advice = self._multiframe(pixels, located, weak, start + self._budget_s)
        # read alone, what changed may be part of a code: read again when it settles
        self._unread = None if hits else unread
        self._last = self._judged(hits, frame.timestamp, advice)
        return self._last

    def _find(self, pixels: npt.NDArray[np.uint8], located: list[Corners]) -> list[Hit]:
        """The ladder on `pixels` (this frame's region to read)."""
        return self._ladder.find(pixels, located)

    def _judged(self, hits: list[Hit], timestamp: float, advice: float) -> DecodeResult:
        """Judge what was read: accepted scans and refused codes."""
        scans: list[Scan] = []
        rejected: list[Rejected] = []
        for hit in hits:
            fmt = hit.barcode.format.name
            text, reason = judge(hit.barcode, self._max_length)
            if reason is None:
                scans.append(Scan(text, fmt, hit.corners, timestamp))
            else:
                log.info("rejected a %s code of %d characters: %s", fmt, len(text), reason)
                rejected.append(Rejected(reason, fmt, timestamp, text))
        return DecodeResult(tuple(scans), tuple(rejected), advice)

    def _preprocessed(self, pixels: npt.NDArray[np.uint8], located: list[Corners],
                      whole: bool) -> list[Hit]:
        """Matrix codes in a denoised (noisy frames) or stretched (faded, hazy) `pixels`.

        Noise and haze belong to the scene: measured when the whole frame is read and
        kept for the reads of its changed parts (`whole` False).
        """
        if self._matrix is None:
            return []
        if whole:
            self._noisy, self._narrow = self._noise > _NOISY, narrow_range(pixels)
        noisy, narrow = self._noisy, self._narrow
        fixed: list[npt.NDArray[np.uint8]] = []
        if noisy or narrow:
            fixed.append(denoise(pixels))  # stretching noise would only make it louder
        self._weak = fixed[0] if fixed else pixels
        # a glare spot may hide a finder pattern: guess the region (then not again for a
        # while: bright clutter is common and must not cost every frame); measured on the
        # denoised frame, and not in heavy noise, as clipped sensor noise saturates too
        level = SATURATED_DENOISED if fixed else SATURATED
        self._weak_glare = (self._noise < 4 * _NOISY and pixels.size
                            * glare_fraction(self._weak[::4, ::4], level) > _GLARE_PIXELS)
        if not (noisy or narrow or self._weak_glare):
            self._weak = None
        if narrow:  # read stretched only: a band this narrow is below the binarizers' reach
            fixed = [stretch(fixed[0])]
        binarizers = (zxingcpp.Binarizer.LocalAverage, zxingcpp.Binarizer.GlobalHistogram)
        for image in fixed:
            for binarizer in binarizers:
                hits = self._ladder.read(image, self._matrix, IDENTITY, located,
                                         binarizer=binarizer)
                if hits:
                    return hits
        return []

    def _guess(self, weak: npt.NDArray[np.uint8]) -> Box | None:
        """Where in the noisy, faint or glared `weak` (this read's region, fixed) a symbol
        zxing-cpp could not locate most likely is: its busiest tiles, grown over the glare
        in and next to them. Glare away from the busy tiles hides nothing of them: a frame
        that is neither noisy nor faint then has no guess (a white sheet beside clutter).
        """
        box = busiest_box(weak)
        if box is None or not self._weak_glare:
            return box
        grown = with_glare(weak, box)
        if grown is not None:
            return grown
        self._weak_glare = False  # followed, if at all, for noise or faint print
        return box if self._noisy or self._narrow else None

    def _multiframe(self, pixels: npt.NDArray[np.uint8], located: list[Corners],
                    weak: Box | None, deadline: float) -> tuple[list[Hit], float]:
        """Follow a located-but-unread symbol (or, in a noisy or faint frame, the busiest
        region: `weak`; in a glared one, that region grown over the glare, followed while
        the glare moves and read by its running minimum every few frames); read
        combinations of its aligned crops.

        Returns what was read and the exposure advice for the region (multiframe.py).
        """
        stack = self._stack
        boxes = [_box_around(c) for c in distinct(located)]
        self._weak_wait = max(0, self._weak_wait - 1)
        if stack.box is not None:
            x0, y0, x1, y1 = stack.box
            inside = [b for b in boxes if x0 <= (b[0] + b[2]) / 2 <= x1
                      and y0 <= (b[1] + b[3]) / 2 <= y1]
            glared = stack.glared
            lost = not stack.follow(pixels, confirmed=bool(inside))
            if lost and glared:  # a glare guess ran out: no new one for a while
                self._weak_wait = 3 * stack.depth
            if lost and boxes:
                self._follow_still = self._located = stack.start(pixels, boxes[0])
                self._fruitless = 0
        elif boxes:
            self._follow_still = self._located = stack.start(pixels, boxes[0])
            self._fruitless = 0
        elif weak is not None and not self._weak_wait:
            # a guess, not a located symbol: tried briefly, and not again for a while
            self._weak_wait = 3 * stack.depth
            if self._weak_glare:  # one look at the flattened region, then followed until
                # the glare moves off (the box grown over the glare next to it)
                weak = fitted(weak, pixels.shape)
                hits = self._read_guess(pixels, weak, deadline)
                if hits or not stack.start(pixels, weak, patience=GLARE_PATIENCE * stack.depth,
                                           glared=True):
                    return hits, 0.0
                # a still scene (a white sheet on the counter) is not read again for it
                self._follow_still, self._located, self._fruitless = False, False, 0
                return [], 0.0
            if stack.start(pixels, weak, patience=stack.depth):
                self._follow_still, self._located, self._fruitless = True, False, 0
        if stack.box is None or self._matrix is None:
            return [], 0.0
        self._fruitless += 1
        if self._fruitless > 2 * stack.depth:
            self._follow_still = False  # clutter zxing-cpp keeps locating: only on change
        x0, y0, x1, y1 = stack.box
        region = pixels[y0:y1, x0:x1]
        # clipped sensor noise saturates too: glare only where the region is not noisy
        glare = stack.glared or (glare_fraction(region) > _GLARE_SHARE
                                 and noise_level(region) < 3 * _NOISY)
        # advice only for a located symbol: a guessed region may be a white sheet
        advice = _GLARE_ADVICE_EV if glare and self._located else 0.0
        guessed_glare = stack.glared and not self._located
        if guessed_glare and stack.glare_still >= GLARE_STILL:  # a white sheet on the
            stack.clear()  # counter, not a tilting phone: dropped, and no new guess soon
            self._weak_wait = 3 * stack.depth
            return [], advice
        if guessed_glare and not stack.added:
            return [], advice  # looked at every few frames (multiframe.py)
        tried: list[npt.NDArray[np.uint8]] = []
        # every combination cheaply first, then closer looks; a guessed region: the newest
        # crop and the mean only (noise, faint print), no closer looks; a region guessed
        # from glare: its minimum only (the newest was read with the frame)
        for closer in (False, True) if self._located else (False,):
            combos = (stack.combinations(glare if self._located else stack.glared,
                                         every=self._located) if not closer
                      else (("", i) for i in tried))
            for name, image in combos:
                if time.perf_counter() > deadline:
                    return [], advice
                if guessed_glare and name == "newest":
                    continue
                hits = self._read_combined(image, self._matrix, x0, y0, deadline,
                                           closer=closer)
                if hits:
                    stack.confirm()
                    self._weak_wait = self._fruitless = 0
                    return hits, advice
                if not closer and name != "newest":
                    tried.append(image)
        return [], advice

    def _read_guess(self, pixels: npt.NDArray[np.uint8], box: Box,
                    deadline: float) -> list[Hit]:
        """One look at a guessed region of a glared frame, fixed as a followed crop is."""
        x0, y0, x1, y1 = max(0, box[0]), max(0, box[1]), box[2], box[3]
        crop = pixels[y0:y1, x0:x1]
        if self._matrix is None or min(crop.shape) < 3:
            return []
        hits = self._read_combined(crop, self._matrix, x0, y0, deadline, closer=False,
                                   seen=True)
        if hits:
            self._weak_wait = 0
        return hits

    def _read_combined(self, image: npt.NDArray[np.uint8], formats: zxingcpp.BarcodeFormats,
                       x0: int, y0: int, deadline: float, *, closer: bool,
                       seen: bool = False) -> list[Hit]:
        """One crop of the followed region: as it is and fixed (denoised, stretched,
        flattened) with both binarizers; `closer`: at half size and upscaled instead.
        `seen`: the crop is part of the frame just read, whose local-average pass saw it
        alike (its global histogram differs: the crop is read with that binarizer).

        A region guessed from glare is read as it is (local average) and flattened (both
        binarizers) only: on 36 screen-glare cards (bench/decode.py) the reads left out
        read no card these miss, and without them the same cards are read sooner.
        """
        affine = Affine(ox=x0, oy=y0)
        local, histogram = zxingcpp.Binarizer.LocalAverage, zxingcpp.Binarizer.GlobalHistogram
        views = [image]
        if self._preprocess and self._stack.glared and not self._located and not closer:
            flat = flatten(image)
            attempts = [(image, local), (flat, local), (flat, histogram)]
        else:
            if self._preprocess:
                if noise_level(image) > _NOISY:
                    views.append(denoise(image))
                if narrow_range(views[-1]):
                    views.append(stretch(views[-1]))
                views.append(flatten(views[-1]))  # glare rims, uneven light
            if closer:
                return self._read_closer(views[-2 if len(views) > 1 else -1], formats, x0, y0,
                                         deadline)
            attempts = [(view, binarizer) for view in views for binarizer in (local, histogram)]
        for view, binarizer in attempts:
            if seen and view is image and binarizer == local:
                continue
            hits = self._ladder.read(view, formats, affine, binarizer=binarizer)
            if hits or time.perf_counter() > deadline:
                return hits
        return []

    def _read_closer(self, image: npt.NDArray[np.uint8], formats: zxingcpp.BarcodeFormats,
                     x0: int, y0: int, deadline: float) -> list[Hit]:
        """A crop at half size (blur spread over two pixels), then upscaled and sharpened."""
        half = np.asarray(Image.fromarray(image).reduce(2))
        hits = self._ladder.read(half, formats, Affine(a=2.0, d=2.0, ox=x0, oy=y0))
        if hits or time.perf_counter() > deadline:
            return hits
        h, w = image.shape
        return self._ladder.region(image, formats, ((0, 0), (w, 0), (w, h), (0, h)), x0, y0)

def _checked(pixels: Any) -> npt.NDArray[np.uint8]:
    """The frame's pixels if they are a 2-D uint8 array zxing-cpp can read in place (an
    (H, W, 1) array is taken as its one channel)."""
    if isinstance(pixels, np.ndarray) and pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 2:
        kind = f"{pixels.dtype} array of {pixels.ndim} dimensions" if isinstance(
            pixels, np.ndarray) else type(pixels).__name__
        raise ValueError(f"frame pixels must be a 2-D uint8 array (grayscale), got {kind}")
    if pixels.size == 0:  # zxing-cpp's own error would not say which frame was wrong
        raise ValueError(f"frame pixels must be a 2-D uint8 array (grayscale) with pixels, "
                         f"got {pixels.shape[1]}x{pixels.shape[0]}")
    if min(pixels.strides) <= 0:  # flipped or broadcast views: zxing-cpp needs positive strides
        return np.ascontiguousarray(pixels)
    return pixels


def _shifted(hits: list[Hit], ox: int, oy: int) -> list[Hit]:
    """`hits` with corners moved by (ox, oy)."""
    if not ox and not oy:
        return hits
    return [Hit(h.barcode, tuple((x + ox, y + oy) for x, y in h.corners)) for h in hits]


def _box_around(corners: Corners) -> Box:
    """The bounding box of `corners` grown by a sixth of its size and 8 pixels."""
    xs = [x for x, _ in corners]
    ys = [y for _, y in corners]
    margin = 8 + (max(xs) - min(xs) + max(ys) - min(ys)) // 12
    return (min(xs) - margin, min(ys) - margin, max(xs) + margin, max(ys) + margin)


def _area(box: Box) -> int:
    """Pixels in `box`."""
    x0, y0, x1, y1 = box
    return (x1 - x0) * (y1 - y0)


def _to_read(box: Box | None, unread: Box | None, w: int, h: int,
             small: bool) -> tuple[Box, Box | None]:
    """The part of a w x h frame to read, given the changed `box` (None: still; `small`:
    under `_REVEAL_TILES` tiles changed) and the parts read alone before (`unread`, None:
    none); and the parts read alone by then.

    Where the change goes on, its parts add up; where it ended (a still frame, or a change
    elsewhere only), the whole frame is read: a code may reach beyond the parts. A small
    change alone is not kept: sensor noise, a hot pixel or a blinking light would make
    every next frame a whole one (a code uncovered that little at a time waits for the
    full read every `still_recheck_frames`).
    """
    if box is None:
        return (0, 0, w, h), None
    part = _whole_tiles(box, w, h)
    if unread is None:
        return part, None if small else part
    if _overlap(part, unread):
        return part, _union(part, unread)
    return (0, 0, w, h), None


def _overlap(a: Box, b: Box) -> bool:
    """Whether boxes `a` and `b` share a pixel or an edge."""
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def _union(a: Box, b: Box) -> Box:
    """The smallest box holding `a` and `b`."""
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _whole_tiles(box: Box, w: int, h: int) -> Box:
    """`box`, reaching the frame's edge where it touches the last whole tile (or is empty)."""
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        return (0, 0, w, h)
    return (x0, y0, w if x1 + TILE > w else x1, h if y1 + TILE > h else y1)


def _restamped(result: DecodeResult, timestamp: float) -> DecodeResult:
    """`result` as seen again at `timestamp`."""
    if not result.scans and not result.rejected:
        return result
    return DecodeResult(
        tuple(replace(scan, timestamp=timestamp) for scan in result.scans),
        tuple(replace(r, timestamp=timestamp) for r in result.rejected),
        result.advice,
    )


