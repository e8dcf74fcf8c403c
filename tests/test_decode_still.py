"""Tests for cheaper empty frames: the thumbnail difference and the Decoder's shortcut."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from appliance import samples
from appliance.config import DecodeConfig
from appliance.decode import Decoder
from appliance.preprocess import noise_level
from appliance.source import Frame
from appliance.stillness import TILE, Change, change, changed_box, thumbnail

TEXT = "LC-7F3K9Q2M"
SIZE = (640, 480)


def scene(seed: int = 4) -> np.ndarray:
    return samples.background(SIZE, np.random.default_rng(seed))


def noisy(pixels: np.ndarray, seed: int, sigma: float = 3.0) -> np.ndarray:
    return samples.noise(pixels, np.random.default_rng(seed), sigma)


def with_code(pixels: np.ndarray, x: int, y: int, module_px: int = 5) -> np.ndarray:
    code = samples.render_code(TEXT, module_px=module_px)
    out = pixels.copy()
    out[y:y + code.shape[0], x:x + code.shape[1]] = code
    return out


class CountingDecoder(Decoder):
    """A real Decoder that counts the pixels it reads in full (its ladder runs)."""

    def __init__(self, cfg: DecodeConfig) -> None:
        super().__init__(cfg)
        self.areas: list[int] = []

    def _find(self, pixels: Any, located: Any) -> Any:
        self.areas.append(pixels.shape[0] * pixels.shape[1])
        return super()._find(pixels, located)


def test_thumbnail_sums_every_fourth_pixel_of_each_tile() -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (200, 330), dtype=np.uint8)
    thumb = thumbnail(pixels)
    assert thumb.shape == (200 // TILE, 330 // TILE)
    expected = pixels[:192:4, :320:4].astype(np.int32).reshape(12, 4, 20, 4).sum(axis=(1, 3))
    assert np.array_equal(thumb, expected)
    assert thumbnail(np.zeros((8, 640), np.uint8)).size == 0


@pytest.mark.parametrize("sigma", [2.0, 12.0, 30.0])
def test_fresh_sensor_noise_is_the_same_scene(sigma: float) -> None:
    base = scene()
    first = noisy(base, 1, sigma)
    a, b = thumbnail(first), thumbnail(noisy(base, 2, sigma))
    assert changed_box(b, a, 6.0, noise_level(first)) is None


@pytest.mark.parametrize("sigma", [0.0, 30.0])
def test_a_whole_new_scene_is_a_change_whatever_the_noise(sigma: float) -> None:
    first, second = noisy(scene(4), 1, sigma), noisy(scene(5), 2, sigma)
    box = changed_box(thumbnail(second), thumbnail(first), 6.0, noise_level(first))
    assert box is not None
    x0, y0, x1, y1 = box
    assert (x1 - x0) * (y1 - y0) > 0.6 * SIZE[0] * SIZE[1]


def test_unrelated_frames_through_one_decoder_are_each_read() -> None:
    decoder = Decoder(DecodeConfig())
    for i in range(6):
        rng = np.random.default_rng(i)
        code = samples.render_code(f"LC-NEW{i:05d}", module_px=4)
        pixels = samples.place(code, samples.background(SIZE, rng), rng)
        texts = [s.text for s in decoder.decode(Frame(pixels, float(i), i)).scans]
        assert texts == [f"LC-NEW{i:05d}"]


def lit(pixels: np.ndarray, gain: float) -> np.ndarray:
    return np.clip(np.rint(pixels * gain), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("gain", [1.0, 1.06, 0.5])  # while the light changes too (0.5: a
# lamp switched off, far beyond what clipping explains)
def test_a_card_entering_changes_the_tiles_it_covers(gain: float) -> None:
    base = scene()
    before = thumbnail(noisy(base, 1))
    after = thumbnail(noisy(lit(with_code(base, 300, 200), gain), 2))
    box = changed_box(after, before, 6.0)
    assert box is not None
    x0, y0, x1, y1 = box
    code_side = samples.render_code(TEXT, module_px=5).shape[0]
    assert x0 <= 300 and y0 <= 200 and x1 >= 300 + code_side and y1 >= 200 + code_side
    assert (x1 - x0) * (y1 - y0) < SIZE[0] * SIZE[1] / 2  # only around the card


@pytest.mark.parametrize("gain", [0.92, 0.97, 1.03, 1.08])
def test_a_change_of_the_light_alone_is_the_same_scene(gain: float) -> None:
    # a lamp's flicker or the camera's exposure scales every tile: nothing new to read
    base = scene()
    first = noisy(base, 1)
    assert changed_box(thumbnail(first), thumbnail(noisy(lit(base, 1.0), 2)), 6.0) is None
    moved = changed_box(thumbnail(noisy(lit(base, gain), 2)), thumbnail(first), 6.0,
                        noise_level(first))
    assert moved is None


def test_flickering_light_on_a_still_scene_is_not_read_again() -> None:
    base = scene()
    decoder = CountingDecoder(DecodeConfig())
    for i in range(30):
        gain = 1.0 + 0.05 * np.sin(2 * np.pi * i / 7.3)
        decoder.decode(Frame(noisy(lit(base, gain), i), i / 30, i))
    assert len(decoder.areas) == 1  # the first frame only



def test_a_change_counts_the_tiles_that_moved() -> None:
    base = scene()
    reference = thumbnail(base)
    lit_pixel = base.copy()
    lit_pixel[64, 64] = 255 if base[64, 64] < 128 else 0  # one sampled pixel: one tile
    found = change(thumbnail(lit_pixel), reference, 6.0)
    assert found == Change((48, 48, 96, 96), 1)
    card = change(thumbnail(with_code(base, 300, 200)), reference, 6.0)
    assert card is not None and card.tiles >= 25
    assert change(reference, reference, 6.0) is None
    assert change(reference, None, 6.0) == Change((0, 0, 0, 0), 0)

def test_without_a_comparable_reference_everything_changed() -> None:
    thumb = thumbnail(scene())
    assert changed_box(thumb, None, 6.0) == (0, 0, 0, 0)
    assert changed_box(thumb, thumb[:-1], 6.0) == (0, 0, 0, 0)


def test_a_card_appearing_in_a_still_scene_is_read_in_that_frame() -> None:
    decoder = CountingDecoder(DecodeConfig())
    base = scene()
    for i in range(5):
        assert decoder.decode(Frame(noisy(base, i), i / 30, i)).scans == ()
    assert len(decoder.areas) == 1  # the still frames after the first were not read again
    result = decoder.decode(Frame(noisy(with_code(base, 420, 260), 9), 5 / 30, 5))
    assert [s.text for s in result.scans] == [TEXT]
    assert decoder.areas[-1] < SIZE[0] * SIZE[1] / 2  # only the changed part was read
    xs = [x for x, _ in result.scans[0].position]
    ys = [y for _, y in result.scans[0].position]
    assert 420 + 20 - 8 <= min(xs) <= 420 + 20 + 8  # frame coordinates (quiet zone 20 px)
    assert 260 + 20 - 8 <= min(ys) <= 260 + 20 + 8


def test_a_still_card_repeats_its_scan_with_each_frames_timestamp() -> None:
    decoder = CountingDecoder(DecodeConfig())
    pixels = with_code(scene(), 100, 100)
    stamps = [decoder.decode(Frame(noisy(pixels, i), 10 + i, i)).scans[0].timestamp
              for i in range(4)]
    assert stamps == [10, 11, 12, 13]
    assert len(decoder.areas) == 1


def test_a_still_scene_is_read_in_full_every_recheck_frames() -> None:
    decoder = CountingDecoder(DecodeConfig(still_recheck_frames=4))
    base = scene()
    for i in range(9):
        decoder.decode(Frame(noisy(base, i), i / 30, i))
    assert decoder.areas == [SIZE[0] * SIZE[1]] * 3  # frames 0, 4 and 8


def test_threshold_zero_reads_every_frame_in_full() -> None:
    decoder = CountingDecoder(DecodeConfig(still_threshold=0))
    base = scene()
    for i in range(3):
        decoder.decode(Frame(base, i / 30, i))
    assert decoder.areas == [SIZE[0] * SIZE[1]] * 3


def test_a_frame_of_another_size_is_read_in_full() -> None:
    decoder = CountingDecoder(DecodeConfig())
    decoder.decode(Frame(scene(), 0.0, 0))
    smaller = with_code(samples.background((320, 240), np.random.default_rng(2)), 20, 20, 3)
    assert [s.text for s in decoder.decode(Frame(smaller, 0.1, 1)).scans] == [TEXT]
    assert decoder.areas[-1] == 320 * 240


@pytest.mark.parametrize(("fmt", "text", "formats"), [
    ("Code128", "LC-48213", ("QRCode", "Code128")),
    ("EAN13", "5901234123457", ("QRCode", "EAN13")),
    ("MicroQRCode", "LC-1234", ("QRCode", "MicroQRCode")),
])
def test_other_formats_appearing_in_a_still_scene_are_read_in_that_frame(
    fmt: str, text: str, formats: tuple[str, ...]
) -> None:
    decoder = CountingDecoder(DecodeConfig(formats=formats))
    base = scene()
    for i in range(3):
        decoder.decode(Frame(noisy(base, i), i / 30, i))
    code = samples.render_code(text, fmt, module_px=3)
    shown = base.copy()
    shown[200:200 + code.shape[0], 150:150 + code.shape[1]] = code
    result = decoder.decode(Frame(noisy(shown, 7), 0.1, 3))
    assert [(s.text, s.format) for s in result.scans] == [(text, fmt)]
    assert decoder.areas[-1] < SIZE[0] * SIZE[1]  # read in the changed part only



def revealed(decoder: Decoder, speed: int, after: str) -> tuple[int, int, int | None]:
    """A still code, its right 60% under a flat occluder that slides off it at `speed`
    pixels a frame, then "stops" just past the code, "leaves" the view, or stops while
    something starts moving far off ("moves away"; starting in the same frame, the two
    changes would make one box, which waits for `still_recheck_frames`). The frame the
    code is whole, the first frame with no change near it, and the frame the code was
    first read (None: not by then)."""
    base = scene()
    code = samples.render_code(TEXT, module_px=4)
    side = code.shape[0]
    x, y = 120, 150
    pixels = with_code(base, x, y)
    stop = SIZE[0] if after == "leaves" else x + side + 10
    whole = ended = -1
    read = None
    left = x + int(side * 0.4)
    for i in range(200):
        frame = pixels.copy()
        if after == "moves away" and ended >= 0:
            frame[380:440, 20 + 9 * i:80 + 9 * i] = 30  # a blob far below, moving
        frame[y - 20:y + side + 20, left:left + 120] = 90
        if whole < 0 and left >= x + side:
            whole = i
        result = decoder.decode(Frame(noisy(frame, i), i / 30, i))
        if read is None and [s.text for s in result.scans] == [TEXT]:
            read = i
        if ended < 0 and left == stop:
            ended = i
        if ended >= 0 and i >= ended + 3:
            break
        left = min(left + speed, stop)
    return whole, ended, read


@pytest.mark.parametrize("after", ["stops", "leaves", "moves away"])
@pytest.mark.parametrize("speed", [3, 7, 20])
def test_a_code_revealed_piece_by_piece_is_read_when_the_change_there_ends(
    speed: int, after: str
) -> None:
    # each frame reads only the tiles that changed: no read held the whole code until
    # the frame is read whole again once the change there has ended
    whole, ended, read = revealed(CountingDecoder(DecodeConfig()), speed, after)
    assert 0 < whole <= ended
    assert read is not None and whole <= read <= ended + 2, (whole, ended, read)
