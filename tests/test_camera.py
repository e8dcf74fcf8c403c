"""Frame sources: picamera2 setup and Y-plane extraction (against a fake), image replay."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import zxingcpp
from fake_picamera2 import (
    CM3_CONTROLS,
    PAD,
    V2_CONTROLS,
    AfModeEnum,
    ColorSpace,
    FakeRequest,
    World,
    libcamera,
    make_module,
)
from PIL import Image

from appliance.camera import BUFFER_COUNT, ECHO_FRAMES, MAX_RESENDS, PicameraSource, open_source
from appliance.config import CameraConfig
from appliance.errors import CameraError, ConfigError
from appliance.replay import ReplaySource
from appliance.source import Exposure, ExposureControl

TEXT = "LEAT-4711-CARD"


def qr_image(text: str = TEXT, scale: int = 4) -> npt.NDArray[np.uint8]:
    """A real QR code (quiet zone included) as a grayscale array."""
    barcode = zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode)
    return np.array(barcode.to_image(scale=scale), dtype=np.uint8)


def camera_config(**changes: Any) -> CameraConfig:
    """A 16:9 camera config (lores 640x360) with `changes`."""
    return CameraConfig(lores_width=640, lores_height=360).model_copy(update=changes)


def open_camera(world: World, **changes: Any) -> PicameraSource:
    return PicameraSource(camera_config(**changes), make_module(world), libcamera)


def decoded(pixels: npt.NDArray[np.uint8]) -> list[str]:
    return [barcode.text for barcode in zxingcpp.read_barcodes(pixels)]


# --- PicameraSource -----------------------------------------------------------------------


def test_picamera_configures_yuv420_streams_and_controls() -> None:
    world = World([qr_image()])
    source = open_camera(world)
    created = world.last("create_video_configuration")
    assert created["main"] == {"format": "YUV420", "size": (1280, 720)}
    assert created["lores"] == {"format": "YUV420", "size": (640, 360)}
    assert created["buffer_count"] == BUFFER_COUNT <= 4
    assert created["controls"] == {
        "FrameDurationLimits": (66667, 66667),  # 15 fps
        "ExposureTime": 10_000,  # the cap, shorter than a frame
        "ExposureValue": -0.5,
        "AfMode": AfModeEnum.Continuous,
    }
    configured = world.last("configure")
    assert configured["controls"]["FrameDurationLimits"] == (66667, 66667)
    assert world.names() == ["Picamera2", "create_video_configuration", "configure", "start"]
    source.close()


def test_picamera_asks_for_full_range_video(caplog: pytest.LogCaptureFixture) -> None:
    world = World([qr_image()])
    with caplog.at_level(logging.WARNING, logger="appliance.camera"):
        source = open_camera(world)
    # picamera2's default for video is limited range (Y 16..235): glare at >= 250 never shows
    assert world.last("create_video_configuration")["colour_space"] == ColorSpace.Sycc()
    assert world.cameras_opened[0].camera_configuration()["colour_space"].range is (
        ColorSpace.Range.Full)
    assert "limited-range" not in caplog.text
    source.close()


def test_picamera_warns_when_the_camera_gives_limited_range(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World([qr_image()], full_range=False)
    with caplog.at_level(logging.WARNING, logger="appliance.camera"):
        source = open_camera(world)
    assert "limited-range video" in caplog.text
    assert "glare (>= 250) is never seen" in caplog.text
    assert source.read() is not None  # it scans on
    source.close()


def test_picamera_older_than_0_3_20_is_refused_by_name() -> None:
    world = World([qr_image()])
    module = make_module(world)

    class Picamera2Before0320:  # no cancel_all_and_flush: capture_request(wait=2.0) blocks
        global_camera_info = module.Picamera2.global_camera_info  # for ever on a loose cable

    module.Picamera2 = Picamera2Before0320
    with pytest.raises(CameraError, match=r"picamera2 is too old: 0\.3\.20 or newer"):
        PicameraSource(camera_config(), module, libcamera)
    assert world.cameras_opened == []


def test_picamera_exposure_not_fixed_when_frames_are_shorter_than_the_cap() -> None:
    world = World([qr_image()])
    open_camera(world, fps=120.0, max_exposure_us=20_000).close()
    controls = world.last("create_video_configuration")["controls"]
    assert controls["FrameDurationLimits"] == (8333, 8333)
    assert "ExposureTime" not in controls


def test_picamera_y_plane_is_the_picture() -> None:
    world = World([qr_image()])
    source = open_camera(world)
    frame = source.read()
    assert frame is not None
    assert frame.pixels.shape == (360, 640)
    assert frame.pixels.dtype == np.uint8
    np.testing.assert_array_equal(frame.pixels, world.expected_y(0, 640, 360))
    assert world.requests[0].released  # the buffer went back: the frame must not depend on it
    assert decoded(frame.pixels) == [TEXT]
    source.close()


@pytest.mark.parametrize(("width", "extra_stride"), [(640, 0), (640, 64), (650, 32)])
def test_picamera_y_plane_drops_stride_padding(width: int, extra_stride: int) -> None:
    world = World([qr_image(scale=8)], extra_stride=extra_stride)
    source = open_camera(world, lores_width=width, lores_height=480)
    frame = source.read()
    assert frame is not None
    assert frame.pixels.shape == (480, width)
    assert not (frame.pixels == PAD).any()
    np.testing.assert_array_equal(frame.pixels, world.expected_y(0, width, 480))
    source.close()


def test_picamera_main_stream_when_lores_is_zero() -> None:
    world = World([qr_image()])
    source = open_camera(world, width=800, height=600, lores_width=0, lores_height=0)
    assert world.last("create_video_configuration")["lores"] is None
    frame = source.read()
    assert frame is not None
    np.testing.assert_array_equal(frame.pixels, world.expected_y(0, 800, 600))
    source.close()


def test_picamera_uses_the_size_picamera2_rounded_to() -> None:
    world = World([qr_image()])
    source = open_camera(world, lores_width=641, lores_height=361)
    frame = source.read()
    assert frame is not None
    assert frame.pixels.shape == (360, 640)
    source.close()


@pytest.mark.parametrize(
    ("autofocus", "controls", "expected"),
    [
        ("continuous", CM3_CONTROLS, {"AfMode": AfModeEnum.Continuous}),
        ("manual", CM3_CONTROLS, {"AfMode": AfModeEnum.Manual, "LensPosition": 5.0}),
        ("off", CM3_CONTROLS, {}),
        ("continuous", V2_CONTROLS, {}),
    ],
)
def test_picamera_autofocus(autofocus: str, controls: dict[str, Any], expected: dict[str, Any]
                            ) -> None:
    world = World([qr_image()], controls=dict(controls))
    open_camera(world, autofocus=autofocus).close()
    sent = world.last("create_video_configuration")["controls"]
    focus = {name: sent[name] for name in ("AfMode", "LensPosition") if name in sent}
    assert focus == expected


def test_picamera_autofocus_unsupported_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="appliance.camera")
    open_camera(World([qr_image()], controls=dict(V2_CONTROLS))).close()
    assert [r.getMessage() for r in caplog.records if "autofocus" in r.getMessage()] == [
        "camera has no autofocus: camera.autofocus = 'continuous' ignored"
    ]


def test_picamera_releases_every_request_and_counts_frames() -> None:
    world = World([qr_image("ONE"), qr_image("TWO")])
    source = open_camera(world)
    frames = [source.read() for _ in range(5)]
    source.close()
    assert all(request.released for request in world.requests)
    assert world.names().count("release") == len(world.requests) == 5
    assert [f.sequence for f in frames if f] == [1, 2, 3, 4, 5]
    stamps = [f.timestamp for f in frames if f]
    assert stamps == sorted(stamps)
    assert [decoded(f.pixels) for f in frames if f] == [["ONE"], ["TWO"], ["ONE"], ["TWO"],
                                                        ["ONE"]]
    assert world.last("capture_request") > 0  # always a bounded wait


def test_picamera_frame_carries_the_exposure_and_focus_the_sensor_used() -> None:
    world = World([qr_image()])
    source = open_camera(world)
    frame = source.read()
    assert frame is not None
    assert frame.exposure == Exposure(exposure_us=9980, analogue_gain=2.0, lens_position=5.0,
                                      focus_fom=380, lux=312.5)
    world.metadata = {"ExposureTime": "9980", "AnalogueGain": float("nan"), "Lux": -1,
                      "LensPosition": True, "FocusFoM": 10**12}  # nothing sane
    second = source.read()
    assert second is not None and second.exposure is None
    world.metadata = {"ExposureTime": 33000.4}  # a camera without autofocus says less
    third = source.read()
    assert third is not None and third.exposure == Exposure(exposure_us=33000)
    source.close()
    assert all(request.released for request in world.requests)


def test_picamera_frame_without_metadata_is_still_a_frame(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    world = World([qr_image()])
    source = open_camera(world)
    world.metadata = {}
    first = source.read()

    def broken(request: FakeRequest) -> dict[str, Any]:
        raise RuntimeError("no metadata")

    monkeypatch.setattr(FakeRequest, "get_metadata", broken)
    second = source.read()
    source.close()
    assert first is not None and first.exposure is None
    assert second is not None and second.exposure is None and decoded(second.pixels) == [TEXT]
    assert all(request.released for request in world.requests)


def test_picamera_close_is_idempotent() -> None:
    world = World([qr_image()])
    source = open_camera(world)
    source.close()
    source.close()
    assert world.names().count("stop") == 1
    assert world.names().count("close") == 1
    assert not world.cameras_opened[0].is_open
    assert source.read() is None


def test_picamera_missing_module_raises_camera_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import picamera2 -> ImportError
    with pytest.raises(CameraError, match="picamera2 is not installed") as caught:
        PicameraSource(camera_config())
    assert isinstance(caught.value.__cause__, ImportError)


def test_picamera_no_camera_raises_camera_error() -> None:
    with pytest.raises(CameraError, match="no camera found: is the ribbon cable seated"):
        open_camera(World([qr_image()], cameras=0))


def test_picamera_busy_camera_raises_chained_camera_error() -> None:
    with pytest.raises(CameraError, match="another program") as caught:
        open_camera(World([qr_image()], busy=True))
    # picamera2 itself only says its __init__ failed; the reason is in the context
    cause = caught.value.__cause__
    assert isinstance(cause, RuntimeError)
    assert str(cause) == "Camera __init__ sequence did not complete."
    assert "RuntimeError: Failed to acquire camera: Device or resource busy" in str(caught.value)


def test_picamera_missing_camera_number_reads_like_picamera2() -> None:
    world = World([qr_image()], cameras=1)
    module = make_module(world)
    with pytest.raises(RuntimeError, match=r"^Camera __init__ sequence did not complete\.$"):
        module.Picamera2(camera_num=1)


def test_picamera_bad_configuration_closes_the_camera() -> None:
    world = World([qr_image()])
    with pytest.raises(CameraError, match="must not exceed the main stream"):
        open_camera(world, width=640, height=480, lores_width=1280, lores_height=720)
    assert not world.cameras_opened[0].is_open


def test_picamera_stalled_camera_raises_camera_error() -> None:
    world = World([qr_image()])
    source = open_camera(world)
    world.stalled = True
    with pytest.raises(CameraError, match="no frame from the camera") as caught:
        source.read()
    assert isinstance(caught.value.__cause__, TimeoutError)
    assert "cancel_all_and_flush" in world.names()
    source.close()


# --- ReplaySource -------------------------------------------------------------------------


class FakeClock:
    """A monotonic clock that only moves when waited on or advanced."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def save(path: Path, pixels: npt.NDArray[np.uint8], mode: str = "L") -> Path:
    Image.fromarray(pixels).convert(mode).save(path)
    return path


