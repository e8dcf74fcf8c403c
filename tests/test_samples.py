"""Tests for appliance.samples: determinism, shapes, the corpus mix and the demo frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from appliance import samples
from appliance.config import DecodeConfig
from appliance.decode import Decoder
from appliance.source import Frame


def test_render_code_has_a_white_quiet_zone() -> None:
    code = samples.render_code("LC-7F3K9Q2M", module_px=6)
    assert code.dtype == np.uint8 and code.ndim == 2
    assert code.shape[0] == code.shape[1]
    assert (code[:24] == 255).all() and (code[:, -24:] == 255).all()
    assert (code == 0).any()


def test_render_code_draws_linear_formats() -> None:
    code = samples.render_code("5901234123457", "EAN13", module_px=2)
    assert code.shape[1] > code.shape[0] > 50


DISTORTIONS = {
    "rotate": lambda img, rng: samples.rotate(img, float(rng.uniform(0, 360))),
    "perspective": lambda img, rng: samples.perspective(img, rng, 0.2),
    "blur": lambda img, rng: samples.blur(img, 1.5),
    "noise": lambda img, rng: samples.noise(img, rng, 10),
    "low_contrast": lambda img, rng: samples.low_contrast(img, 90, 140),
    "invert": lambda img, rng: samples.invert(img),
    "glare": lambda img, rng: samples.glare(img, (50, 50), (30, 20), 150),
    "downscale": lambda img, rng: samples.downscale(img, 2.5),
    "background": lambda img, rng: samples.background((640, 480), rng),
    "place": lambda img, rng: samples.place(img, samples.background((1280, 720), rng), rng),
}


@pytest.mark.parametrize("name", sorted(DISTORTIONS))
def test_distortions_are_deterministic_grayscale(name: str) -> None:
    code = samples.render_code("GC-8H2J4K6L8M", module_px=4)
    first = DISTORTIONS[name](code, np.random.default_rng(11))
    second = DISTORTIONS[name](code.copy(), np.random.default_rng(11))
    assert first.dtype == np.uint8 and first.ndim == 2
    np.testing.assert_array_equal(first, second)


def test_distortions_do_not_modify_their_input() -> None:
    code = samples.render_code("GC-8H2J4K6L8M", module_px=4)
    before = code.copy()
    for distortion in DISTORTIONS.values():
        distortion(code, np.random.default_rng(1))
    np.testing.assert_array_equal(code, before)


def test_low_contrast_and_invert_map_grey_levels() -> None:
    ramp = np.array([[0, 128, 255]], np.uint8)
    assert samples.low_contrast(ramp, 100, 150).tolist() == [[100, 125, 150]]
    assert samples.invert(ramp).tolist() == [[255, 127, 0]]


def test_place_keeps_the_frame_size_and_shrinks_big_codes() -> None:
    rng = np.random.default_rng(2)
    big = samples.render_code("x" * 300, module_px=8)
    assert big.shape[0] > 480
    placed = samples.place(big, samples.background((640, 480), rng), rng)
    assert placed.shape == (480, 640)


def test_clutter_refuses_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="unknown clutter kind"):
        samples.clutter("zebra", (640, 480), np.random.default_rng(0))


def test_make_corpus_is_deterministic() -> None:
    first = samples.make_corpus(seed=4, count=12)
    second = samples.make_corpus(seed=4, count=12)
    other = samples.make_corpus(seed=5, count=12)
    assert [s.name for s in first] == [s.name for s in second]
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.pixels, b.pixels)
        assert (a.expected, a.distortions) == (b.expected, b.distortions)
    assert any(not np.array_equal(a.pixels, b.pixels) for a, b in zip(first, other, strict=True))


def test_make_corpus_mixes_sizes_formats_and_empty_frames() -> None:
    corpus = samples.make_corpus(seed=1, count=120)
    assert {s.pixels.shape for s in corpus} == {(480, 640), (720, 1280)}
    empty = [s for s in corpus if s.expected is None]
    assert 0.1 < len(empty) / len(corpus) < 0.3
    assert all(s.distortions[0] == "no_code" for s in empty)
    kinds = {s.distortions[1] for s in empty}
    assert {"text", "stripes"} <= kinds
    names = " ".join(s.name for s in corpus)
    assert "-EAN13-" in names and "-Code128-" in names and "-QRCode-" in names
    coded = [s for s in corpus if s.expected is not None]
    assert any(not s.distortions for s in coded)
    assert set(samples.DISTORTIONS) <= {d for s in coded for d in s.distortions}


def test_demo_codes_hold_the_sandbox_values() -> None:
    assert set(samples.DEMO_CODES) == {"loyalty_card", "giftcard", "voucher", "loyalty_token"}
    assert samples.DEMO_CODES["loyalty_card"] == "LC-7F3K9Q2M"
    token = samples.DEMO_CODES["loyalty_token"]
    assert token.startswith("https://demo.leat.example/l?version=v3&shop_uuid=")
    assert "&unit_name=purchase_amount&unit_value=10&hash=" in token
    assert len(token.rsplit("hash=", 1)[1]) == 40


def test_write_demo_frames_plays_every_demo_code_in_order(tmp_path: Path) -> None:
    paths = samples.write_demo_frames(tmp_path / "demo")
    assert [p.name for p in paths] == sorted(p.name for p in paths)
    assert paths[0].name == "000-empty.png"
    decoder = Decoder(DecodeConfig())
    seen = []
    for number, path in enumerate(paths):
        pixels = np.asarray(Image.open(path).convert("L"))
        scans = decoder.decode(Frame(pixels, float(number), number)).scans
        assert ("empty" in path.name) == (not scans), path.name
        seen += [scan.text for scan in scans]
    assert set(seen) == {*samples.DEMO_CODES.values(), samples.DEMO_PHONE_CARD}
    assert seen.index(samples.DEMO_CODES["loyalty_card"]) < seen.index(
        samples.DEMO_CODES["loyalty_token"])
