"""Frame sources: the `FrameSource` seam, picamera2 on the Pi, image replay everywhere else."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class Frame:
    """One grayscale frame.

    `pixels` is 2-D (height, width) uint8 and may be a strided view into a camera buffer
    (no copy); `timestamp` is `time.monotonic()` seconds at capture; `sequence` counts up.
    """

    pixels: npt.NDArray[np.uint8]
    timestamp: float
    sequence: int


class FrameSource(Protocol):
    """Anything that yields frames."""

    def read(self) -> Frame | None:
        """The next frame (blocking for at most about one frame interval); None at end of stream."""
        ...

    def close(self) -> None:
        """Release the device or files."""
        ...
