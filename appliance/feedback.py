"""LED and buzzer feedback at the counter: five patterns a customer can tell apart.

Every pattern differs in colour AND in buzzer rhythm, so it reads without colour vision
(beeps) and without hearing (LEDs):

=========  =====================================  ===========================================
signal     LEDs                                   buzzer
=========  =====================================  ===========================================
READY      green steady on, red off               silent
ACCEPTED   green winks off twice (0.08 s each)    1 short beep (0.10 s) between the winks,
           around the beep, then READY            then READY
DENIED     green off, red 3 quick blinks          3 quick beeps with the blinks
           (0.12 s on / 0.12 s off), then READY   (0.12 s on / 0.12 s off), then READY (0.72 s)
OFFLINE    red slow blink (1.0 s on / 1.0 s off)  1 long beep (0.8 s) once at entry, then
           until another signal                   silent
BUSY       green and red alternate (0.15 s each)  silent
           until another signal
=========  =====================================  ===========================================

The constants below hold these timings; `PATTERNS` is the table in code form.

Threads: one pattern thread drives all three devices, so the beeps stay in lock-step with
the blinks and a pattern can end in READY. (gpiozero's own `blink()` runs one thread per
device and cannot chain "three blinks, then steady green".) `show()` is non-blocking: it
stops the running pattern (its waits are on an Event, so this is immediate) and starts the
new one. `show()` and `close()` are safe to call from any thread.

Failures (issue 7): LEDs that fail must never stop the scanning. gpiozero tries its pin
factories in turn (lgpio, RPi.GPIO, pigpio, then its own "native" /dev/gpiomem pins;
gpiozero/devices.py `_default_pin_factory`), so lgpio failing at import (it cannot create
its `.lgd-nfy*` pipe in the working directory: gpiozero issue 1106, lg issues 12 and 22)
still lights the LEDs on a Pi 4 through the native pins, with a warning naming the
factory; on a Pi 5, which the native pins do not support, it ends in `BadPinFactory`.
`open_feedback` turns any such failure (or a pin in use) into `NullFeedback` with an ERROR
in the log, and a pin that fails later is reported too; both show in `state.feedback`
through `FeedbackState`. Off a
Raspberry Pi (a laptop), gpiozero's `MockFactory` stands in for the pins, and the log says
so.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Protocol

from appliance.config import FeedbackConfig

log = logging.getLogger(__name__)

ACCEPTED_BEEP_S: Final = 0.10
ACCEPTED_WINK_S: Final = 0.08  # green off, twice, around the beep
DENIED_ON_S: Final = 0.12
DENIED_OFF_S: Final = 0.12
DENIED_COUNT: Final = 3
OFFLINE_BEEP_S: Final = 0.8
OFFLINE_BLINK_S: Final = 1.0  # on, then off for as long
BUSY_FLASH_S: Final = 0.15  # each colour
STOP_TIMEOUT_S: Final = 2.0  # a pattern thread only ever waits on its stop Event
BOARD_MODEL: Final = Path("/proc/device-tree/model")  # "Raspberry Pi 5 Model B Rev 1.0"


class Signal(StrEnum):
    """What the device tells the customer."""

    READY = "ready"
    ACCEPTED = "accepted"
    DENIED = "denied"
    OFFLINE = "offline"
    BUSY = "busy"


@dataclass(frozen=True, slots=True)
class Step:
    """One state of the three outputs, held for `seconds` (0: just set it)."""

    green: bool
    red: bool
    buzzer: bool
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Pattern:
    """`steps` play once; then `loop` repeats until another signal (empty: the end state stays)."""

    steps: tuple[Step, ...]
    loop: tuple[Step, ...] = ()


READY_STEP: Final = Step(green=True, red=False, buzzer=False)

PATTERNS: Final[Mapping[Signal, Pattern]] = {
    Signal.READY: Pattern((READY_STEP,)),
    # Green is already on in READY, so acceptance shows as two quick green winks.
    Signal.ACCEPTED: Pattern(
        (
            Step(False, False, False, ACCEPTED_WINK_S),
            Step(True, False, True, ACCEPTED_BEEP_S),
            Step(False, False, False, ACCEPTED_WINK_S),
            READY_STEP,
        )
    ),
    Signal.DENIED: Pattern(
        (Step(False, True, True, DENIED_ON_S), Step(False, False, False, DENIED_OFF_S))
        * DENIED_COUNT
        + (READY_STEP,)
    ),
    Signal.OFFLINE: Pattern(
        (
            Step(False, True, True, OFFLINE_BEEP_S),
            Step(False, True, False, OFFLINE_BLINK_S - OFFLINE_BEEP_S),
            Step(False, False, False, OFFLINE_BLINK_S),
        ),
        loop=(
            Step(False, True, False, OFFLINE_BLINK_S),
            Step(False, False, False, OFFLINE_BLINK_S),
        ),
    ),
    Signal.BUSY: Pattern(
        (), loop=(Step(True, False, False, BUSY_FLASH_S), Step(False, True, False, BUSY_FLASH_S))
    ),
}
"""Each signal's pattern; the module docstring shows the same table for people."""


