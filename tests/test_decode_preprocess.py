"""Tests for the weak-condition fixes (appliance.preprocess) and the decode config."""

from __future__ import annotations

import numpy as np
import pytest

from appliance import config, samples, sequences
from appliance.config import DecodeConfig
from appliance.decode import Decoder
from appliance.errors import ConfigError
from appliance.preprocess import (
    _median,
    busiest_box,
    denoise,
    glare_fraction,
    narrow_range,
    noise_level,
    stretch,
)
from appliance.preprocess import _tile_spread as tile_spread
from appliance.source import Frame


def counter(seed: int = 1) -> np.ndarray:
    return samples.background((640, 480), np.random.default_rng(seed))


@pytest.mark.parametrize("sigma", [5.0, 20.0, 50.0])
def test_noise_level_estimates_sensor_noise(sigma: float) -> None:
    noisy = samples.noise(counter(), np.random.default_rng(2), sigma)
    assert noise_level(noisy) == pytest.approx(sigma, rel=0.25)
    assert noise_level(counter()) < 2.0
    assert noise_level(np.zeros((4, 2), np.uint8)) == 0.0


def test_denoise_cuts_noise_and_keeps_the_size() -> None:
    noisy = samples.noise(np.full((120, 160), 128, np.uint8), np.random.default_rng(3), 30)
    smooth = denoise(noisy)
    assert smooth.shape == noisy.shape and smooth.dtype == np.uint8
    assert smooth.std() < noisy.std() / 2.5


def test_stretch_spreads_a_narrow_band_over_the_full_range() -> None:
    faded = samples.low_contrast(samples.render_code("LC-FADED01"), 110, 130)
    assert narrow_range(faded)
    wide = stretch(faded)
    assert wide.min() == 0 and wide.max() == 255
    assert not narrow_range(samples.render_code("LC-FADED01"))
    assert not narrow_range(np.full((50, 50), 77, np.uint8))  # flat: nothing to stretch


def test_glare_fraction_counts_saturated_pixels() -> None:
    pixels = np.full((10, 10), 200, np.uint8)
    pixels[:3] = 255
    assert glare_fraction(pixels) == pytest.approx(0.3)
    assert glare_fraction(np.zeros((0, 0), np.uint8)) == 0.0


@pytest.mark.parametrize("condition", ["noise", "low_contrast"])
def test_busiest_box_finds_a_card_zxing_cannot_locate(condition: str) -> None:
    found = 0
    for seed in range(4):
        seq = sequences.held_card(condition, seed)
        box = busiest_box(denoise(seq.frames[0]))
        assert seq.box is not None
        if box is not None:
            x0, y0, x1, y1 = seq.box
            found += (box[0] <= x0 + 8 and box[1] <= y0 + 8 and box[2] >= x1 - 8
                      and box[3] >= y1 - 8)
    assert found >= 3


def test_tile_spread_is_the_standard_deviation_of_each_tiles_samples() -> None:
    pixels = np.random.default_rng(3).integers(0, 256, (70, 100), dtype=np.uint8)
    rows, cols = 70 // 16, 100 // 16
    sampled = pixels[: rows * 16 : 4, : cols * 16 : 4].astype(np.float64)
    expected = sampled.reshape(rows, 4, cols, 4).std(axis=(1, 3))
    assert np.allclose(tile_spread(pixels, rows, cols), expected, atol=1e-3)


def test_busiest_box_ignores_a_flat_frame_and_tiny_frames() -> None:
    assert busiest_box(np.full((480, 640), 90, np.uint8)) is None
    assert busiest_box(np.zeros((40, 40), np.uint8)) is None


def test_preprocessing_reads_a_noisy_single_frame_the_plain_ladder_misses() -> None:
    seq = sequences.held_card("noise", 1)
    plain = Decoder(DecodeConfig(preprocess=False, multiframe_frames=1))
    fixed = Decoder(DecodeConfig(multiframe_frames=1))
    frame = Frame(seq.frames[0], 0.0, 0)
    assert plain.decode(frame).scans == ()
    assert [s.text for s in fixed.decode(frame).scans] == [seq.expected]


def test_decode_config_defaults_and_limits() -> None:
    cfg = DecodeConfig()
    assert cfg.still_threshold > 0 and cfg.multiframe_frames > 1 and cfg.preprocess
    loaded = config.load(environ={"LEAT_SCANNER_DECODE__MULTIFRAME_FRAMES": "4",
                                  "LEAT_SCANNER_DECODE__STILL_THRESHOLD": "0"})
    assert loaded.decode.multiframe_frames == 4 and loaded.decode.still_threshold == 0
    with pytest.raises(ConfigError) as info:
        config.load(environ={"LEAT_SCANNER_DECODE__MULTIFRAME_FRAMES": "0",
                             "LEAT_SCANNER_DECODE__STILL_RECHECK_FRAMES": "0",
                             "LEAT_SCANNER_DECODE__MULTIFRAME_BUDGET_MS": "1000",
                             "LEAT_SCANNER_DECODE__STILL_THRESHOLD": "-1"})
    assert len(info.value.problems) == 4
    assert all(p.startswith("decode.") for p in info.value.problems)


def test_the_busy_tiles_median_is_numpys_median() -> None:
    rng = np.random.default_rng(8)
    for rows, cols in ((30, 40), (29, 41), (5, 5), (1, 2)):
        for spread in (rng.random((rows, cols)).astype(np.float32) * 50,
                       np.round(rng.random((rows, cols)) * 4).astype(np.float32)):  # ties
            got = _median(spread)
            assert got == np.median(spread) and got.dtype == np.float32
