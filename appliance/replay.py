"""`ReplaySource`: PNG/JPEG files (a folder: its images in name order) decoded once at
construction and played at a set pace, the camera of the demo, the tests and every machine
without one.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from appliance.errors import CameraError
from appliance.source import MAX_HEIGHT, MAX_WIDTH, Frame

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})


class ReplaySource:
    """Frames from PNG/JPEG files (a folder means its images in name order), paced at `fps`."""

    def __init__(
        self,
        paths: Sequence[Path],
        fps: float,
        loop: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], object] = time.sleep,
    ) -> None:
        if fps < 0:
            raise CameraError(f"replay fps must be 0 (as fast as possible) or more, not {fps}")
        self._images = _load_all(_image_files(paths))
        self._interval = 1.0 / fps if fps else 0.0
        self._loop = loop
        self._clock = clock
        self._wait = wait
        self._index = 0
        self._sequence = 0
        self._due: float | None = None
        self._closed = False
        self.ev_requests: deque[float] = deque(maxlen=64)  # what glare steering asked for
        log.info("replaying %d image(s) at %s fps%s", len(self._images), fps or "max",
                 ", looping" if loop else "")

    def read(self) -> Frame | None:
        """The next image, waiting until it is due; None after the last unless looping."""
        if self._closed:
            return None
        if self._index == len(self._images):
            if not self._loop:
                return None
            self._index = 0
        if self._interval:
            now = self._clock()
            if self._due is None or now - self._due > self._interval:
                self._due = now  # first frame, or fell behind: restart the schedule, no burst
            elif self._due > now:
                self._wait(self._due - now)
            self._due += self._interval
        pixels = self._images[self._index]
        self._index += 1
        self._sequence += 1
        return Frame(pixels, self._clock(), self._sequence)

    def close(self) -> None:
        """End the stream (the images are already in memory)."""
        self._closed = True

    def set_ev(self, ev: float) -> None:
        """Recorded in `ev_requests` (bounded) only: replayed images cannot change."""
        self.ev_requests.append(ev)


def _image_files(paths: Sequence[Path]) -> list[Path]:
    """The files named, with each folder replaced by its PNG/JPEG files in name order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise CameraError(f"{path}: folder has no .png, .jpg or .jpeg files")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise CameraError(f"{path}: no such file or folder")
    if not files:
        raise CameraError("replay: no image files given")
    return files


def _load_all(files: Sequence[Path]) -> list[npt.NDArray[np.uint8]]:
    """Every file decoded; identical files (same bytes) share one read-only array, so a
    long replay of mostly empty frames costs the memory of its distinct images only."""
    decoded: dict[bytes, npt.NDArray[np.uint8]] = {}
    images = []
    for path in files:
        try:
            digest = hashlib.sha256(path.read_bytes()).digest()
        except OSError as exc:
            raise CameraError(f"{path}: cannot read ({exc})") from exc
        if digest not in decoded:
            decoded[digest] = _load_gray(path)
        images.append(decoded[digest])
    return images


def _load_gray(path: Path) -> npt.NDArray[np.uint8]:
    """`path` decoded (PNG or JPEG only) to a read-only contiguous grayscale array."""
    try:
        with Image.open(path, formats=["PNG", "JPEG"]) as image:
            width, height = image.size
            if width > MAX_WIDTH or height > MAX_HEIGHT:
                raise CameraError(
                    f"{path}: image is {width}x{height}, larger than {MAX_WIDTH}x{MAX_HEIGHT}"
                )
            image.load()
            if "A" in image.getbands() or "transparency" in image.info:
                # Transparent pixels would turn black: put the image on white paper.
                paper = Image.new("RGBA", image.size, "white")
                gray = Image.alpha_composite(paper, image.convert("RGBA")).convert("L")
            else:
                gray = image.convert("L")
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise CameraError(f"{path}: not a readable PNG or JPEG image ({exc})") from exc
    pixels = np.array(gray, dtype=np.uint8)
    pixels.flags.writeable = False  # shared by every loop of the replay
    return pixels