class OutputLike(Protocol):
    """The part of a gpiozero `LED` / `Buzzer` that feedback uses."""

    def on(self) -> None:
        """Switch on."""

    def off(self) -> None:
        """Switch off."""

    def close(self) -> None:
        """Release the pin."""


class FeedbackLike(Protocol):
    """What the scan path needs from feedback (real, null, or a demo wrapper)."""

    def show(self, signal: Signal) -> None:
        """Start showing `signal`, replacing whatever runs; never blocks."""

    def close(self) -> None:
        """Switch everything off and release the hardware; idempotent."""


class FeedbackState:
    """What is known about the LEDs and buzzer, for `state.feedback`; thread-safe.

    `pins` names the gpiozero pin factory in use ("lgpio", "mock", ...), None when there
    is none; `error` is why there is no (working) feedback. A failure is kept until the
    process restarts: a technician should see it even if a later pattern played.
    """

    def __init__(self, pins: str | None, error: str | None = None) -> None:
        self._lock = threading.Lock()
        self.pins = pins
        self._error = error

    @property
    def error(self) -> str | None:
        """The first failure, or None."""
        with self._lock:
            return self._error

    def failed(self, error: str) -> None:
        """Record a failure of the pins (the first one is kept and logged as an ERROR)."""
        with self._lock:
            first, self._error = self._error is None, self._error or error
        if first:
            log.error("LED/buzzer feedback failed: %s (scanning continues without it)", error)

    def payload(self) -> dict[str, Any]:
        """The `state.feedback` object."""
        with self._lock:
            return {"ok": self._error is None, "error": self._error, "pins": self.pins}


class _Run:
    """One playing pattern: its thread, its stop flag and its 'played once' flag."""

    def __init__(
        self, thread: threading.Thread, stop: threading.Event, shown: threading.Event
    ) -> None:
        self.thread, self.stop, self.shown = thread, stop, shown


