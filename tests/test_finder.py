"""Tests for appliance.finder: the cheap look for QR finder patterns before the matrix passes."""

from __future__ import annotations

import numpy as np
import pytest

from appliance import samples
from appliance.camera import Frame
from appliance.config import DecodeConfig
from appliance.decode import Decoder
from appliance.finder import Finders, find_finders, may_hold_finder

SEEDS = (1, 2)


@pytest.fixture(scope="module")
def corpora() -> dict[int, list[samples.Sample]]:
    """The bench's single-frame corpora (seeds 1 and 2), built once for the module."""
    return {seed: samples.make_corpus(seed, count=300) for seed in SEEDS}


@pytest.fixture(scope="module")
def read_by_decoder(corpora: dict[int, list[samples.Sample]]) -> dict[int, list[bool]]:
    """Per corpus frame: whether the Decoder without the gate reads its code, as the bench
    feeds it (one instance, every frame once, in order)."""
    out: dict[int, list[bool]] = {}
    for seed, corpus in corpora.items():
        decoder = Decoder(DecodeConfig(finder_gate=False))
        read = []
        for i, sample in enumerate(corpus):
            result = decoder.decode(Frame(sample.pixels, i / 30, i))
            got = {s.text for s in result.scans} | {r.text for r in result.rejected}
            read.append(sample.expected in got)
        out[seed] = read
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_maybe_on_every_qr_frame_the_decoder_reads(
        seed: int, corpora: dict[int, list[samples.Sample]],
        read_by_decoder: dict[int, list[bool]]) -> None:
    qr = [s for s, read in zip(corpora[seed], read_by_decoder[seed], strict=True)
          if read and "-QRCode-" in s.name]
    assert len(qr) > 150  # the corpus is what the bench measures
    missed = [s.name for s in qr if not may_hold_finder(s.pixels)]
    assert missed == []


@pytest.mark.parametrize("seed", SEEDS)
def test_no_on_most_frames_without_finder_like_structure(
        seed: int, corpora: dict[int, list[samples.Sample]]) -> None:
    kinds = ("plain", "text", "stripes")
    empty = [s for s in corpora[seed] if s.expected is None and s.distortions[1] in kinds]
    assert len(empty) > 30
    said_no = [s for s in empty if not may_hold_finder(s.pixels)]
    assert len(said_no) >= 0.8 * len(empty)
    plain = [s for s in empty if s.distortions[1] == "plain"]
    assert all(s in said_no for s in plain)


def test_polarity_of_dark_and_inverted_symbols() -> None:
    code = samples.render_code("LC-7F3K9Q2M", module_px=5)
    rng = np.random.default_rng(7)
    normal = samples.place(code, samples.background((640, 480), rng), rng)
    inverted = samples.place(samples.invert(code), samples.background((640, 480), rng), rng)
    assert find_finders(normal).dark
    assert find_finders(inverted).light
    blank = np.full((480, 640), 200, np.uint8)
    assert find_finders(blank) == Finders(dark=False, light=False)


@pytest.mark.parametrize("shape", [(1, 1), (1, 640), (480, 1), (7, 200), (200, 7), (12, 95),
                                   (33, 97), (95, 12), (481, 641)])
@pytest.mark.parametrize("fill", ["black", "white", "noise", "qr"])
def test_bounded_input_never_raises(shape: tuple[int, int], fill: str) -> None:
    rng = np.random.default_rng(5)
    if fill == "qr":
        code = samples.render_code("GC-8H2J4K6L8M", module_px=3)
        canvas = np.full((max(shape[0], code.shape[0]), max(shape[1], code.shape[1])), 255,
                         np.uint8)
        canvas[:code.shape[0], :code.shape[1]] = code
        pixels = canvas[:shape[0], :shape[1]]
    elif fill == "noise":
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    else:
        pixels = np.full(shape, 0 if fill == "black" else 255, np.uint8)
    assert isinstance(find_finders(pixels), Finders)


def test_non_contiguous_views() -> None:
    code = samples.render_code("SPRING-2X7Q", module_px=6)
    rng = np.random.default_rng(11)
    frame = samples.place(code, samples.background((1280, 720), rng), rng)
    for view in (frame[::2, ::2], frame[:, ::-1], frame[::-1, :], frame.T, frame[10:-7, 3:-5]):
        assert may_hold_finder(view)


def test_gated_decoder_reads_what_the_ungated_one_reads(
        corpora: dict[int, list[samples.Sample]],
        read_by_decoder: dict[int, list[bool]]) -> None:
    gated = Decoder(DecodeConfig(finder_gate=True))
    corpus = corpora[1]
    for i, sample in enumerate(corpus):
        result = gated.decode(Frame(sample.pixels, i / 30, i))
        got = {s.text for s in result.scans} | {r.text for r in result.rejected}
        if read_by_decoder[1][i]:
            assert sample.expected in got, sample.name
        assert got <= {sample.expected}, sample.name  # no false positive either