def flat(value: int, shape: tuple[int, int] = (24, 32)) -> npt.NDArray[np.uint8]:
    return np.full(shape, value, dtype=np.uint8)


def no_wait(seconds: float) -> None:
    raise AssertionError(f"waited {seconds} s")


def test_replay_folder_plays_images_in_name_order(tmp_path: Path) -> None:
    save(tmp_path / "b.png", flat(20))
    save(tmp_path / "a.png", flat(10))
    save(tmp_path / "c.jpeg", flat(30))
    (tmp_path / "notes.txt").write_text("not a frame")
    source = ReplaySource([tmp_path], fps=0, wait=no_wait)
    values = []
    while (frame := source.read()) is not None:
        values.append(int(frame.pixels.mean().round()))
    assert values == [10, 20, 30]
    assert source.read() is None


def test_replay_frames_are_contiguous_grayscale(tmp_path: Path) -> None:
    qr = qr_image()
    path = save(tmp_path / "qr.png", qr, mode="RGB")
    frame = ReplaySource([path], fps=0).read()
    assert frame is not None
    assert frame.pixels.dtype == np.uint8
    assert frame.pixels.flags.c_contiguous
    np.testing.assert_array_equal(frame.pixels, qr)
    assert decoded(frame.pixels) == [TEXT]


