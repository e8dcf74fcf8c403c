"""Draw docs/decoding-stages.png: what each decode stage does to hard frames.

Usage: .venv/bin/python bench/decoding_figure.py [--out docs/decoding-stages.png]

One row per weak condition (appliance.sequences, seed 2): the card's region in the first
frame as the camera gave it, the same after the single-frame fix (denoise and stretch, or
flatten), and the stack's combination after six frames (mean, median or min: the one the
Decoder tries first for that region; a phone screen reflecting a lamp: the low, the running
minimum, after twelve frames), each marked with what zxing-cpp read from it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import zxingcpp
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.multiframe import RegionStack
from appliance.preprocess import denoise, flatten, narrow_range, stretch
from appliance.sequences import held_card

CELL = 180
ROWS = (("noise", "mean", 6), ("low_contrast", "mean", 6), ("glare", "min", 6),
        ("screen_glare", "low", 12), ("finger", "median", 6))
QR = zxingcpp.BarcodeFormats([zxingcpp.BarcodeFormat.QRCodeModel2])


def readable(image: np.ndarray, text: str | None) -> bool:
    """Whether zxing-cpp reads `text` from `image` with either binarizer."""
    for binarizer in (zxingcpp.Binarizer.LocalAverage, zxingcpp.Binarizer.GlobalHistogram):
        found = zxingcpp.read_barcodes(image, formats=QR, try_rotate=False,
                                       try_downscale=False, binarizer=binarizer)
        if any(b.text == text for b in found):
            return True
    return False


def fixed(crop: np.ndarray, condition: str) -> tuple[str, np.ndarray]:
    """The single-frame fix the Decoder applies to the region, and its name."""
    if condition in ("glare", "screen_glare", "finger"):
        return "flattened", flatten(crop)
    smooth = denoise(crop)
    return "denoised, stretched", stretch(smooth) if narrow_range(smooth) else smooth


def row(condition: str, combination: str, frames: int) -> list[tuple[str, np.ndarray, bool]]:
    """The cells of one condition's row: (caption, image, read)."""
    seq = held_card(condition, 2)
    assert seq.box is not None
    x0, y0, x1, y1 = seq.box
    pad = 12
    box = (x0 - pad, y0 - pad, x1 + pad, y1 + pad)
    first = seq.frames[0][box[1]:box[3], box[0]:box[2]]
    stack = RegionStack(6)
    stack.start(seq.frames[0], box, glared=combination == "low")
    for pixels in seq.frames[1:frames]:
        stack.follow(pixels, confirmed=True)
    combos = dict(stack.combinations(glare=combination in ("min", "low")))
    combined = combos[combination]
    if narrow_range(combined):
        combined = stretch(combined)
    cells = [(f"{condition}: frame 1", first), fixed(first, condition),
             (f"{combination} of {frames}, aligned", combined)]
    return [(caption, image, readable(image, seq.expected)) for caption, image in cells]


def main() -> None:
    """Render the figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parent.parent / "docs" /
                        "decoding-stages.png")
    args = parser.parse_args()
    label = 18
    sheet = Image.new("L", (3 * CELL, len(ROWS) * (CELL + label)), 255)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    for r, (condition, combination, frames) in enumerate(ROWS):
        for c, (caption, image, read) in enumerate(row(condition, combination, frames)):
            tile = Image.fromarray(np.ascontiguousarray(image)).resize(
                (CELL - 8, CELL - 8), Image.Resampling.NEAREST)
            x, y = c * CELL, r * (CELL + label)
            sheet.paste(tile, (x + 4, y + label))
            draw.text((x + 4, y + 2), f"{caption}: {'read' if read else 'no read'}",
                      fill=0, font=font)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
