"""sd_notify over a real AF_UNIX datagram socket: what systemd receives, and failures."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from notify import NotifySocket

from appliance.sdnotify import MAX_STATUS_CHARS, Notifier, one_line, watchdog_interval


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_notifier_sends_each_message_as_one_datagram(tmp_path: Path, abstract: bool) -> None:
    with NotifySocket(tmp_path, abstract=abstract) as manager:
        notifier = Notifier.from_environment(manager.environment())
        assert notifier.enabled and notifier.watchdog_s is None
        assert notifier.ready("scanning")
        assert notifier.watchdog()
        assert notifier.status("DEGRADED camera: busy\nsecond line")
        assert notifier.stopping()
        notifier.close()
        messages = manager.wait_for(lambda ms: len(ms) == 4)
    assert messages == [
        {"READY": "1", "STATUS": "scanning"},
        {"WATCHDOG": "1"},
        {"STATUS": "DEGRADED camera: busy second line"},  # one line, always
        {"STOPPING": "1", "STATUS": "stopping"},
    ]


def test_notifier_without_socket_does_nothing() -> None:
    notifier = Notifier.from_environment({})
    assert not notifier.enabled
    assert notifier.ready("scanning") is False


def test_notifier_failure_never_raises_and_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(str(tmp_path / "gone.sock"))
    with caplog.at_level(logging.DEBUG, logger="appliance.sdnotify"):
        assert notifier.watchdog() is False
        assert notifier.watchdog() is False
    assert [r.levelname for r in caplog.records] == ["WARNING", "DEBUG"]
    with NotifySocket(tmp_path) as manager:  # the manager comes back
        notifier.address = manager.address
        assert notifier.watchdog() is True
        assert manager.wait_for(lambda ms: len(ms) == 1) == [{"WATCHDOG": "1"}]
    notifier.close()


def test_watchdog_interval_follows_sd_watchdog_enabled() -> None:
    me = str(os.getpid())
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": me}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "-5"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({}) is None


def test_status_is_one_bounded_printable_line() -> None:
    assert one_line("a\tb\r\nc\x00d  e") == "a b c d e"
    long = one_line("x" * 1000)
    assert len(long) == MAX_STATUS_CHARS and long.endswith("...")
