"""Glare steering: advice -> EV requests (pure), its config, and the daemon wiring it."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes import QuietBus
from PIL import Image

from appliance import sequences
from appliance.codes import Classifier
from appliance.config import CameraConfig, CodesConfig, DebounceConfig, DecodeConfig, load
from appliance.daemon import ScanService
from appliance.debounce import Debouncer
from appliance.decode import Decoder
from appliance.errors import ConfigError
from appliance.exposure import ExposureSteer, SteerSettings
from appliance.feedback import Signal
from appliance.pipeline import ScanHandler
from appliance.replay import ReplaySource
from appliance.source import ExposureControl

BASE = -0.5
GLARE = -1.0  # what the decoder advises on a glared, followed region


def steer(**changes: Any) -> ExposureSteer:
    return ExposureSteer(SteerSettings(base_ev=BASE, **changes))


def feed(target: ExposureSteer, advice: list[float], fps: float = 10.0, start: float = 0.0,
         in_view: bool = False) -> list[tuple[float, float]]:
    """(time, EV requested) for `advice` observed at `fps` from `start`."""
    asked = []
    for i, value in enumerate(advice):
        now = start + i / fps
        ev = target.observe(value, now, in_view)
        if ev is not None:
            asked.append((round(now, 3), ev))
    return asked


# --- ExposureSteer ------------------------------------------------------------------------


def test_no_advice_asks_nothing() -> None:
    target = steer()
    assert feed(target, [0.0] * 100) == []
    assert target.ev == BASE


def test_glare_steps_darker_at_most_once_per_interval_down_to_the_floor() -> None:
    target = steer(step=1.0, depth=2.0, interval_s=1.0)
    asked = feed(target, [GLARE] * 50)  # 5 s of glare at 10 fps
    assert asked == [(0.0, -1.5), (1.0, -2.5)]  # then held at base - depth
    assert target.ev == -2.5


def test_a_step_is_at_most_step_stops_whatever_the_advice() -> None:
    target = steer(step=0.5, depth=2.0)
    assert feed(target, [-3.0] * 11) == [(0.0, -1.0), (1.0, -1.5)]


def test_the_floor_cuts_the_last_step_short() -> None:
    target = steer(step=1.0, depth=1.5)
    assert feed(target, [GLARE] * 21) == [(0.0, -1.5), (1.0, -2.0)]


def test_returns_to_base_after_hold_without_advice() -> None:
    target = steer(hold_s=2.0)
    assert feed(target, [GLARE]) == [(0.0, -1.5)]
    # the glare stops at 0.0: nothing changes for 2 s, then one request back to the base
    asked = feed(target, [0.0] * 30, start=0.1)
    assert asked == [(2.0, BASE)]
    assert target.ev == BASE


def test_holds_while_glare_is_advised_even_at_the_floor() -> None:
    target = steer(depth=1.0, hold_s=2.0)
    assert feed(target, [GLARE] * 100) == [(0.0, -1.5)]  # 10 s at the floor: no way back


def test_a_code_in_view_holds_a_steered_exposure() -> None:
    target = steer(hold_s=2.0)
    feed(target, [GLARE])
    # the card is read now that the picture is darker: no advice, but keep what works
    assert feed(target, [0.0] * 50, start=0.1, in_view=True) == []
    assert feed(target, [0.0] * 30, start=5.1) == [(7.0, BASE)]


def test_a_code_in_view_alone_never_steers() -> None:
    target = steer()
    assert feed(target, [0.0] * 50, in_view=True) == []


def test_glare_again_after_the_return_steps_again_at_once() -> None:
    target = steer(hold_s=1.0, interval_s=5.0)
    feed(target, [GLARE])
    assert feed(target, [0.0] * 11, start=0.1) == [(1.0, BASE)]
    assert feed(target, [GLARE], start=1.5) == [(1.5, -1.5)]


@pytest.mark.parametrize("changes", [{"step": 0.0}, {"depth": 0.0}])
def test_zero_step_or_depth_turns_it_off(changes: dict[str, float]) -> None:
    target = steer(**changes)
    assert not target._settings.enabled
    assert feed(target, [GLARE] * 30) == []


def test_nonsense_advice_is_ignored() -> None:
    target = steer()
    assert feed(target, [float("nan"), 1.0, 0.0]) == []
    assert feed(target, [float("-inf")], start=1.0) == [(1.0, -1.5)]  # one step, no more


def test_reset_forgets_every_step() -> None:
    target = steer()
    feed(target, [GLARE] * 11)
    target.reset()
    assert target.ev == BASE
    assert feed(target, [GLARE], start=1.05) == [(1.05, -1.5)]  # no interval to wait for


# --- config -------------------------------------------------------------------------------


def test_settings_come_from_the_camera_section() -> None:
    cfg = CameraConfig(ev=-1.0, glare_ev_step=0.5, glare_ev_depth=3.0, glare_ev_interval_s=2.0,
                       glare_ev_hold_s=4.0)
    assert SteerSettings.from_config(cfg) == SteerSettings(-1.0, 0.5, 3.0, 2.0, 4.0)
    assert SteerSettings.from_config(CameraConfig()) == SteerSettings(-0.5, 1.0, 2.0, 1.0, 2.0)


def test_bad_glare_keys_are_reported_with_their_paths(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[camera]\nglare_ev_step = -1\nglare_ev_depth = 9\n"
                    "glare_ev_interval_s = 0\nglare_ev_hold_s = 601\n")
    with pytest.raises(ConfigError) as caught:
        load(path, environ={})
    problems = "\n".join(caught.value.problems)
    for key in ("glare_ev_step", "glare_ev_depth", "glare_ev_interval_s", "glare_ev_hold_s"):
        assert f"camera.{key}" in problems


# --- through the daemon's camera thread ---------------------------------------------------


class FakeClock:
    """Monotonic time that moves only when the replay waits for its next frame."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> None:
        self.now += seconds


