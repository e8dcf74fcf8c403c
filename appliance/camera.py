"""The camera on the Pi (`PicameraSource`, a `FrameSource` of source.py) and `open_source`,
which opens the source the config names (picamera2 here, or replay.py's images).

`PicameraSource` follows picamera2's documented API (the Picamera2 manual and
`picamera2/picamera2.py`, `picamera2/request.py`): a video configuration with YUV420
streams, controls passed in the configuration, `capture_request()` / `MappedArray` /
`release()`. The Y plane of YUV420 is the grayscale picture, so no colour conversion is
done. It is asked for in full range (`colour_space=libcamera.ColorSpace.Sycc()`, 0..255):
picamera2's video configuration otherwise picks Smpte170m below 1280x720 and Rec709 above
(picamera2/picamera2.py `create_video_configuration`), both limited range in libcamera
(src/libcamera/color_space.cpp), where white is about 235 and the lores stream follows the
main one (raspberrypi/rpicam-apps issue 780): glare (>= 250, preprocess.py) would never
show, and the exposure steering never start. The colour space picamera2 reports back after
`configure` is checked, and a limited range is logged as a warning.

picamera2 0.3.20 or newer is required (checked when the camera opens):
`capture_request(wait=seconds)` times out and `cancel_all_and_flush()` exists only from
then on (picamera2 commit ddd2ca3); before, a numeric `wait` blocked for ever on a dislodged
cable. After such a failure, `stop()` itself may hang in libcamera (picamera2 issues 1065
and 1264): the camera thread then stops beating and the service watchdog restarts the
daemon, which reopens the camera.

Both sources are also an `ExposureControl`: `set_ev` is how glare steering (appliance/exposure.py)
darkens the picture. On the Pi it is `Picamera2.set_controls({"ExposureValue": ev})`,
which picamera2 (picamera2/picamera2.py `set_controls`, picamera2/controls.py
`Controls.__setattr__`) checks by name only: a control the camera does not advertise
raises RuntimeError("Control X is not advertised by libcamera"), and values are not range
checked there, nor by the Raspberry Pi IPA, which applies 2^EV unclamped
(raspberrypi/libcamera src/ipa/rpi/common/ipa_base.cpp, EXPOSURE_VALUE): so the value is
clamped here to the range `camera_controls["ExposureValue"]` reports (-8..8 on the Pi).
The controls ride on the next request picamera2 queues to libcamera (picamera2/request.py
`CompletedRequest.release`), so they arrive a few frames later. libcamera applies EV while
at least one of ExposureTimeMode and AnalogueGainMode is automatic (control_ids_core.yaml,
ExposureValue): with the exposure time fixed by `camera.max_exposure_us`, EV moves the gain
only, which cannot go below 1.0, so the fixed ExposureTime is shortened by the same
factor as well.

Calling `set_controls` from the capture thread is safe (picamera2's `Controls` takes its
own lock), but a request can still be lost: when picamera2 recycles a request (in its
event-loop thread too) it reads the pending controls and then replaces the `Controls`
object, so controls set between those two steps are dropped. The Raspberry Pi IPA echoes
ExposureValue in the metadata of the request that carried it, so a request whose echo has
not come back within `ECHO_FRAMES` frames is sent again (twice at most).
"""

from __future__ import annotations

import importlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from appliance.config import CameraConfig
from appliance.errors import CameraError, ConfigError
from appliance.replay import ReplaySource
from appliance.source import Exposure, Frame, FrameSource

log = logging.getLogger(__name__)

# picamera2 keeps only the newest finished request (`_max_queue_len` 1 with `queue`) and hands
# it over on `capture_request`: one buffer filling, one finished or with us, one spare
BUFFER_COUNT = 3
CAPTURE_TIMEOUT_S = 2.0  # no frame for this long (plus two intervals): the camera is gone
ECHO_FRAMES = 8  # frames an EV request may take to show in the metadata before it is resent
MAX_RESENDS = 2


class _Request(Protocol):
    """The part of picamera2's `CompletedRequest` we use."""

    def get_metadata(self) -> dict[str, Any]: ...

    def release(self) -> None: ...


class _Mapped(Protocol):
    """picamera2's `MappedArray`: the stream's buffer as an array, valid inside `with`."""

    array: npt.NDArray[np.uint8] | None

    def __enter__(self) -> _Mapped: ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class _Camera(Protocol):
    """The part of `picamera2.Picamera2` we use."""

    @property
    def camera_controls(self) -> dict[str, tuple[Any, Any, Any]]: ...

    def create_video_configuration(
        self,
        main: dict[str, Any],
        lores: dict[str, Any] | None,
        controls: dict[str, Any],
        buffer_count: int,
        colour_space: Any,
    ) -> dict[str, Any]: ...

    def configure(self, camera_config: dict[str, Any]) -> None: ...

    def camera_configuration(self) -> dict[str, Any]: ...

    def stream_configuration(self, name: str) -> dict[str, Any]: ...

    def start(self) -> None: ...

    def capture_request(self, wait: float) -> _Request: ...

    def set_controls(self, controls: dict[str, Any]) -> None: ...

    def cancel_all_and_flush(self) -> None: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...


