"""Saved frames for support: PNG files readable by the service user only, deleted after a
set time (`web.frames_keep_h`) and beyond `MAX_SAVED`. A frame can show a card's code, so
it is personal data: it stays on the device and is never served to an anonymous client."""

from __future__ import annotations

import io
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

log = logging.getLogger(__name__)

MAX_SAVED = 50  # the oldest beyond this many are deleted
PREFIX = "frame-"


def save_frame(pixels: npt.NDArray[np.uint8], folder: Path, keep_s: float) -> Path:
    """Write `pixels` as a new PNG (mode 0600) in `folder` (0700) after pruning old ones."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    prune(folder, keep_s, room=1)
    image = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), "L").save(image, "PNG")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    path = folder / f"{PREFIX}{stamp}.png"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(image.getvalue())
    log.info("frame saved: %s (kept %.0f h)", path, keep_s / 3600)
    return path


def prune(folder: Path, keep_s: float, now: float | None = None, room: int = 0) -> int:
    """Delete saved frames older than `keep_s` and the oldest beyond `MAX_SAVED` (less
    `room` for frames about to be saved); how many were deleted."""
    now = time.time() if now is None else now
    try:
        found = sorted((p.stat().st_mtime, p) for p in folder.glob(f"{PREFIX}*.png"))
    except OSError:
        return 0
    doomed = [p for mtime, p in found if now - mtime > keep_s]
    kept = [p for mtime, p in found if now - mtime <= keep_s]
    doomed += kept[: max(0, len(kept) + room - MAX_SAVED)]
    removed = 0
    for path in doomed:
        try:
            path.unlink()
            removed += 1
        except OSError as exc:
            log.warning("cannot delete the saved frame %s: %s", path, exc)
    return removed
