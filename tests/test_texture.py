"""Tests for the texture gate: where a matrix code can be, before the full-resolution passes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from appliance import samples
from appliance.config import DecodeConfig
from appliance.ladder import Ladder, parse_formats
from appliance.texture import TILE, textured_box

SIZE = (640, 480)


def counter(seed: int = 3) -> np.ndarray:
    """A gradient counter with flat boxes and a thin line: no 2x2 block of contrast. (A
    diagonal line crossing a box's edge makes one: the gate is cheap, not exact.)"""
    w, h = SIZE
    gx = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    gy = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    image = Image.fromarray(np.clip(90 + 60 * gx + 40 * gy, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    rng = np.random.default_rng(seed)
    for _ in range(5):
        x0, y0 = int(rng.integers(0, w - 200)), int(rng.integers(0, h - 150))
        draw.rectangle((x0, y0, x0 + 180, y0 + 120), fill=int(rng.integers(0, 256)))
    draw.line((10, 400, 620, 400), fill=20, width=3)
    return np.asarray(image).copy()


def test_a_counter_without_texture_has_no_box() -> None:
    assert textured_box(counter()) is None


def test_the_box_holds_a_code_and_little_more() -> None:
    pixels = counter()
    code = samples.render_code("LC-7F3K9Q2M", module_px=3)
    pixels[300:300 + code.shape[0], 400:400 + code.shape[1]] = code
    box = textured_box(pixels)
    assert box is not None
    x0, y0, x1, y1 = box
    side = code.shape[0]
    assert x0 <= 400 + 12 and y0 <= 300 + 12  # the quiet zone (12 px) may be left out
    assert x1 >= 400 + side - 12 and y1 >= 300 + side - 12
    assert (x1 - x0) * (y1 - y0) < 4 * side * side


@pytest.mark.parametrize("contrast", [30, 60, 254])
def test_a_faint_code_still_has_texture(contrast: int) -> None:
    pixels = np.full(SIZE[::-1], 128, np.uint8)
    code = samples.render_code("LC-7F3K9Q2M", module_px=4)
    faint = (128 - contrast // 2 + (code > 127) * contrast).astype(np.uint8)  # <= 255
    pixels[100:100 + code.shape[0], 100:100 + code.shape[1]] = faint
    assert textured_box(pixels) is not None


def test_sensor_noise_makes_every_tile_textured() -> None:
    noisy = samples.noise(counter(), np.random.default_rng(1), 20.0)
    assert textured_box(noisy) == (0, 0, SIZE[0], SIZE[1])


def test_a_view_under_two_tiles_is_taken_whole() -> None:
    view = np.zeros((TILE, 5 * TILE), np.uint8)
    assert textured_box(view) == (0, 0, 5 * TILE, TILE)


class Counting(Ladder):
    """A real ladder that records the shape of every view zxing-cpp is given."""

    def __init__(self) -> None:
        super().__init__(parse_formats(DecodeConfig().formats), True)
        self.views: list[tuple[int, ...]] = []

    def read(self, view: Any, *args: Any, **kwargs: Any) -> Any:
        self.views.append(view.shape)
        return super().read(view, *args, **kwargs)


def test_a_frame_without_texture_skips_the_full_resolution_passes() -> None:
    ladder = Counting()
    assert ladder.find(counter(), []) == []
    assert (SIZE[1] // 2, SIZE[0] // 2) in ladder.views  # the half-resolution pass ran
    assert SIZE[::-1] not in ladder.views


def test_the_full_resolution_passes_read_around_a_small_code_only() -> None:
    pixels = counter()
    code = samples.render_code("LC-7F3K9Q2M", module_px=1)  # too small at half resolution
    pixels[40:40 + code.shape[0], 500:500 + code.shape[1]] = code
    ladder = Counting()
    hits = ladder.find(pixels, [])
    assert [h.barcode.text for h in hits] == ["LC-7F3K9Q2M"]
    full = ladder.views[-1]
    assert full[0] * full[1] < SIZE[0] * SIZE[1] / 4
    (x0, y0), _, (x1, y1), _ = hits[0].corners  # in frame pixels, not the view's
    assert 500 < x0 < x1 < 500 + code.shape[1] and 40 < y0 < y1 < 40 + code.shape[0]