def test_replay_transparent_image_lies_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)  # fully transparent black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    frame = ReplaySource([tmp_path / "clear.png"], fps=0).read()
    assert frame is not None
    assert (frame.pixels == 255).all()


def test_replay_paces_frames_with_the_injected_clock(tmp_path: Path) -> None:
    save(tmp_path / "a.png", flat(1))
    clock = FakeClock()
    source = ReplaySource([tmp_path], fps=10, loop=True, clock=clock, wait=clock.wait)
    stamps = []
    for _ in range(4):
        frame = source.read()
        assert frame is not None
        stamps.append(frame.timestamp - 1000.0)
        clock.now += 0.03  # decoding took 30 ms
    assert clock.waits == pytest.approx([0.07, 0.07, 0.07])
    assert stamps == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_replay_behind_schedule_restarts_without_a_burst(tmp_path: Path) -> None:
    save(tmp_path / "a.png", flat(1))
    clock = FakeClock()
    source = ReplaySource([tmp_path], fps=10, loop=True, clock=clock, wait=clock.wait)
    source.read()
    clock.now += 1.0  # a long stall: ten frames late
    source.read()
    source.read()
    assert clock.waits == pytest.approx([0.1])


def test_replay_fps_zero_never_waits(tmp_path: Path) -> None:
    save(tmp_path / "a.png", flat(1))
    source = ReplaySource([tmp_path], fps=0, loop=True, wait=no_wait)
    assert all(source.read() is not None for _ in range(3))