class Feedback:
    """Shows `Signal`s on a green LED, a red LED and an active buzzer (gpiozero devices)."""

    def __init__(
        self,
        green: OutputLike,
        red: OutputLike,
        buzzer: OutputLike,
        *,
        time_scale: float = 1.0,
        state: FeedbackState | None = None,
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.state = state if state is not None else FeedbackState(None)
        self._green, self._red, self._buzzer = green, red, buzzer
        self._time_scale = time_scale  # < 1 speeds every pattern up (tests)
        self._lock = threading.Lock()
        self._run: _Run | None = None
        self._closed = False

    @classmethod
    def from_config(
        cls, cfg: FeedbackConfig, pin_factory: Any = None, *, time_scale: float = 1.0
    ) -> Feedback:
        """Build the LEDs and buzzer on the configured pins with `pin_factory` (None: default)."""
        from gpiozero import LED, Buzzer  # only the boundary imports gpiozero

        built: list[OutputLike] = []
        try:
            built.append(LED(cfg.green_led_pin, pin_factory=pin_factory))
            built.append(LED(cfg.red_led_pin, pin_factory=pin_factory))
            built.append(
                Buzzer(cfg.buzzer_pin, active_high=cfg.buzzer_active_high, pin_factory=pin_factory)
            )
        except Exception:
            for device in built:
                device.close()
            raise
        log.debug(
            "feedback on BCM green=%d red=%d buzzer=%d (active %s)",
            cfg.green_led_pin,
            cfg.red_led_pin,
            cfg.buzzer_pin,
            "high" if cfg.buzzer_active_high else "low",
        )
        factory = getattr(built[0], "pin_factory", None)
        return cls(*built, time_scale=time_scale, state=FeedbackState(factory_name(factory)))

    def show(self, signal: Signal) -> None:
        """Start `signal`'s pattern in the background, replacing the running one."""
        with self._lock:
            if self._closed:
                log.debug("feedback closed; not showing %s", signal.value)
                return
            self._stop_run()
            stop, shown = threading.Event(), threading.Event()
            thread = threading.Thread(
                target=self._play,
                args=(signal, PATTERNS[signal], stop, shown),
                name=f"feedback-{signal.value}",
                daemon=True,
            )
            self._run = _Run(thread, stop, shown)
            thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the current pattern played once (a looping one: entry + one cycle).

        Returns False on timeout. With nothing showing, returns True at once.
        """
        with self._lock:
            run = self._run
        return True if run is None else run.shown.wait(timeout)

    def close(self) -> None:
        """Stop the pattern, switch all outputs off and close the devices; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop_run()
            devices = (self._green, self._red, self._buzzer)
            with ExitStack() as closing:  # every device is closed even if one fails
                for device in devices:
                    closing.callback(device.close)
                for device in devices:
                    device.off()

    def _stop_run(self) -> None:
        """Stop the running pattern (caller holds the lock)."""
        run, self._run = self._run, None
        if run is not None:
            run.stop.set()
            run.thread.join(STOP_TIMEOUT_S)
            if run.thread.is_alive():
                log.warning("feedback pattern thread did not stop within %.1fs", STOP_TIMEOUT_S)

    def _play(
        self, signal: Signal, pattern: Pattern, stop: threading.Event, shown: threading.Event
    ) -> None:
        """The pattern thread: play `steps`, then repeat `loop` until stopped."""
        try:
            for step in pattern.steps:
                if self._apply(step, stop):
                    return
            if not pattern.loop:
                shown.set()
                return
            while True:
                for step in pattern.loop:
                    if self._apply(step, stop):
                        return
                shown.set()
        except Exception as exc:  # top of a thread: the pins failed (OSError, lgpio.error...)
            log.debug("feedback pattern %s failed", signal.value, exc_info=True)
            self.state.failed(f"pattern {signal.value}: {type(exc).__name__}: {exc}")

    def _apply(self, step: Step, stop: threading.Event) -> bool:
        """Set the three outputs, then hold; True when asked to stop."""
        if stop.is_set():
            return True
        for device, on in ((self._green, step.green), (self._red, step.red),
                           (self._buzzer, step.buzzer)):
            if on:
                device.on()
            else:
                device.off()
        if step.seconds <= 0:
            return stop.is_set()
        return stop.wait(step.seconds * self._time_scale)


class NullFeedback:
    """Feedback for devices without LEDs or buzzer (`feedback.enabled = false`)."""

    def show(self, signal: Signal) -> None:
        """Log the signal and do nothing else."""
        log.debug("feedback disabled; signal %s", signal.value)

    def close(self) -> None:
        """Nothing to release."""


def factory_name(factory: Any) -> str | None:
    """A pin factory's short name: LGPIOFactory -> "lgpio", MockFactory -> "mock"."""
    if factory is None:
        return None
    name = type(factory).__name__
    return (name[: -len("Factory")] if name.endswith("Factory") else name).lower() or None


def on_raspberry_pi(model_file: Path = BOARD_MODEL) -> bool:
    """True on a Raspberry Pi (its device tree names the board)."""
    try:
        return model_file.read_bytes().startswith(b"Raspberry Pi")
    except OSError:
        return False


def open_feedback(
    cfg: FeedbackConfig,
    pin_factory: Any = None,
    *,
    on_pi: bool | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[FeedbackLike, FeedbackState]:
    """The LEDs and buzzer the config asks for, and their state; never raises.

    With `pin_factory` None, gpiozero picks one (`$GPIOZERO_PIN_FACTORY`, else lgpio, then
    the others). If that fails on a machine that is not a Raspberry Pi and no factory was
    named, gpiozero's `MockFactory` simulates the pins (development). Any other failure
    gives `NullFeedback` and `FeedbackState.error`: the device scans on without feedback.
    """
    if not cfg.enabled:
        return NullFeedback(), FeedbackState(None)
    environ = os.environ if environ is None else environ
    try:
        with warnings.catch_warnings():
            # gpiozero warns once per factory it falls back from; the outcome is logged below
            warnings.simplefilter("ignore")
            feedback = Feedback.from_config(cfg, pin_factory)
    except Exception as exc:  # BadPinFactory, ImportError/OSError from lgpio, pin in use...
        error = f"{type(exc).__name__}: {exc}"
        named = pin_factory is not None or bool(environ.get("GPIOZERO_PIN_FACTORY"))
        if not named and not (on_raspberry_pi() if on_pi is None else on_pi):
            from gpiozero.pins.mock import MockFactory

            log.warning("no GPIO on this machine (not a Raspberry Pi; gpiozero: %s): the LEDs "
                        "and buzzer are simulated with gpiozero's MockFactory", error)
            simulated = Feedback.from_config(cfg, MockFactory())
            return simulated, simulated.state
        state = FeedbackState(None)
        state.failed(f"no pin factory: {error}")
        return NullFeedback(), state
    return _opened(feedback)


def _opened(feedback: Feedback) -> tuple[Feedback, FeedbackState]:
    pins = feedback.state.pins
    if pins == "mock":
        log.warning("LED and buzzer feedback is simulated (gpiozero MockFactory): "
                    "nothing lights up on this machine")
    elif pins != "lgpio":
        log.warning("LED and buzzer feedback on gpiozero's %s pins: lgpio, the pin factory "
                    "for Raspberry Pi OS Bookworm, could not be used (is python3-lgpio "
                    "installed, and the working directory writable?)", pins)
    else:
        log.info("LED and buzzer feedback on gpiozero's %s pins", pins)
    return feedback, feedback.state