class SteeredReplay(ReplaySource):
    """A replay that records when each EV request arrived (replay clock)."""

    def __init__(self, paths: list[Path], clock: FakeClock) -> None:
        super().__init__(paths, fps=15.0, clock=clock, wait=clock.wait)
        self.asked: list[tuple[float, float]] = []
        self._now = clock

    def set_ev(self, ev: float) -> None:
        super().set_ev(ev)
        self.asked.append((self._now() - 100.0, ev))


class NoFeedback:
    def show(self, signal: Signal) -> None: ...

    def close(self) -> None: ...


def write_frames(folder: Path, frames: list[np.ndarray[Any, Any]]) -> Path:
    folder.mkdir()
    for i, pixels in enumerate(frames):
        Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return folder


def test_a_glared_card_darkens_the_camera_and_its_leaving_restores_the_base(
        tmp_path: Path) -> None:
    card = sequences.held_card("glare", seed=1, length=30)  # 2 s at 15 fps
    empty = sequences.empty_scene("still", seed=1, length=60)  # then 4 s of empty counter
    folder = write_frames(tmp_path / "frames", [*card.frames, *empty.frames])
    clock = FakeClock()
    source = SteeredReplay([folder], clock)
    assert isinstance(source, ExposureControl)
    camera = CameraConfig()  # ev -0.5, steps of 1 stop, at most 2 below, 1 s apart, 2 s hold
    bus = QuietBus()
    service = ScanService(
        device_id="t", source=source, decoder=Decoder(DecodeConfig()),
        debouncer=Debouncer(DebounceConfig()),
        handler=ScanHandler("t", Classifier(CodesConfig()), bus.publish_event),
        bus=bus, feedback=NoFeedback(), steer=ExposureSteer(SteerSettings.from_config(camera)),
    )
    assert service.run(threading.Event()) == 0  # the replay ended

    assert [e["value"] for e in bus.events] == [card.expected]  # read once, as before
    asked = source.asked
    card_left = len(card.frames) / 15
    darker = [(t, ev) for t, ev in asked if t < card_left]
    assert darker and all(ev < camera.ev for _, ev in darker)
    assert min(ev for _, ev in asked) >= camera.ev - camera.glare_ev_depth
    steps = [t for t, _ in darker]
    assert all(b - a >= camera.glare_ev_interval_s - 1e-9 for a, b in itertools.pairwise(steps))
    back = [(t, ev) for t, ev in asked if t >= card_left]
    assert [ev for _, ev in back] == [camera.ev]  # once, after the hold
    assert back[0][0] >= card_left - 1 / 15 + camera.glare_ev_hold_s - 1e-9
    assert list(source.ev_requests) == [ev for _, ev in asked]


def test_a_source_without_exposure_control_is_left_alone(tmp_path: Path) -> None:
    card = sequences.held_card("glare", seed=1, length=30)
    folder = write_frames(tmp_path / "frames", list(card.frames))

    class PlainSource:
        """read/close only, like the test and bench sources."""

        def __init__(self) -> None:
            self.inner = ReplaySource([folder], fps=0)

        def read(self) -> Any:
            return self.inner.read()

        def close(self) -> None: ...

    source = PlainSource()
    assert not isinstance(source, ExposureControl)
    bus = QuietBus()
    steered = ExposureSteer(SteerSettings(base_ev=BASE))
    service = ScanService(
        device_id="t", source=source, decoder=Decoder(DecodeConfig()),
        debouncer=Debouncer(DebounceConfig()),
        handler=ScanHandler("t", Classifier(CodesConfig()), bus.publish_event),
        bus=bus, feedback=NoFeedback(), steer=steered,
    )
    assert service.run(threading.Event()) == 0
    assert [e["value"] for e in bus.events] == [card.expected]
    assert steered.ev < BASE  # the steer ran; nothing could take its requests, nothing failed