def test_replay_loop_keeps_counting(tmp_path: Path) -> None:
    save(tmp_path / "a.png", flat(10))
    save(tmp_path / "b.png", flat(20))
    source = ReplaySource([tmp_path], fps=0, loop=True)
    frames = [source.read() for _ in range(5)]
    assert [f.sequence for f in frames if f] == [1, 2, 3, 4, 5]
    assert [int(f.pixels[0, 0]) for f in frames if f] == [10, 20, 10, 20, 10]


def test_replay_end_of_stream_and_close(tmp_path: Path) -> None:
    path = save(tmp_path / "a.png", flat(10))
    source = ReplaySource([path, path], fps=0)
    assert source.read() is not None
    source.close()
    assert source.read() is None
    looping = ReplaySource([path], fps=0, loop=True)
    looping.close()
    assert looping.read() is None


def _truncated_png(path: Path) -> Path:
    save(path, qr_image())
    path.write_bytes(path.read_bytes()[:200])
    return path


def _text_named_png(path: Path) -> Path:
    path.write_text("hello, I am not a picture\n")
    return path


def _oversized_png(path: Path) -> Path:
    return save(path, flat(0, (8, 4609)))


def _gif(path: Path) -> Path:
    Image.new("L", (8, 8)).save(path, format="GIF")
    return path


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (_truncated_png, "not a readable PNG or JPEG"),
        (_text_named_png, "not a readable PNG or JPEG"),
        (_oversized_png, "4609x8, larger than 4608x2592"),
        (_gif, "not a readable PNG or JPEG"),
    ],
)
def test_replay_bad_file_raises_camera_error_naming_it(tmp_path: Path, make: Any, problem: str
                                                      ) -> None:
    good = save(tmp_path / "good.png", flat(1))
    bad = make(tmp_path / "bad.png")
    with pytest.raises(CameraError) as caught:
        ReplaySource([good, bad], fps=0)
    assert str(bad) in str(caught.value)
    assert problem in str(caught.value)