class PicameraSource:
    """Frames from the Raspberry Pi camera: the Y plane of the lores (or main) YUV420 stream."""

    def __init__(
        self,
        cfg: CameraConfig,
        picamera2_module: ModuleType | None = None,
        libcamera_module: ModuleType | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self._sequence = 0
        self._timeout_s = CAPTURE_TIMEOUT_S + 2.0 / cfg.fps
        self._ev_controls: _EvControls | None = None  # set by _configure
        picamera2, libcamera = _import_picamera2(picamera2_module, libcamera_module)
        if not hasattr(picamera2.Picamera2, "cancel_all_and_flush"):
            raise CameraError(
                "picamera2 is too old: 0.3.20 or newer is needed for capture timeouts "
                "(apt install --only-upgrade python3-picamera2)"
            )
        self._mapped_array: Callable[..., _Mapped] = picamera2.MappedArray
        try:
            if not picamera2.Picamera2.global_camera_info():
                raise CameraError(
                    "no camera found: is the ribbon cable seated and the camera detected "
                    "(rpicam-hello --list-cameras)?"
                )
            camera: _Camera = picamera2.Picamera2(camera_num=0)
        except (RuntimeError, IndexError, OSError) as exc:
            # picamera2 replaces every failure of its __init__ with RuntimeError("Camera
            # __init__ sequence did not complete."), raised inside its `except` (picamera2.py,
            # Picamera2.__init__): the reason ("Device or resource busy") is in __context__.
            cause = exc.__context__
            detail = f"{exc}" if cause is None else f"{exc} {type(cause).__name__}: {cause}"
            raise CameraError(
                f"cannot open the camera: is the ribbon cable seated, or is another program "
                f"using it? (picamera2: {detail})"
            ) from exc
        self._camera = camera
        try:
            self._stream, (self._width, self._height) = self._configure(cfg, libcamera)
            camera.start()
        except (RuntimeError, ValueError, KeyError, OSError) as exc:
            self._close_camera()
            raise CameraError(f"cannot configure the camera (picamera2: {exc})") from exc
        except CameraError:
            self._close_camera()
            raise
        log.info("camera started: %s stream %dx%d at %.1f fps",
                 self._stream, self._width, self._height, cfg.fps)

    def _configure(self, cfg: CameraConfig, libcamera: Any) -> tuple[str, tuple[int, int]]:
        """Create and apply the video configuration; the decoded stream's name and size."""
        camera = self._camera
        available = camera.camera_controls
        lores: dict[str, Any] | None = None
        if cfg.lores_width and cfg.lores_height:
            if cfg.lores_width > cfg.width or cfg.lores_height > cfg.height:
                raise CameraError(
                    f"camera lores {cfg.lores_width}x{cfg.lores_height} must not exceed the "
                    f"main stream {cfg.width}x{cfg.height}"
                )
            if abs(cfg.lores_width * cfg.height - cfg.lores_height * cfg.width) > cfg.width:
                log.warning("lores %dx%d and main %dx%d differ in aspect ratio: "
                            "the decoded picture is stretched", cfg.lores_width,
                            cfg.lores_height, cfg.width, cfg.height)
            lores = {"format": "YUV420", "size": (cfg.lores_width, cfg.lores_height)}
        exposure = _exposure_controls(cfg, available)
        controls = exposure | _focus_controls(cfg, available, libcamera)
        self._ev_controls = _EvControls.of(cfg.ev, exposure.get("ExposureTime"), available)
        config = camera.create_video_configuration(
            main={"format": "YUV420", "size": (cfg.width, cfg.height)},
            lores=lores,
            controls=controls,
            buffer_count=BUFFER_COUNT,
            colour_space=libcamera.ColorSpace.Sycc(),
        )
        camera.configure(config)
        colour = camera.camera_configuration().get("colour_space")
        if getattr(colour, "range", None) != libcamera.ColorSpace.Range.Full:
            log.warning("the camera delivers limited-range video (%s): its white is about 235, "
                        "so glare (>= 250) is never seen and the exposure is never steered "
                        "darker", colour)
        stream = "main" if lores is None else "lores"
        # picamera2 may round sizes (even widths and heights): read back what it chose.
        width, height = camera.stream_configuration(stream)["size"]
        log.debug("camera controls: %s", controls)
        return stream, (int(width), int(height))

    def read(self) -> Frame | None:
        """The newest frame's Y plane; None once closed; CameraError when the camera fails."""
        with self._lock:
            if self._closed:
                return None
            try:
                request = self._camera.capture_request(wait=self._timeout_s)
            except TimeoutError as exc:
                # picamera2 documents cancel_all_and_flush() for exactly this (a dislodged
                # cable): the unfinished capture job must not hold a request forever.
                self._camera.cancel_all_and_flush()
                raise CameraError(
                    f"no frame from the camera for {self._timeout_s:.1f} s: "
                    f"is the ribbon cable seated?"
                ) from exc
            except RuntimeError as exc:
                raise CameraError(f"camera capture failed (picamera2: {exc})") from exc
            timestamp = time.monotonic()
            try:
                pixels = self._y_plane(request)
                metadata = self._metadata(request)
            finally:
                request.release()
            self._resend_if_lost(metadata)
            exposure = Exposure.from_metadata(metadata)
            self._sequence += 1
            return Frame(pixels, timestamp, self._sequence, exposure)

    @property
    def ev(self) -> float | None:
        """The EV last asked of the camera (clamped); None when it has no EV control."""
        return None if self._ev_controls is None else self._ev_controls.ev

    def set_ev(self, ev: float) -> None:
        """Ask for EV `ev` (clamped to the camera's range; the fixed exposure time, if any,
        shortened alike); picamera2 applies it a few frames later. A camera without
        ExposureValue ignores it; a refusal is logged, never raised."""
        known = self._ev_controls
        if known is None:
            return
        controls = known.controls(ev)
        with self._lock:
            if self._closed or not self._send(controls):
                return
            known.sent(controls)
        log.info("camera exposure: %s", controls)

    def _send(self, controls: dict[str, Any]) -> bool:
        """`set_controls` (the lock held); False, logged, when picamera2 refuses them."""
        try:
            self._camera.set_controls(controls)
        except RuntimeError as exc:  # picamera2: "Control X is not advertised by libcamera"
            log.warning("camera refused the exposure controls %s: %s", controls, exc)
            return False
        return True

    def _resend_if_lost(self, metadata: dict[str, Any] | None) -> None:
        """Send the last EV request again when its echo is overdue (the lock held)."""
        again = None if self._ev_controls is None else self._ev_controls.overdue(metadata)
        if again is not None:
            log.info("no echo of the exposure controls %s: sending them again", again)
            self._send(again)

    @staticmethod
    def _metadata(request: _Request) -> dict[str, Any] | None:
        """The frame's metadata; None (never an error) when it fails or is no dict."""
        try:
            metadata = request.get_metadata()
        except Exception:  # informational only: the frame itself is good
            log.debug("no metadata for this frame", exc_info=True)
            return None
        return metadata if isinstance(metadata, dict) else None

    def _y_plane(self, request: _Request) -> npt.NDArray[np.uint8]:
        """A copy of the Y plane (height x width, stride padding dropped) of `request`."""
        with self._mapped_array(request, self._stream, write=False) as mapped:
            yuv = mapped.array
            if (
                yuv is None
                or yuv.ndim != 2
                or yuv.shape[0] < self._height * 3 // 2
                or yuv.shape[1] < self._width
            ):
                shape = None if yuv is None else yuv.shape
                raise CameraError(
                    f"unexpected YUV420 buffer {shape} for a {self._width}x{self._height} stream"
                )
            # Copy the Y plane only (not U/V): release() hands the buffer back to the camera
            # (and close() unmaps it) while a Frame may still be held, so a view would be
            # read after the camera reused it.
            return yuv[: self._height, : self._width].copy()

    def close(self) -> None:
        """Stop and close the camera (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._close_camera()

    def _close_camera(self) -> None:
        try:
            self._camera.stop()
            self._camera.close()
        except RuntimeError as exc:
            log.warning("camera did not close cleanly: %s", exc)
        else:
            log.info("camera closed")


def _import_picamera2(
    picamera2: ModuleType | None, libcamera: ModuleType | None
) -> tuple[Any, Any]:
    """The picamera2 and libcamera modules: the injected ones, else imported now."""
    try:
        if picamera2 is None:
            picamera2 = importlib.import_module("picamera2")
        if libcamera is None:
            libcamera = importlib.import_module("libcamera")
    except ImportError as exc:
        raise CameraError(
            f"picamera2 is not installed (apt install python3-picamera2, and create the "
            f"venv with --system-site-packages): {exc}"
        ) from exc
    return picamera2, libcamera


def _exposure_controls(cfg: CameraConfig, available: dict[str, Any]) -> dict[str, Any]:
    """Frame rate, exposure cap and EV, limited to the controls the camera advertises.

    libcamera has no "maximum exposure" control for its AGC (only the tuning file's
    exposure modes), so a cap shorter than the frame fixes ExposureTime; gain stays
    automatic and still follows ExposureValue. Short exposures keep phone screens sharp.
    """
    frame_us = round(1_000_000 / cfg.fps)
    wanted: dict[str, Any] = {"FrameDurationLimits": (frame_us, frame_us), "ExposureValue": cfg.ev}
    if cfg.max_exposure_us < frame_us:
        wanted["ExposureTime"] = cfg.max_exposure_us
    missing = sorted(set(wanted) - set(available))
    if missing:
        log.info("camera lacks controls %s; using its defaults for them", ", ".join(missing))
    return {name: value for name, value in wanted.items() if name in available}


@dataclass(slots=True)
class _EvControls:
    """The camera's EV range and fixed exposure time: what `set_ev` sends."""

    base_ev: float
    low: float
    high: float
    fixed_us: int | None  # ExposureTime fixed by camera.max_exposure_us, else None
    min_us: int  # the shortest ExposureTime the camera takes
    ev: float
    awaiting: dict[str, Any] | None = None  # sent, its echo not seen yet
    frames_left: int = 0  # until it is overdue
    resends: int = 0

    @classmethod
    def of(cls, base_ev: float, fixed_us: object,
           available: dict[str, Any]) -> _EvControls | None:
        """From the advertised controls; None when the camera has no ExposureValue."""
        if "ExposureValue" not in available:
            log.info("camera lacks ExposureValue: glare cannot darken the picture")
            return None
        low = _number(available["ExposureValue"][0], -8.0)
        high = _number(available["ExposureValue"][1], 8.0)
        fixed = fixed_us if isinstance(fixed_us, int) and fixed_us > 0 else None
        shortest = available.get("ExposureTime", (1, None, None))[0]
        min_us = max(1, round(_number(shortest, 1.0)))
        base = min(max(base_ev, low), high)
        return cls(base, low, high, fixed, min_us, base)

    def controls(self, ev: float) -> dict[str, Any]:
        """The controls for `ev`, clamped: ExposureValue and the fixed time scaled alike."""
        ev = min(max(ev, self.low), self.high) if math.isfinite(ev) else self.base_ev
        wanted: dict[str, Any] = {"ExposureValue": ev}
        if self.fixed_us is not None:
            scaled = round(self.fixed_us * 2.0 ** min(ev - self.base_ev, 0.0))
            wanted["ExposureTime"] = max(self.min_us, scaled)
        return wanted

    def sent(self, controls: dict[str, Any]) -> None:
        """`controls` went to picamera2: wait for their echo."""
        self.ev = controls["ExposureValue"]
        self.awaiting, self.frames_left, self.resends = controls, ECHO_FRAMES, 0

    def overdue(self, metadata: dict[str, Any] | None) -> dict[str, Any] | None:
        """The controls to send again when this frame still lacks their echo, else None."""
        if self.awaiting is None:
            return None
        echo = None if metadata is None else metadata.get("ExposureValue")
        if isinstance(echo, (int, float)) and math.isclose(
                echo, self.awaiting["ExposureValue"], abs_tol=1e-3):  # a float32 in libcamera
            self.awaiting = None
            return None
        self.frames_left -= 1
        if self.frames_left > 0:
            return None
        if self.resends == MAX_RESENDS:  # a camera that never echoes: trust it
            self.awaiting = None
            return None
        self.resends += 1
        self.frames_left = ECHO_FRAMES
        return self.awaiting


def _number(value: object, default: float) -> float:
    """`value` as a finite float, else `default` (picamera2 may report None)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return float(value) if math.isfinite(value) else default


def _focus_controls(cfg: CameraConfig, available: dict[str, Any], libcamera: Any) -> dict[str, Any]:
    """Autofocus controls for cameras with a focus motor (Camera Module 3), else none."""
    if cfg.autofocus == "off":
        return {}
    if "AfMode" not in available:
        log.info("camera has no autofocus: camera.autofocus = %r ignored", cfg.autofocus)
        return {}
    modes = libcamera.controls.AfModeEnum
    if cfg.autofocus == "continuous":
        return {"AfMode": modes.Continuous}
    return {"AfMode": modes.Manual, "LensPosition": cfg.lens_position}


def open_source(cfg: CameraConfig) -> FrameSource:
    """The frame source `cfg.source` names."""
    if cfg.source == "replay":
        if cfg.replay_path is None:  # a config problem: retrying cannot fix it
            raise ConfigError(
                ['camera.replay_path: camera.source = "replay" needs a PNG/JPEG file or a folder']
            )
        return ReplaySource([cfg.replay_path], fps=cfg.fps, loop=cfg.replay_loop)
    return PicameraSource(cfg)
