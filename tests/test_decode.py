"""Tests for appliance.decode: distortions, strided frames, format limits and refusals."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import zxingcpp

from appliance import samples
from appliance.config import DecodeConfig
from appliance.decode import Decoder, DecodeResult, Rejected, Scan
from appliance.errors import ConfigError
from appliance.source import Frame

TEXT = "LC-7F3K9Q2M"


@pytest.fixture
def decoder() -> Decoder:
    return Decoder(DecodeConfig())


def frame_of(pixels: np.ndarray, timestamp: float = 12.5) -> Frame:
    return Frame(pixels, timestamp, 1)


def on_counter(code: np.ndarray, size: tuple[int, int] = (640, 480), seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return samples.place(code, samples.background(size, rng), rng)


def texts(result: DecodeResult) -> list[str]:
    return [scan.text for scan in result.scans]


def qr_bytes(payload: bytes) -> np.ndarray:
    barcode = zxingcpp.create_barcode(payload, zxingcpp.BarcodeFormat.QRCode)
    return np.array(barcode.to_image(scale=4), dtype=np.uint8)


def test_decoder_reads_clean_qr(decoder: Decoder) -> None:
    result = decoder.decode(frame_of(on_counter(samples.render_code(TEXT))))
    assert texts(result) == [TEXT]
    assert result.scans[0].format == "QRCode"
    assert result.rejected == ()


DISTORTED = {
    "rotation": lambda code, rng: samples.rotate(code, 33),
    "perspective": lambda code, rng: samples.perspective(code, rng, 0.18),
    "blur": lambda code, rng: samples.blur(code, 1.2),
    "noise": lambda code, rng: samples.noise(code, rng, 18),
    "low_contrast": lambda code, rng: samples.low_contrast(code, 100, 150),
    "inversion": lambda code, rng: samples.invert(code),
    "glare": lambda code, rng: samples.glare(
        code, (code.shape[1] * 0.6, code.shape[0] * 0.4),
        (code.shape[1] * 0.2, code.shape[0] * 0.15), 160),
    "small_modules": lambda code, rng: samples.downscale(code, 3.0),  # 2 px per module
}


@pytest.mark.parametrize("name", sorted(DISTORTED))
def test_decoder_reads_distorted_qr(decoder: Decoder, name: str) -> None:
    rng = np.random.default_rng(7)
    code = DISTORTED[name](samples.render_code(TEXT, module_px=6), rng)
    assert texts(decoder.decode(frame_of(on_counter(code)))) == [TEXT]


@pytest.mark.parametrize(("fmt", "text"), [("EAN13", "5901234123457"), ("Code128", "LC-48213")])
def test_decoder_reads_linear_codes_upright_sideways_and_inverted(
    decoder: Decoder, fmt: str, text: str
) -> None:
    code = samples.render_code(text, fmt, module_px=3)
    for variant in (code, samples.rotate(code, 90), samples.invert(code)):
        assert texts(decoder.decode(frame_of(on_counter(variant)))) == [text]


def test_decoder_reads_several_codes_in_one_frame(decoder: Decoder) -> None:
    rng = np.random.default_rng(1)
    frame = samples.background((1280, 720), rng)
    frame[50:50 + 200, 50:50 + 200] = 255
    for i, (x, y) in enumerate([(60, 60), (700, 100), (300, 400)]):
        code = samples.render_code(f"GC-{i}ABCDEFGH", module_px=5)
        frame[y:y + code.shape[0], x:x + code.shape[1]] = code
    assert sorted(texts(decoder.decode(frame_of(frame)))) == [f"GC-{i}ABCDEFGH" for i in range(3)]


@pytest.mark.parametrize("kind", ["plain", "text", "stripes", "blocks"])
def test_decoder_finds_nothing_in_empty_frames(decoder: Decoder, kind: str) -> None:
    pixels = samples.clutter(kind, (640, 480), np.random.default_rng(5))
    assert decoder.decode(frame_of(pixels)) == DecodeResult((), ())


def test_decoder_reads_strided_views(decoder: Decoder) -> None:
    code = samples.render_code(TEXT, module_px=4)
    big = np.full((480, 1000), 200, np.uint8)
    big[100:100 + code.shape[0], 300:300 + code.shape[1]] = code
    view = big[:, 100:740]
    assert not view.flags.c_contiguous
    scans = decoder.decode(frame_of(view)).scans
    assert [s.text for s in scans] == [TEXT]
    assert min(x for x, _ in scans[0].position) == pytest.approx(200 + 4 * 4, abs=4)


def test_decoder_reads_the_y_plane_of_a_yuv420_buffer(decoder: Decoder) -> None:
    width, height, stride = 640, 480, 704  # picamera2 pads rows to a multiple of 64
    yuv = np.full((height * 3 // 2, stride), 128, np.uint8)
    yuv[:height, :width] = on_counter(samples.render_code(TEXT))
    luma = yuv[:height, :width]
    assert luma.strides == (stride, 1)
    assert texts(decoder.decode(frame_of(luma))) == [TEXT]


def test_decoder_reads_views_with_negative_strides(decoder: Decoder) -> None:
    pixels = on_counter(samples.render_code(TEXT))[::-1, ::-1]  # a camera mounted upside down
    assert texts(decoder.decode(frame_of(pixels))) == [TEXT]


def test_decoder_reports_plausible_corners_and_the_frame_timestamp(decoder: Decoder) -> None:
    code = samples.render_code(TEXT, module_px=6)  # 4-module quiet zone = 24 px
    frame = np.full((480, 640), 255, np.uint8)
    frame[100:100 + code.shape[0], 200:200 + code.shape[1]] = code
    scan = decoder.decode(frame_of(frame, timestamp=99.25)).scans[0]
    size = code.shape[0] - 2 * 24
    expected = ((224, 124), (224 + size, 124), (224 + size, 124 + size), (224, 124 + size))
    assert len(scan.position) == 4
    for (x, y), (ex, ey) in zip(scan.position, expected, strict=True):
        assert abs(x - ex) <= 8 and abs(y - ey) <= 8
    assert scan.timestamp == 99.25


def test_decoder_honours_the_format_restriction() -> None:
    ean = on_counter(samples.render_code("5901234123457", "EAN13", module_px=3))
    assert texts(Decoder(DecodeConfig()).decode(frame_of(ean))) == ["5901234123457"]
    qr_only = Decoder(DecodeConfig(formats=("QRCode",)))
    assert qr_only.decode(frame_of(ean)) == DecodeResult((), ())
    linear_only = Decoder(DecodeConfig(formats=("EAN13",)))
    assert linear_only.decode(frame_of(on_counter(samples.render_code(TEXT)))).scans == ()


def test_decoder_refuses_unknown_formats() -> None:
    with pytest.raises(ConfigError) as info:
        Decoder(DecodeConfig(formats=("QRCode", "QRcode", "Nope")))
    assert len(info.value.problems) == 2
    assert info.value.problems[0].startswith("decode.formats: unknown format 'QRcode'; known: ")
    assert "EAN13" in info.value.problems[0]


def test_decoder_refuses_an_empty_format_list() -> None:
    with pytest.raises(ConfigError, match=r"decode\.formats: empty"):
        Decoder(DecodeConfig(formats=()))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\x00\x01\xff\xfe\x80secret", "binary payload"),
        ("SECRET-" + "x" * 593, "too long (600 > 512 characters)"),
        ("SECRET\x07bell", "control character U+0007"),
        ("SECRET\ttab", "control character U+0009"),
        ("SECRET\nline", "control character U+000A"),
        ("SECRET\u202eevil", "format character U+202E"),  # shows as "SECRETlive"
        ("SECRET\u200bzero-width", "format character U+200B"),
        ("SECRET\ufeffbom", "format character U+FEFF"),
        ("SECRET\ue000private", "unassigned or private character U+E000"),
        ("\r\n", "empty"),
    ],
)
def test_decoder_rejects_bad_payloads_without_logging_them(
    decoder: Decoder, caplog: pytest.LogCaptureFixture, payload: str | bytes, reason: str
) -> None:
    pixels = on_counter(qr_bytes(payload if isinstance(payload, bytes) else payload.encode()))
    with caplog.at_level(logging.INFO, logger="appliance.decode"):
        result = decoder.decode(frame_of(pixels, timestamp=3.0))
    assert result.scans == ()
    assert result.rejected == (Rejected(reason, "QRCode", 3.0),)
    if reason != "empty":  # the text is kept for the technician's `decode`
        assert "secret" in result.rejected[0].text.lower()
    assert "SECRET" not in repr(result.rejected)
    assert reason in caplog.text
    assert "SECRET" not in caplog.text and "secret" not in caplog.text


def test_decoder_accepts_utf8_text_without_eci(decoder: Decoder) -> None:
    pixels = on_counter(qr_bytes("café-42".encode()))
    assert texts(decoder.decode(frame_of(pixels))) == ["café-42"]


@pytest.mark.parametrize("limit", [len(TEXT), len(TEXT) - 1])
def test_decoder_honours_max_text_length_exactly(limit: int) -> None:
    decoder = Decoder(DecodeConfig(max_text_length=limit))
    result = decoder.decode(frame_of(on_counter(samples.render_code(TEXT))))
    if limit == len(TEXT):
        assert texts(result) == [TEXT]
    else:
        assert result.scans == ()
        assert result.rejected[0].reason == f"too long ({len(TEXT)} > {limit} characters)"


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r\n\r\n"])
def test_decoder_trims_a_trailing_line_break_before_judging(ending: str) -> None:
    decoder = Decoder(DecodeConfig(max_text_length=len(TEXT)))  # the break does not count
    result = decoder.decode(frame_of(on_counter(qr_bytes((TEXT + ending).encode()))))
    assert texts(result) == [TEXT]
    assert result.rejected == ()


def test_decoder_reads_micro_qr_only_when_named() -> None:
    pixels = on_counter(samples.render_code("LC-1234", "MicroQRCode"))
    assert Decoder(DecodeConfig()).decode(frame_of(pixels)) == DecodeResult((), ())
    named = Decoder(DecodeConfig(formats=("QRCode", "MicroQRCode"))).decode(frame_of(pixels))
    assert [(s.text, s.format) for s in named.scans] == [("LC-1234", "MicroQRCode")]


def test_decoder_region_pass_reads_a_symbol_the_full_frame_passes_miss(
    decoder: Decoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A corpus frame (bench/decode.py) that zxing-cpp locates but cannot decode as it is.
    sample = samples.make_sample(1, 56, (640, 480))
    assert texts(decoder.decode(frame_of(sample.pixels))) == [sample.expected]
    monkeypatch.setattr("appliance.ladder._ROI_LIMIT", 0)  # no closer look
    assert Decoder(DecodeConfig()).decode(frame_of(sample.pixels)).scans == ()


@pytest.mark.parametrize(
    "pixels",
    [
        np.zeros((48, 64), np.float32),
        np.zeros((48, 64, 3), np.uint8),
        np.zeros(64, np.uint8),
        [[0, 1], [1, 0]],
        np.zeros((0, 640), np.uint8),
        np.zeros((480, 0), np.uint8),
    ],
)
def test_decoder_rejects_frames_that_are_not_grayscale(decoder: Decoder, pixels: object) -> None:
    with pytest.raises(ValueError, match="2-D uint8"):
        decoder.decode(Frame(pixels, 0.0, 0))  # type: ignore[arg-type]


def test_decoder_takes_a_one_channel_frame_as_grayscale(decoder: Decoder) -> None:
    rng = np.random.default_rng(3)
    code = samples.render_code("LC-ONECHAN1", module_px=4)
    pixels = samples.place(code, samples.background((640, 480), rng), rng)
    scans = decoder.decode(Frame(pixels[:, :, np.newaxis], 0.0, 0)).scans
    assert [s.text for s in scans] == ["LC-ONECHAN1"]


def test_scan_is_frozen() -> None:
    scan = Scan("x", "QRCode", ((0, 0), (1, 0), (1, 1), (0, 1)), 1.0)
    with pytest.raises(AttributeError):
        scan.text = "y"  # type: ignore[misc]