def test_replay_empty_folder_or_missing_path_raises(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CameraError, match=r"folder has no \.png"):
        ReplaySource([tmp_path / "empty"], fps=0)
    with pytest.raises(CameraError, match="no such file or folder"):
        ReplaySource([tmp_path / "missing"], fps=0)
    with pytest.raises(CameraError, match="no image files"):
        ReplaySource([], fps=0)


# --- open_source --------------------------------------------------------------------------


def test_open_source_replay(tmp_path: Path) -> None:
    save(tmp_path / "a.png", flat(5))
    source = open_source(CameraConfig(source="replay", replay_path=tmp_path, fps=120))
    assert isinstance(source, ReplaySource)
    frame = source.read()
    assert frame is not None
    assert frame.sequence == 1


def test_open_source_replay_needs_a_path() -> None:
    # a config problem (exit 2), not a camera failure the daemon would retry
    with pytest.raises(ConfigError, match=r"camera\.replay_path"):
        open_source(CameraConfig(source="replay"))


def test_open_source_picamera_without_picamera2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(CameraError, match="picamera2 is not installed"):
        open_source(CameraConfig(source="picamera"))


def test_replay_identical_files_share_one_image(tmp_path: Path) -> None:
    from PIL import Image

    blank = np.full((36, 64), 200, dtype=np.uint8)
    for i in range(3):
        Image.fromarray(blank).save(tmp_path / f"{i:03}.png")
    Image.fromarray(qr_image()).save(tmp_path / "003.png")
    source = ReplaySource([tmp_path], fps=0)
    frames = [source.read() for _ in range(4)]
    assert all(frame is not None for frame in frames)
    pixels = [frame.pixels for frame in frames if frame is not None]
    assert pixels[0] is pixels[1] is pixels[2]  # decoded once, one array in memory
    assert pixels[3] is not pixels[0]
    assert source.read() is None


# --- PicameraSource.set_ev: glare steering (appliance/exposure.py) -------------------------


def exposures(source: PicameraSource, frames: int) -> list[int | None]:
    """The ExposureTime each of the next `frames` frames was taken with."""
    found = []
    for _ in range(frames):
        frame = source.read()
        assert frame is not None and frame.exposure is not None
        found.append(frame.exposure.exposure_us)
    return found


def test_picamera_set_ev_reaches_frames_a_few_requests_later() -> None:
    world = World([qr_image()])
    source = open_camera(world)  # 15 fps, ExposureTime fixed at 10000 µs, EV -0.5
    assert isinstance(source, ExposureControl) and source.ev == -0.5
    assert exposures(source, 1) == [9980]  # what the sensor reported before
    source.set_ev(-1.5)
    # one stop darker: EV for the AGC (gain), and the fixed exposure time halved, because
    # gain cannot go below 1.0 under a lamp
    assert world.last("set_controls") == {"ExposureValue": -1.5, "ExposureTime": 5000}
    assert source.ev == -1.5
    assert exposures(source, 4) == [9980, 9980, 5000, 5000]  # picamera2's latency
    assert world.applied == [(4, {"ExposureValue": -1.5, "ExposureTime": 5000})]
    source.set_ev(-0.5)  # back to the base: the configured cap again
    assert world.last("set_controls") == {"ExposureValue": -0.5, "ExposureTime": 10_000}
    assert exposures(source, 3)[-1] == 10_000
    source.close()
    assert all(request.released for request in world.requests)


def test_picamera_set_ev_is_clamped_to_what_the_camera_reports() -> None:
    world = World([qr_image()])
    world.controls["ExposureValue"] = (-2.0, 2.0, 0.0)
    source = open_camera(world)
    source.set_ev(-5.0)
    assert world.last("set_controls") == {"ExposureValue": -2.0, "ExposureTime": 3536}
    source.set_ev(9.0)  # never longer than the configured cap
    assert world.last("set_controls") == {"ExposureValue": 2.0, "ExposureTime": 10_000}
    source.set_ev(float("nan"))
    assert world.last("set_controls") == {"ExposureValue": -0.5, "ExposureTime": 10_000}
    world.controls["ExposureValue"] = (-8.0, 8.0, 0.0)
    source.close()
    shortest = open_camera(World([qr_image()]))
    shortest.set_ev(-8.0)  # 10000 µs / 2^7.5 = 55 µs, above the sensor's 26 µs
    assert shortest.ev == -8.0
    shortest.close()


