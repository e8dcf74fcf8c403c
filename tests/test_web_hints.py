"""Aiming hints on generated frames: a good frame has none; glare, distance and blur are named."""

from __future__ import annotations

import numpy as np
import pytest
from web_device import card_frame

from appliance.config import DecodeConfig
from appliance.decode import Decoder
from appliance.samples import blur, glare
from appliance.source import Frame
from appliance.web.hints import GLARE, OUT_OF_FOCUS, TOO_DARK, TOO_SMALL, frame_hints, sharpness

DECODER = Decoder(DecodeConfig())
SEEDS = (1, 2, 3)


def hints(pixels: np.ndarray) -> list[str]:
    """The hint codes for `pixels`, given what the real decoder reads in it."""
    result = DECODER.decode(Frame(pixels, 0.0, 1))
    return [h.code for h in frame_hints(pixels, [s.position for s in result.scans])]


@pytest.mark.parametrize("seed", SEEDS)
def test_a_good_frame_has_no_hint(seed: int) -> None:
    pixels, _ = card_frame(seed)
    assert DECODER.decode(Frame(pixels, 0.0, 1)).scans
    assert hints(pixels) == []


@pytest.mark.parametrize("seed", SEEDS)
def test_glare_over_the_code_is_named(seed: int) -> None:
    pixels, centre = card_frame(seed)
    assert hints(glare(pixels, centre, (50, 40), 255)) == [GLARE]


def test_glare_beside_a_read_code_is_not_blamed_on_it() -> None:
    pixels, _ = card_frame(1)
    lamp = glare(pixels, (40, 40), (25, 20), 255)
    assert DECODER.decode(Frame(lamp, 0.0, 1)).scans
    assert GLARE not in hints(lamp)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_code_far_away_is_too_small(seed: int) -> None:
    pixels, _ = card_frame(seed, module_px=2)
    assert DECODER.decode(Frame(pixels, 0.0, 1)).scans  # still read, but barely
    assert hints(pixels) == [TOO_SMALL]


@pytest.mark.parametrize("seed", SEEDS)
def test_a_blurred_frame_is_out_of_focus(seed: int) -> None:
    pixels, _ = card_frame(seed)
    blurred = blur(pixels, 4)
    assert not DECODER.decode(Frame(blurred, 0.0, 1)).scans
    assert hints(blurred) == [OUT_OF_FOCUS]
    assert sharpness(blurred) < sharpness(blur(pixels, 1)) < sharpness(pixels)  # type: ignore[operator]


def test_a_dark_frame_is_too_dark() -> None:
    pixels, _ = card_frame(1)
    assert TOO_DARK in hints((pixels // 8).astype(np.uint8))


def test_flat_or_empty_frames_give_no_focus_verdict() -> None:
    assert sharpness(np.full((360, 640), 128, np.uint8)) is None
    assert frame_hints(np.zeros((0, 0), np.uint8)) == []
    assert sharpness(np.full((4, 4), 9, np.uint8)) is None
