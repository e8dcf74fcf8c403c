"""A running scanner with its technician page, for tests/test_web*.py: the real daemon
(`assembly.build`) on replayed frames, a real Mosquitto, gpiozero's MockFactory for the pins,
and the page on a free loopback port."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from broker import Mosquitto
from gpiozero.pins.mock import MockFactory
from PIL import Image

from appliance.assembly import build
from appliance.config import Config
from appliance.daemon import ScanService
from appliance.feedback import Feedback
from appliance.samples import background, low_contrast, render_code
from appliance.source import Frame, FrameSource
from appliance.web.run import Attached, attach

CARD = "LC-7F3K9Q2MWX"  # masked: "LC******WX"
SIZE = (640, 360)


def camera_like(pixels: Any) -> Any:
    """Grey levels as an auto-exposed camera gives them: white paper below saturation."""
    return low_contrast(pixels, 15, 215)


def card_frame(seed: int = 11, module_px: int = 5) -> Any:
    """A counter with the loyalty card's QR in the middle: (frame, the code's centre)."""
    scene = camera_like(background(SIZE, np.random.default_rng(seed)))
    code = camera_like(render_code(CARD, module_px=module_px))
    out = scene.copy()
    y, x = (SIZE[1] - code.shape[0]) // 2, (SIZE[0] - code.shape[1]) // 2
    out[y:y + code.shape[0], x:x + code.shape[1]] = code
    return out, (x + code.shape[1] // 2, y + code.shape[0] // 2)


def write_frames(folder: Path, empty: int = 10, card: int = 5) -> Path:
    """A loop of `empty` counter frames, then `card` frames with a loyalty card's QR."""
    folder.mkdir(parents=True)
    scene = camera_like(background(SIZE, np.random.default_rng(11)))
    with_card = card_frame()[0]
    for index in range(empty + card):
        Image.fromarray(with_card if index >= empty else scene).save(folder / f"{index:03d}.png")
    return folder


def web_config(broker: Mosquitto, frames: Path, state: Path, **web: Any) -> Config:
    return Config.model_validate({
        "device": {"id": "test-counter", "state_dir": str(state)},
        "camera": {"source": "replay", "replay_path": str(frames), "replay_loop": True,
                   "fps": 15},
        "mqtt": {"host": broker.host, "port": broker.port},
        "web": {"port": 0, **web},
    })


class Running:
    """The service, its page and the mock pins."""

    def __init__(self, service: ScanService, web: Attached, pins: MockFactory) -> None:
        self.service = service
        self.web = web
        self.pins = pins
        assert web.page is not None
        self.url = web.page.url.rstrip("/")


@contextmanager
def running_device(cfg: Config, source: FrameSource | None = None) -> Iterator[Running]:
    """Run the daemon (on `source`, else the config's replay) and its page until the end."""
    pins = MockFactory()
    service = build(cfg, source=source, feedback=Feedback.from_config(cfg.feedback, pins),
                    stop_when_source_ends=source is None)
    web = attach(cfg, service)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), name="daemon")
    thread.start()
    try:
        yield Running(service, web, pins)
    finally:
        stop.set()
        thread.join(timeout=20)
        web.close()
        assert not thread.is_alive()


def wait_until(check: Callable[[], Any], timeout: float = 10.0, every: float = 0.05) -> Any:
    """Poll `check` until it returns something truthy; that value, or AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {check}")
        threading.Event().wait(every)


class SwitchableSource:
    """A camera stand-in paced at `fps`: shows `picture` until the test swaps it (`show`),
    and records when it did, to time the page against the frame."""

    def __init__(self, picture: Any, fps: float = 15.0) -> None:
        self._picture = picture
        self._interval = 1.0 / fps
        self._sequence = 0
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self.shown_at = time.monotonic()

    def show(self, picture: Any) -> float:
        """Show `picture` from the next frame on; when (monotonic)."""
        with self._lock:
            self._picture = picture
            self.shown_at = time.monotonic()
            return self.shown_at

    def read(self) -> Frame | None:
        if self._closed.wait(self._interval):
            return None
        with self._lock:
            self._sequence += 1
            return Frame(self._picture, time.monotonic(), self._sequence)

    def close(self) -> None:
        self._closed.set()
