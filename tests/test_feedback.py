"""Feedback patterns on gpiozero's mock pins: the exact state sequence of every output."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory, MockPin

from appliance.config import FeedbackConfig
from appliance.feedback import (
    ACCEPTED_BEEP_S,
    ACCEPTED_WINK_S,
    BUSY_FLASH_S,
    DENIED_COUNT,
    DENIED_OFF_S,
    DENIED_ON_S,
    OFFLINE_BEEP_S,
    OFFLINE_BLINK_S,
    PATTERNS,
    Feedback,
    NullFeedback,
    Signal,
    on_raspberry_pi,
    open_feedback,
)

WAIT_S = 10.0  # generous upper bound; waits return as soon as the pattern has played
FAST = 0.05  # time_scale for sequence-only tests


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    """A private mock pin factory (the global `Device.pin_factory` is never touched)."""
    pins = MockFactory()
    yield pins
    pins.reset()


def _build(factory: MockFactory, cfg: FeedbackConfig | None = None, scale: float = 1.0) -> Feedback:
    feedback = Feedback.from_config(cfg or FeedbackConfig(), factory, time_scale=scale)
    for pin in _pins(factory, cfg):
        pin.clear_states()
    return feedback


def _pins(factory: MockFactory, cfg: FeedbackConfig | None = None) -> tuple[MockPin, ...]:
    cfg = cfg or FeedbackConfig()
    return tuple(factory.pin(n) for n in (cfg.green_led_pin, cfg.red_led_pin, cfg.buzzer_pin))


def _states(pin: MockPin) -> list[bool]:
    return [state.state for state in pin.states]


def _show(feedback: Feedback, signal: Signal) -> None:
    feedback.show(signal)
    assert feedback.wait(WAIT_S), f"{signal} did not finish"


def test_feedback_ready_lights_green_only(factory: MockFactory) -> None:
    feedback = _build(factory)
    green, red, buzzer = _pins(factory)
    _show(feedback, Signal.READY)
    feedback.close()
    assert _states(green) == [False, True, False]  # on; off at close
    assert _states(red) == [False]
    assert _states(buzzer) == [False]


def test_feedback_accepted_beeps_once_then_ready(factory: MockFactory) -> None:
    feedback = _build(factory)
    green, red, buzzer = _pins(factory)
    _show(feedback, Signal.READY)
    for pin in (green, red, buzzer):
        pin.clear_states()
    _show(feedback, Signal.ACCEPTED)
    assert _states(green) == [True, False, True, False, True]  # two winks, back to READY
    green.assert_states_and_times(
        [(0.0, True), (0.0, False), (ACCEPTED_WINK_S, True), (ACCEPTED_BEEP_S, False),
         (ACCEPTED_WINK_S, True)]
    )
    assert _states(red) == [False]
    assert len(buzzer.states) == 3
    buzzer.assert_states_and_times(
        [(0.0, False), (ACCEPTED_WINK_S, True), (ACCEPTED_BEEP_S, False)]
    )
    feedback.close()


def test_feedback_denied_blinks_and_beeps_three_times_then_ready(factory: MockFactory) -> None:
    feedback = _build(factory)
    green, red, buzzer = _pins(factory)
    _show(feedback, Signal.READY)
    for pin in (green, red, buzzer):
        pin.clear_states()
    _show(feedback, Signal.DENIED)
    blinks = [(0.0, False), (0.0, True), (DENIED_ON_S, False)]
    blinks += [(DENIED_OFF_S, True), (DENIED_ON_S, False)] * (DENIED_COUNT - 1)
    for pin in (red, buzzer):
        assert _states(pin) == [False] + [True, False] * DENIED_COUNT
        pin.assert_states_and_times(blinks)
    total = DENIED_COUNT * (DENIED_ON_S + DENIED_OFF_S)
    assert _states(green) == [True, False, True]
    green.assert_states_and_times([(0.0, True), (0.0, False), (total, True)])
    feedback.close()


def test_feedback_offline_blinks_red_slowly_with_one_long_beep(factory: MockFactory) -> None:
    scale = 0.25  # keeps the timing check meaningful at a quarter of the real length
    feedback = _build(factory, scale=scale)
    green, red, buzzer = _pins(factory)
    _show(feedback, Signal.OFFLINE)  # entry + one full blink cycle
    feedback.close()
    blink = OFFLINE_BLINK_S * scale
    assert _states(red)[:5] == [False, True, False, True, False]
    red.assert_states_and_times([(0.0, False), (0.0, True), (blink, False), (blink, True)])
    assert _states(buzzer) == [False, True, False]  # once at entry, never again
    buzzer.assert_states_and_times([(0.0, False), (0.0, True), (OFFLINE_BEEP_S * scale, False)])
    assert _states(green) == [False]


def test_feedback_busy_alternates_colours_silently(factory: MockFactory) -> None:
    feedback = _build(factory, scale=FAST)
    green, red, buzzer = _pins(factory)
    _show(feedback, Signal.BUSY)
    _show(feedback, Signal.BUSY)  # restarting is allowed and plays again from the start
    feedback.close()
    assert _states(green)[:4] == [False, True, False, True]
    assert _states(red)[:3] == [False, True, False]
    assert _states(buzzer) == [False]
    assert BUSY_FLASH_S < DENIED_ON_S + DENIED_OFF_S  # busy flickers faster than denied blinks


def test_feedback_new_signal_replaces_running_pattern(factory: MockFactory) -> None:
    feedback = _build(factory)
    green, red, buzzer = _pins(factory)
    feedback.show(Signal.OFFLINE)  # starts a 0.8 s beep and an endless red blink
    _show(feedback, Signal.ACCEPTED)
    # The long beep is cut at once, the short one follows, the red blink stops for good.
    assert _states(buzzer) == [False, True, False, True, False]
    buzzer.assert_states_and_times(
        [(0.0, False), (0.0, True), (0.0, False), (ACCEPTED_WINK_S, True),
         (ACCEPTED_BEEP_S, False)]
    )
    assert _states(red) == [False, True, False]
    assert _states(green) == [False, True, False, True]
    feedback.close()


def test_feedback_buzzer_active_low_inverts_pin(factory: MockFactory) -> None:
    cfg = FeedbackConfig(buzzer_active_high=False)
    feedback = _build(factory, cfg, scale=FAST)
    buzzer = _pins(factory, cfg)[2]
    assert buzzer.state is True  # silent = pin high
    _show(feedback, Signal.ACCEPTED)
    feedback.close()
    assert _states(buzzer) == [True, False, True]


def test_feedback_from_config_uses_configured_pins(factory: MockFactory) -> None:
    cfg = FeedbackConfig(green_led_pin=5, red_led_pin=6, buzzer_pin=13)
    feedback = _build(factory, cfg, scale=FAST)
    _show(feedback, Signal.READY)
    assert sorted(info.number for info in factory.pins) == [29, 31, 33]  # BCM 5, 6, 13
    assert (factory.pin(5).state, factory.pin(6).state, factory.pin(13).state) == (
        True,
        False,
        False,
    )
    feedback.close()


def test_feedback_close_switches_off_and_is_idempotent(factory: MockFactory) -> None:
    feedback = _build(factory, scale=FAST)
    pins = _pins(factory)
    feedback.show(Signal.BUSY)
    feedback.close()
    feedback.close()
    counts = [len(pin.states) for pin in pins]
    feedback.show(Signal.DENIED)  # ignored after close
    assert feedback.wait(0.0) is True
    assert [pin.state for pin in pins] == [False, False, False]
    assert [len(pin.states) for pin in pins] == counts


def test_feedback_rejects_non_positive_time_scale() -> None:
    green, red, buzzer = NullFeedback(), NullFeedback(), NullFeedback()
    with pytest.raises(ValueError, match="time_scale"):
        Feedback(green, red, buzzer, time_scale=0)  # type: ignore[arg-type]


def test_feedback_patterns_differ_in_light_and_in_beep_rhythm() -> None:
    def beeps(signal: Signal) -> tuple[float, ...]:
        pattern = PATTERNS[signal]
        return tuple(s.seconds for s in pattern.steps + pattern.loop if s.buzzer)

    def lights(signal: Signal) -> tuple[tuple[bool, bool], ...]:
        pattern = PATTERNS[signal]
        return tuple((s.green, s.red) for s in pattern.steps + pattern.loop)

    assert set(PATTERNS) == set(Signal)
    assert len({lights(s) for s in Signal}) == len(Signal)
    audible = [s for s in Signal if beeps(s)]
    assert len({beeps(s) for s in audible}) == len(audible)  # no two beep alike
    assert beeps(Signal.ACCEPTED) == (ACCEPTED_BEEP_S,)
    assert beeps(Signal.DENIED) == (DENIED_ON_S,) * DENIED_COUNT
    assert beeps(Signal.OFFLINE) == (OFFLINE_BEEP_S,)
    assert beeps(Signal.READY) == beeps(Signal.BUSY) == ()


def test_null_feedback_accepts_every_signal(caplog: pytest.LogCaptureFixture) -> None:
    feedback = NullFeedback()
    with caplog.at_level(logging.DEBUG, logger="appliance.feedback"):
        for signal in Signal:
            feedback.show(signal)
    feedback.close()
    feedback.close()
    assert [r.getMessage() for r in caplog.records] == [
        f"feedback disabled; signal {s.value}" for s in Signal
    ]


# --- pin failures never stop the device (issue 7) ---------------------------------------


def _error_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_open_feedback_on_a_pi_without_pin_factory_gives_no_feedback_and_says_why(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This machine has no GPIO: gpiozero's own default search fails (BadPinFactory), as
    # on a Pi 5 whose lgpio cannot start. A Pi must not fake its LEDs: no feedback.
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    with caplog.at_level(logging.INFO, logger="appliance.feedback"):
        feedback, state = open_feedback(FeedbackConfig(), on_pi=True)
    assert isinstance(feedback, NullFeedback)
    payload = state.payload()
    assert payload["ok"] is False and payload["pins"] is None
    assert "BadPinFactory" in payload["error"]
    [error] = _error_lines(caplog)
    assert "scanning continues without it" in error
    feedback.show(Signal.ACCEPTED)  # still usable by the scan path
    feedback.close()


def test_open_feedback_with_a_named_factory_that_fails_gives_no_feedback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "no-such-factory")
    feedback, state = open_feedback(FeedbackConfig(), on_pi=False)  # named: never simulated
    assert isinstance(feedback, NullFeedback)
    assert state.payload()["ok"] is False
    assert "no-such-factory" in str(state.error)


def test_open_feedback_off_a_pi_simulates_the_pins_and_says_so(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    with caplog.at_level(logging.INFO, logger="appliance.feedback"):
        feedback, state = open_feedback(FeedbackConfig(), on_pi=False)
    try:
        assert isinstance(feedback, Feedback)
        assert state.payload() == {"ok": True, "error": None, "pins": "mock"}
        assert any("simulated with gpiozero's MockFactory" in r.getMessage()
                   for r in caplog.records if r.levelno == logging.WARNING)
        feedback.show(Signal.READY)
        assert feedback.wait(WAIT_S)
    finally:
        feedback.close()


def test_open_feedback_disabled_is_ok_without_pins() -> None:
    feedback, state = open_feedback(FeedbackConfig(enabled=False))
    assert isinstance(feedback, NullFeedback)
    assert state.payload() == {"ok": True, "error": None, "pins": None}


def test_open_feedback_names_the_injected_factory(factory: MockFactory) -> None:
    feedback, state = open_feedback(FeedbackConfig(), factory)
    feedback.close()
    assert state.payload() == {"ok": True, "error": None, "pins": "mock"}


class NativeFactory(MockFactory):
    """Stands in for gpiozero's NativeFactory (/dev/gpiomem), where a Pi 4 falls back to
    when lgpio cannot be loaded."""


def test_open_feedback_on_a_fallback_factory_warns_that_lgpio_was_not_used(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="appliance.feedback"):
        feedback, state = open_feedback(FeedbackConfig(), NativeFactory())
    feedback.close()
    assert state.payload() == {"ok": True, "error": None, "pins": "native"}
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "gpiozero's native pins" in warning and "lgpio" in warning


class BrokenPin:
    """An output whose pin fails, as lgpio does when the chip goes away."""

    def on(self) -> None:
        raise OSError(5, "Input/output error")

    def off(self) -> None: ...

    def close(self) -> None: ...


def test_feedback_pin_failure_while_running_is_reported_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    feedback = Feedback(BrokenPin(), BrokenPin(), BrokenPin(), time_scale=FAST)
    with caplog.at_level(logging.ERROR, logger="appliance.feedback"):
        feedback.show(Signal.READY)
        feedback.show(Signal.DENIED)
        feedback.close()
    assert feedback.state.payload()["ok"] is False
    assert "OSError" in str(feedback.state.error)
    assert len(_error_lines(caplog)) == 1


def test_on_raspberry_pi_reads_the_device_tree_model(tmp_path: Path) -> None:
    model = tmp_path / "model"
    assert on_raspberry_pi(model) is False  # no device tree: a laptop
    model.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\0")
    assert on_raspberry_pi(model) is True
    model.write_bytes(b"Some other board\0")
    assert on_raspberry_pi(model) is False
