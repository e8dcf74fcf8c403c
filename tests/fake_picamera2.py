"""A fake `picamera2` (and the bit of `libcamera`) with the real library's signatures.

It implements exactly what `appliance.camera.PicameraSource` calls, shaped like picamera2
0.3.x (`picamera2/picamera2.py`, `picamera2/request.py`): `Picamera2.global_camera_info()`,
`Picamera2(camera_num=0)`, `camera_controls` (name -> (min, max, default)),
`create_video_configuration(main=, lores=, controls=, buffer_count=, colour_space=)`,
`configure`, `camera_configuration`, `stream_configuration`, `start`,
`capture_request(wait=)`, `set_controls`, `cancel_all_and_flush`, `stop`, `close`,
`CompletedRequest.release()` and `MappedArray(request, stream, reshape=, write=)`; and of
libcamera, `controls.AfModeEnum` and `ColorSpace` (a video configuration without a colour
space is limited range, as picamera2's; `World.full_range = False` makes the pipeline
report Smpte170m for a full-range request, as a Pi 5's lores stream may).

`set_controls(dict)` behaves as picamera2's (picamera2/controls.py `Controls.set_controls`):
names are checked one by one against the advertised controls, an unknown one raises
RuntimeError("Control X is not advertised by libcamera") after the earlier names of the
same dict were taken, and values are not range checked. The controls reach the frames
`LATENCY` requests later (picamera2 attaches them to the next request it queues, which
completes behind the ones already queued): from then on the request metadata's
ExposureTime is the manual one, and ExposureValue is echoed on that one request, as the
Raspberry Pi IPA reports it (libcamera src/ipa/rpi/common/ipa_base.cpp). The picture
itself does not change. `World.lose_controls` drops that many set_controls calls (picamera2
replaces its `Controls` object after reading it when recycling a request, so a call in
between is lost) and `World.echo = False` stops the ExposureValue echo.

Buffers are YUV420 arrays of shape (height * 3 // 2, stride) like picamera2's, with the
scene image in the top-left of the Y plane on white, U and V at 128, and stride padding
filled with `PAD`. `release()` scribbles over the buffer, as the camera reusing it would,
so a frame that kept a view into it shows garbage. Every call is recorded in `calls`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt

PAD = 7  # stride padding bytes: must never show up in a frame
LATENCY = 2  # requests between set_controls and the first frame captured with the controls
RECYCLED = 0xAA  # what a buffer holds once the camera has reused it

CM3_CONTROLS: dict[str, tuple[Any, Any, Any]] = {
    "AeEnable": (False, True, None),
    "AfMode": (0, 2, 0),
    "AnalogueGain": (1.0, 16.0, None),
    "ExposureTime": (26, 112015443, None),
    "ExposureValue": (-8.0, 8.0, 0.0),
    "FrameDurationLimits": (33333, 120000, None),
    "LensPosition": (0.0, 15.0, 1.0),
    "NoiseReductionMode": (0, 4, 0),
}
"""What a Camera Module 3 (imx708) advertises, abridged."""

V2_CONTROLS = {name: value for name, value in CM3_CONTROLS.items()
               if name not in ("AfMode", "LensPosition")}
"""A fixed-focus camera (Camera Module 2, imx219)."""


class AfModeEnum(enum.IntEnum):
    """libcamera.controls.AfModeEnum (values from libcamera's control_ids_core.yaml)."""

    Manual = 0
    Auto = 1
    Continuous = 2


class NoiseReductionModeEnum(enum.IntEnum):
    """libcamera.controls.draft.NoiseReductionModeEnum (the part we need)."""

    Off = 0
    Fast = 1


class Range(enum.Enum):
    """libcamera.ColorSpace.Range (src/py/libcamera/py_color_space.cpp)."""

    Full = 0
    Limited = 1


@dataclass(frozen=True)
class ColorSpace:
    """libcamera.ColorSpace: the standard colour spaces picamera2 uses (primaries, transfer
    function, YCbCr encoding and range as in libcamera's src/libcamera/color_space.cpp)."""

    primaries: str
    transferFunction: str  # noqa: N815 (libcamera's attribute names)
    ycbcrEncoding: str  # noqa: N815
    range: Range

    Range = Range

    @staticmethod
    def Sycc() -> ColorSpace:
        return ColorSpace("Rec709", "Srgb", "Rec601", Range.Full)

    @staticmethod
    def Smpte170m() -> ColorSpace:
        return ColorSpace("Smpte170m", "Rec709", "Rec601", Range.Limited)

    @staticmethod
    def Rec709() -> ColorSpace:
        return ColorSpace("Rec709", "Rec709", "Rec709", Range.Limited)


libcamera = ModuleType("libcamera")
libcamera.controls = SimpleNamespace(  # type: ignore[attr-defined]
    AfModeEnum=AfModeEnum, draft=SimpleNamespace(NoiseReductionModeEnum=NoiseReductionModeEnum)
)
libcamera.ColorSpace = ColorSpace  # type: ignore[attr-defined]


@dataclass
class World:
    """What the fake camera sees and what was done to it."""

    scenes: list[npt.NDArray[np.uint8]]
    controls: dict[str, tuple[Any, Any, Any]] = field(default_factory=lambda: dict(CM3_CONTROLS))
    cameras: int = 1
    busy: bool = False
    stalled: bool = False
    extra_stride: int = 64  # padding beyond picamera2's 64-byte alignment
    calls: list[tuple[str, Any]] = field(default_factory=list)
    cameras_opened: list[FakePicamera2] = field(default_factory=list)
    requests: list[FakeRequest] = field(default_factory=list)
    # (frame number, controls) as each set_controls reached the frames
    applied: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    lose_controls: int = 0  # set_controls calls to drop, as picamera2's recycling race can
    echo: bool = True  # ExposureValue echoed in metadata, as the Raspberry Pi IPA does
    full_range: bool = True  # False: the pipeline turns a full-range request into Smpte170m
    # per-request metadata as a Camera Module 3 reports it (keys from libcamera's controls)
    metadata: dict[str, Any] = field(default_factory=lambda: {
        "SensorTimestamp": 762452861000, "ExposureTime": 9980, "AnalogueGain": 2.0,
        "DigitalGain": 1.0, "LensPosition": 5.0, "FocusFoM": 380, "Lux": 312.5,
        "ColourTemperature": 4029, "FrameDuration": 33333,
    })

    def names(self) -> list[str]:
        """The names of the calls made, in order."""
        return [name for name, _ in self.calls]

    def last(self, name: str) -> Any:
        """The argument of the last call named `name`."""
        return next(arg for called, arg in reversed(self.calls) if called == name)

    def expected_y(self, index: int, width: int, height: int) -> npt.NDArray[np.uint8]:
        """The Y plane that request `index` carries for a (width, height) stream."""
        scene = self.scenes[index % len(self.scenes)]
        canvas = np.full((height, width), 255, dtype=np.uint8)
        h, w = min(height, scene.shape[0]), min(width, scene.shape[1])
        canvas[:h, :w] = scene[:h, :w]
        return canvas


class FakeRequest:
    """picamera2.CompletedRequest: buffers per stream until `release()`."""

    def __init__(self, world: World, buffers: dict[str, npt.NDArray[np.uint8]],
                 metadata: dict[str, Any] | None = None) -> None:
        self._world = world
        self.buffers = buffers
        self.released = False
        self._metadata = metadata or {}

    def get_metadata(self) -> dict[str, Any]:
        """The frame's metadata, as libcamera reports it: the world's (settable by tests)
        with the controls in effect for this request on top."""
        if self.released:
            raise RuntimeError("get_metadata on a released request")
        return dict(self._world.metadata) | self._metadata

    def release(self) -> None:
        """Give the buffers back to the camera (it will overwrite them)."""
        self._world.calls.append(("release", self))
        if self.released:
            raise RuntimeError("CompletedRequest: lock now has negative ref_count")
        self.released = True
        for buffer in self.buffers.values():
            buffer.fill(RECYCLED)


class MappedArray:
    """picamera2.MappedArray: the stream's buffer as a (h * 3 // 2, stride) array in `with`."""

    def __init__(
        self, request: FakeRequest, stream: str, reshape: bool = True, write: bool = True
    ) -> None:
        if request.released:
            raise AssertionError("MappedArray on a released request")
        if stream not in request.buffers:
            raise RuntimeError(f"Stream {stream!r} is not defined")
        self._buffer = request.buffers[stream]
        self.write = write
        self.array: npt.NDArray[np.uint8] | None = None

    def __enter__(self) -> MappedArray:
        self.array = self._buffer
        return self

    def __exit__(self, *exc: object) -> None:
        self.array = None


class FakePicamera2:
    """picamera2.Picamera2 over a `World`."""

    world: World  # set on the subclass `make_module` creates

    @classmethod
    def global_camera_info(cls) -> list[dict[str, Any]]:
        """One dict per attached camera, as picamera2 returns."""
        return [{"Model": "imx708", "Location": 2, "Rotation": 180, "Num": n,
                 "Id": f"/base/axi/pcie@120000/rp1/i2c@88000/imx708@{n}a"}
                for n in range(cls.world.cameras)]

    def __init__(self, camera_num: int = 0, verbose_console: Any = None, tuning: Any = None,
                 allocator: Any = None) -> None:
        self.world.calls.append(("Picamera2", camera_num))
        # picamera2.py, Picamera2.__init__: any failure while opening is logged and replaced
        # by this RuntimeError, raised inside the `except`, so the reason is its __context__.
        try:
            if camera_num >= len(self.global_camera_info()):
                raise IndexError("list index out of range")  # cameras[camera_num], no camera
            if self.world.busy:  # libcamera's acquire(), another process holds the camera
                raise RuntimeError("Failed to acquire camera: Device or resource busy")
        except Exception:
            raise RuntimeError("Camera __init__ sequence did not complete.")  # noqa: B904
        self.is_open = True
        self.started = False
        self.camera_config: dict[str, Any] = {}
        self.frames = 0
        self.pending: dict[str, Any] = {}  # set, not yet on a queued request (Controls)
        self.in_flight: list[tuple[int, dict[str, Any]]] = []  # (due frame, controls)
        self.manual: dict[str, Any] = {}  # ExposureTime in effect, reported every frame
        self.world.cameras_opened.append(self)

    @property
    def camera_controls(self) -> dict[str, tuple[Any, Any, Any]]:
        """name -> (min, max, default) of every control the camera advertises."""
        return dict(self.world.controls) if self.is_open else {}

    def create_video_configuration(
        self, main: dict[str, Any] | None = None, lores: dict[str, Any] | None = None,
        raw: dict[str, Any] | None = None, transform: Any = None, colour_space: Any = None,
        buffer_count: int = 6, controls: dict[str, Any] | None = None, display: str = "main",
        encode: str = "main", queue: bool = True, sensor: dict[str, Any] | None = None,
        use_case: str = "video",
    ) -> dict[str, Any]:
        """A video configuration: defaults, then the caller's streams and controls on top."""
        self.world.calls.append(("create_video_configuration", {
            "main": main, "lores": lores, "controls": controls, "buffer_count": buffer_count,
            "colour_space": colour_space}))
        main_cfg = _stream({"format": "XBGR8888", "size": (1280, 720)}, main or {})
        lores_cfg = None if lores is None else _stream(
            {"format": "YUV420", "size": main_cfg["size"]}, lores)
        if colour_space is None:  # picamera2's default: by the main stream's size
            width, height = main_cfg["size"]
            small = width < 1280 or height < 720
            colour_space = ColorSpace.Smpte170m() if small else ColorSpace.Rec709()
        defaults: dict[str, Any] = {}
        if "NoiseReductionMode" in self.camera_controls:
            defaults = {"NoiseReductionMode": NoiseReductionModeEnum.Fast,
                        "FrameDurationLimits": (33333, 33333)}
        return {"use_case": use_case, "buffer_count": buffer_count, "queue": queue,
                "main": main_cfg, "lores": lores_cfg, "raw": raw, "transform": transform,
                "colour_space": colour_space, "controls": defaults | (controls or {}),
                "display": display, "encode": encode, "sensor": sensor}

    def configure(self, camera_config: dict[str, Any]) -> None:
        """Check and apply a configuration (RuntimeError where picamera2 raises one)."""
        self.world.calls.append(("configure", camera_config))
        for name in ("main", "lores"):
            stream = camera_config[name]
            if stream is None:
                continue
            width, height = stream["size"]
            if width % 2 or height % 2:
                raise RuntimeError("width and height should be even")
            if stream["format"] not in ("YUV420", "XBGR8888", "RGB888"):
                raise RuntimeError(f"Bad format {stream['format']} in stream {name}")
            stream["stride"] = -(-width // 64) * 64 + self.world.extra_stride
        lores = camera_config["lores"]
        if lores is not None and (lores["size"][0] > camera_config["main"]["size"][0]
                                  or lores["size"][1] > camera_config["main"]["size"][1]):
            raise RuntimeError("lores stream dimensions may not exceed main stream")
        for control in camera_config["controls"]:
            if control not in self.camera_controls:
                raise RuntimeError(f"Control {control} is not advertised by libcamera")
        if not isinstance(camera_config["colour_space"], ColorSpace):
            raise RuntimeError("Colour space has incorrect type")
        if not self.world.full_range:  # libcamera adjusted it; picamera2 reports what it got
            camera_config = camera_config | {"colour_space": ColorSpace.Smpte170m()}
        self.camera_config = camera_config

    def camera_configuration(self) -> dict[str, Any]:
        """The configuration in effect, as libcamera adjusted it."""
        return self.camera_config

    def stream_configuration(self, name: str = "main") -> dict[str, Any]:
        """The named stream's configuration (with picamera2's rounding and stride)."""
        return dict(self.camera_config[name])

    def start(self, config: Any = None, show_preview: bool = False) -> None:
        """Start streaming."""
        self.world.calls.append(("start", config))
        if not self.camera_config:
            raise RuntimeError("Camera has not been configured")
        self.started = True
        if self.pending:  # picamera2's start_ passes them to camera.start: the first frame
            self.in_flight.append((1, self.pending))
            self.pending = {}

    def capture_request(self, wait: Any = None, signal_function: Any = None,
                        flush: Any = None) -> FakeRequest:
        """The next completed request; TimeoutError after `wait` seconds when stalled."""
        self.world.calls.append(("capture_request", wait))
        if not self.started or self.world.stalled:
            if isinstance(wait, (int, float)) and not isinstance(wait, bool):
                raise TimeoutError
            raise AssertionError("capture_request would block forever")
        buffers = {name: self._render(self.camera_config[name])
                   for name in ("main", "lores") if self.camera_config[name] is not None}
        self.frames += 1
        request = FakeRequest(self.world, buffers, self._metadata_now())
        self.world.requests.append(request)
        return request

    def set_controls(self, controls: dict[str, Any]) -> None:
        """picamera2's set_controls: names checked, values taken as given, applied later."""
        self.world.calls.append(("set_controls", dict(controls)))
        if not isinstance(controls, dict):
            raise RuntimeError(f"Cannot update controls with {type(controls)} type")
        for name, value in controls.items():
            if name not in self.camera_controls:
                raise RuntimeError(f"Control {name} is not advertised by libcamera")
            self.pending[name] = value
        if self.world.lose_controls > 0:  # set on a Controls object being replaced
            self.world.lose_controls -= 1
            self.pending = {}
        if self.started and self.pending:  # the next queued request carries them
            self.in_flight.append((self.frames + 1 + LATENCY, self.pending))
            self.pending = {}

    def _metadata_now(self) -> dict[str, Any]:
        """The controls that reach this frame: ExposureTime stays, ExposureValue is echoed
        once (the IPA reports a control in the request that carried it)."""
        due = [c for frame, c in self.in_flight if frame <= self.frames]
        self.in_flight = [(f, c) for f, c in self.in_flight if f > self.frames]
        echoed: dict[str, Any] = {}
        for controls in due:
            self.world.applied.append((self.frames, controls))
            echoed |= controls if self.world.echo else {
                k: v for k, v in controls.items() if k != "ExposureValue"}
            if "ExposureTime" in controls:
                self.manual["ExposureTime"] = controls["ExposureTime"]
        return echoed | self.manual

    def _render(self, stream: dict[str, Any]) -> npt.NDArray[np.uint8]:
        """A YUV420 buffer, shaped as picamera2 shapes it: (h * 3 // 2, stride)."""
        width, height = stream["size"]
        stride = stream["stride"]
        flat = np.full(stride * height * 3 // 2, PAD, dtype=np.uint8)
        y = flat[: stride * height].reshape(height, stride)
        y[:, :width] = self.world.expected_y(self.frames, width, height)
        chroma = flat[stride * height :].reshape(height, stride // 2)  # U rows, then V rows
        chroma[:, : width // 2] = 128
        return flat.reshape(height * 3 // 2, stride)

    def cancel_all_and_flush(self) -> None:
        """Cancel pending jobs (after a timeout)."""
        self.world.calls.append(("cancel_all_and_flush", None))

    def stop(self) -> None:
        """Stop streaming (harmless when stopped)."""
        self.world.calls.append(("stop", None))
        self.started = False

    def close(self) -> None:
        """Stop and release the camera (harmless when closed)."""
        self.world.calls.append(("close", None))
        self.started = False
        self.is_open = False


def _stream(defaults: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    """picamera2's stream merge: only known keys, sizes rounded down to even."""
    for key in updates:
        if key not in ("format", "size", "stride", "preserve_ar"):
            raise ValueError(f"Bad key {key!r}: valid stream configuration keys are ...")
    stream = defaults | updates
    width, height = stream["size"]
    stream["size"] = (width - width % 2, height - height % 2)
    return stream


def make_module(world: World) -> ModuleType:
    """A `picamera2` module whose camera shows `world`."""
    module = ModuleType("picamera2")
    module.Picamera2 = type("Picamera2", (FakePicamera2,), {"world": world})  # type: ignore[attr-defined]
    module.MappedArray = MappedArray  # type: ignore[attr-defined]
    return module