def test_picamera_set_ev_alone_when_the_exposure_time_is_automatic() -> None:
    world = World([qr_image()])
    source = open_camera(world, fps=120.0, max_exposure_us=20_000)  # the AGC picks the time
    source.set_ev(-1.5)
    assert world.last("set_controls") == {"ExposureValue": -1.5}
    assert exposures(source, 3) == [9980, 9980, 9980]  # the fake's AGC: the world's value
    source.close()


def test_picamera_without_exposure_value_ignores_set_ev(caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    world = World([qr_image()])
    del world.controls["ExposureValue"]
    with caplog.at_level(logging.INFO, logger="appliance.camera"):
        source = open_camera(world)
    source.set_ev(-1.5)
    assert "set_controls" not in world.names()
    assert source.ev is None
    assert "lacks ExposureValue" in caplog.text
    source.close()


def test_picamera_refused_controls_are_logged_not_raised(caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    world = World([qr_image()])
    source = open_camera(world)
    del world.controls["ExposureValue"]  # as if libcamera stopped advertising it
    with caplog.at_level(logging.WARNING, logger="appliance.camera"):
        source.set_ev(-1.5)
    assert "not advertised by libcamera" in caplog.text
    assert source.ev == -0.5  # unchanged: the request did not go through
    assert exposures(source, 4) == [9980] * 4
    source.close()


def test_fake_set_controls_checks_names_as_picamera2_does() -> None:
    camera = make_module(World([qr_image()])).Picamera2()
    with pytest.raises(RuntimeError, match="Control Brightness is not advertised by libcamera"):
        camera.set_controls({"ExposureValue": -1.0, "Brightness": 0.1})
    assert camera.pending == {"ExposureValue": -1.0}  # earlier names were taken
    camera.set_controls({"ExposureValue": 99.0})  # no range check in picamera2
    assert camera.pending == {"ExposureValue": 99.0}


def test_picamera_set_ev_after_close_does_nothing() -> None:
    world = World([qr_image()])
    source = open_camera(world)
    source.close()
    source.set_ev(-1.5)
    assert "set_controls" not in world.names()


def test_replay_records_ev_requests_boundedly(tmp_path: Path) -> None:
    source = ReplaySource([save(tmp_path / "a.png", flat(9))], fps=0)
    assert isinstance(source, ExposureControl)
    for i in range(100):
        source.set_ev(-i / 100)
    assert len(source.ev_requests) == 64 and source.ev_requests[-1] == -0.99
    frame = source.read()
    assert frame is not None and frame.pixels[0, 0] == 9  # the picture cannot change


def test_picamera_resends_an_ev_request_whose_echo_never_came() -> None:
    world = World([qr_image()], lose_controls=1)  # picamera2 dropped the first set_controls
    source = open_camera(world)
    source.set_ev(-1.5)
    wanted = {"ExposureValue": -1.5, "ExposureTime": 5000}
    seen = exposures(source, ECHO_FRAMES + 4)
    assert [arg for name, arg in world.calls if name == "set_controls"] == [wanted, wanted]
    assert seen[:ECHO_FRAMES + 2] == [9980] * (ECHO_FRAMES + 2) and seen[-1] == 5000
    exposures(source, 3 * ECHO_FRAMES)  # echoed now: never sent again
    assert world.names().count("set_controls") == 2
    source.close()


def test_picamera_without_echo_resends_twice_then_trusts_the_camera() -> None:
    world = World([qr_image()], echo=False)  # an IPA that does not report ExposureValue
    source = open_camera(world)
    source.set_ev(-1.5)
    assert exposures(source, 5 * ECHO_FRAMES)[-1] == 5000
    assert world.names().count("set_controls") == 1 + MAX_RESENDS
    source.close()
