"""The scan path end to end: replayed frames -> decode -> debounce -> MQTT (real Mosquitto)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from broker import Mosquitto, Subscriber
from fakes import QuietBus
from gpiozero.pins.mock import MockFactory

from appliance import contract
from appliance.assembly import build
from appliance.codes import Classifier
from appliance.config import CodesConfig, Config, DebounceConfig, DecodeConfig
from appliance.daemon import Heartbeats, ScanService
from appliance.debounce import Debouncer
from appliance.decode import Decoder
from appliance.feedback import Feedback, Signal
from appliance.pipeline import ScanHandler
from appliance.replay import ReplaySource
from appliance.samples import (
    DEMO_CODES,
    DEMO_PHONE_CARD,
    DEMO_SHOP_UUID,
    render_code,
    write_demo_frames,
)
from appliance.source import Frame

BASE = "leat-scanner/test-counter"


def make_config(broker: Mosquitto, frames: Path, **camera: Any) -> Config:
    return Config.model_validate(
        {
            "device": {"id": "test-counter", "state_dir": str(frames.parent / "state")},
            "camera": {"source": "replay", "replay_path": str(frames), "fps": 50, **camera},
            "mqtt": {"host": broker.host, "port": broker.port},
        }
    )


def payloads(messages: list[Any], subtopic: str) -> list[Any]:
    return [
        m.payload.decode() if subtopic == "availability" else json.loads(m.payload)
        for m in messages
        if m.topic == f"{BASE}/{subtopic}"
    ]


def validate(name: str, payload: Mapping[str, Any] | str) -> None:
    contract.validate(name, payload)  # formats (uuid, date-time) included


def test_daemon_replay_publishes_each_demo_code_once(broker: Mosquitto, tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    write_demo_frames(frames)
    cfg = make_config(broker, frames)
    pins = MockFactory()
    feedback = Feedback.from_config(cfg.feedback, pins)
    with Subscriber(broker, f"{BASE}/#") as sub:
        sub.wait_subscribed()
        service = build(cfg, feedback=feedback)
        assert service.run(threading.Event()) == 0
        messages = sub.wait_for(lambda ms: "offline" in payloads(list(ms), "availability"))

    scans = payloads(messages, "events/scan")
    seen = {(event["kind"], event["value"]) for event in scans}
    assert seen >= {(kind, value) for kind, value in DEMO_CODES.items() if kind != "loyalty_token"}
    assert ("loyalty_card", DEMO_PHONE_CARD) in seen
    assert "loyalty_token" in {kind for kind, _ in seen}
    # one event per code shown, however many frames it was in view
    values = [event["value"] for event in scans]
    assert len(values) == len(set(values)) == service.stats.scans_total
    for event in scans:
        validate("scan", event)
    for info in payloads(messages, "info"):
        validate("info", info)
    for state in payloads(messages, "state"):
        validate("state", state)
    assert payloads(messages, "availability")[0] == "online"
    assert payloads(messages, "availability")[-1] == "offline"
    # a POS that reads the retained info and state when "online" arrives finds this run's
    topics = [m.topic.removeprefix(f"{BASE}/") for m in messages]
    assert topics.index("info") < topics.index("state") < topics.index("availability")
    # feedback closed: every output off
    assert all(pins.pin(n).state == 0 for n in (17, 27))


def distinct_codes(frames: Path) -> set[str]:
    decoder, source = Decoder(DecodeConfig()), ReplaySource([frames], fps=0)
    texts: set[str] = set()
    while (frame := source.read()) is not None:
        texts |= {scan.text for scan in decoder.decode(frame).scans}
    return texts


def test_daemon_events_sent_while_broker_down_arrive_after_it_returns(
    broker: Mosquitto, tmp_path: Path
) -> None:
    frames = tmp_path / "frames"
    write_demo_frames(frames)
    expected = distinct_codes(frames)
    broker.stop()
    # Looping keeps the service up; codes never leave view long enough to be re-reported.
    cfg = make_config(broker, frames, replay_loop=True)
    feedback = RecordingFeedback()
    service = build(cfg, feedback=feedback)
    stop = threading.Event()
    runner = threading.Thread(target=service.run, args=(stop,))
    runner.start()
    try:
        assert feedback.wait_for(lambda signals: len(signals) > len(expected), timeout=15)
        assert service.stats.scans_total == len(expected)
        broker.start()
        with Subscriber(broker, f"{BASE}/events/scan") as sub:
            sub.wait_subscribed()
            messages = sub.wait_for(lambda ms: len(ms) >= len(expected), timeout=40)
    finally:
        stop.set()
        runner.join(10)
    assert {json.loads(m.payload)["value"] for m in messages} >= {
        v for v in expected if v in DEMO_CODES.values()
    }
    assert len(messages) == len(expected)


class BlockingBus(QuietBus):
    """A bus whose publish blocks until released, to fill the scan queue."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def publish_event(
        self, name: str, payload: Mapping[str, Any], expiry_s: float | None = None
    ) -> None:
        self.release.wait(10)
        self.events.append(payload)


class RecordingFeedback:
    """Records signals; tests wait on a condition over them."""

    def __init__(self) -> None:
        self.signals: list[Signal] = []
        self.busy = threading.Event()
        self._changed = threading.Condition()

    def show(self, signal: Signal) -> None:
        with self._changed:
            self.signals.append(signal)
            self._changed.notify_all()
        if signal is Signal.BUSY:
            self.busy.set()

    def wait_for(self, predicate: Callable[[list[Signal]], bool], timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self.signals), timeout)

    def close(self) -> None: ...


def test_daemon_full_queue_is_refused_visibly_not_dropped(tmp_path: Path) -> None:
    from PIL import Image

    paths = []
    for i in range(6):
        path = tmp_path / f"{i:03}.png"
        Image.fromarray(render_code(f"LC-QUEUE{i:04}")).save(path)
        paths.append(path)
    bus, feedback = BlockingBus(), RecordingFeedback()
    service = ScanService(
        device_id="t",
        source=ReplaySource(paths, fps=0),
        decoder=Decoder(DecodeConfig()),
        debouncer=Debouncer(DebounceConfig()),
        handler=ScanHandler("t", Classifier(CodesConfig()), bus.publish_event),
        bus=bus,
        feedback=feedback,
        queue_size=2,
    )
    stop = threading.Event()
    runner = threading.Thread(target=service.run, args=(stop,))
    runner.start()
    assert feedback.busy.wait(10)
    bus.release.set()
    runner.join(10)
    assert not runner.is_alive()
    # 1 in the worker's hands + 2 queued were published; the rest were refused with BUSY
    assert len(bus.events) == service.stats.scans_total
    assert service.stats.busy_total == 6 - service.stats.scans_total
    assert feedback.signals.count(Signal.BUSY) == service.stats.busy_total


class FlakySource:
    """Fails `failures` reads with CameraError, then plays `frames` once."""

    def __init__(self, frames: Path, failures: int) -> None:
        self.inner = ReplaySource([frames], fps=0)
        self.failures = failures
        self.reads = 0

    def read(self) -> Frame | None:
        from appliance.errors import CameraError

        self.reads += 1
        if self.reads <= self.failures:
            raise CameraError("no frame from the camera for 2.1 s: is the ribbon cable seated?")
        return self.inner.read()

    def close(self) -> None: ...


class StateBus(BlockingBus):
    """Records states; `fail_states` first set_state calls raise like a broken broker."""

    def __init__(self, fail_states: int = 0) -> None:
        super().__init__()
        self.release.set()
        self.states: list[Mapping[str, Any]] = []
        self.fail_states = fail_states
        self.changed = threading.Condition()

    def set_state(self, payload: Mapping[str, Any]) -> None:
        if self.fail_states > 0:
            self.fail_states -= 1
            raise RuntimeError("state publish failed")
        with self.changed:
            self.states.append(payload)
            self.changed.notify_all()

    def wait_states(
        self, predicate: Callable[[list[Mapping[str, Any]]], bool], timeout: float
    ) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: predicate(self.states), timeout)


def scan_service(source: Any, bus: BlockingBus, feedback: Any, **options: Any) -> ScanService:
    return ScanService(
        device_id="t",
        source=source,
        decoder=Decoder(DecodeConfig()),
        debouncer=Debouncer(DebounceConfig()),
        handler=ScanHandler("t", Classifier(CodesConfig()), bus.publish_event),
        bus=bus,
        feedback=feedback,
        **options,
    )


def test_daemon_failing_camera_is_degraded_retried_and_recovers(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    write_demo_frames(frames)
    bus, feedback = StateBus(), RecordingFeedback()
    source = FlakySource(frames, failures=3)
    # a 60 s interval: every state below was published because the health changed
    service = scan_service(source, bus, feedback, state_interval_s=60.0,
                           camera_retry_s=(0.05, 0.2))
    assert service.run(threading.Event()) == 0  # the replay ended: no exit 1 for the camera

    assert source.reads > 3
    cameras = [state["camera"] for state in bus.states]
    failed = {"ok": False, "fps": 0.0,
              "error": "no frame from the camera for 2.1 s: is the ribbon cable seated?"}
    assert failed in cameras
    assert cameras[-1]["ok"] is True and cameras[-1]["error"] is None
    assert service.stats.scans_total > 0  # scanning resumed after the failures
    # OFFLINE once for the outage (not per retry), then READY when frames came back
    assert feedback.signals.count(Signal.OFFLINE) == 1
    assert feedback.signals.index(Signal.READY, feedback.signals.index(Signal.OFFLINE))
    for state in bus.states:
        validate("state", state)


def test_daemon_camera_that_fails_to_open_is_reopened_with_backoff(tmp_path: Path) -> None:
    import time

    from appliance.errors import CameraError

    frames = tmp_path / "frames"
    write_demo_frames(frames)
    attempts: list[float] = []

    def reopen() -> ReplaySource:
        attempts.append(time.monotonic())
        if len(attempts) < 4:
            raise CameraError("cannot open the camera (picamera2: Camera __init__ sequence ...)")
        return ReplaySource([frames], fps=0)

    bus, feedback = StateBus(), RecordingFeedback()
    service = scan_service(None, bus, feedback, reopen=reopen, camera_error="busy",
                           camera_retry_s=(0.1, 0.4), state_interval_s=60.0)
    assert service.state()["camera"]["ok"] is False
    assert service.run(threading.Event()) == 0
    assert len(attempts) == 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    # 1 s doubling to 60 s, scaled: 0.1, 0.2, 0.4 here
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.4
    assert feedback.signals[0] is Signal.OFFLINE
    assert bus.states[-1]["camera"]["ok"] is True
    assert service.stats.scans_total > 0


def test_daemon_state_publisher_survives_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frames = tmp_path / "frames"
    write_demo_frames(frames)
    bus = StateBus(fail_states=3)
    source = ReplaySource([frames], fps=50, loop=True)
    service = scan_service(source, bus, RecordingFeedback(), state_interval_s=0.01,
                           state_check_s=0.01)
    stop = threading.Event()
    runner = threading.Thread(target=service.run, args=(stop,))
    with caplog.at_level("ERROR"):
        runner.start()
        try:
            assert bus.wait_states(lambda states: len(states) >= 3, timeout=10)
        finally:
            stop.set()
            runner.join(10)
    assert bus.fail_states == 0  # the three failures happened, and it kept publishing
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == ["state: cannot publish: RuntimeError: state publish failed"]  # once


def test_daemon_unreadable_outbox_is_reported_in_state(
    broker: Mosquitto, tmp_path: Path
) -> None:
    from appliance.outbox import Outbox
    from appliance.sandbox.server import LeatSandbox

    frames = tmp_path / "frames"
    write_demo_frames(frames)
    with LeatSandbox() as sandbox:
        cfg = leat_config(broker, frames, sandbox, tmp_path)
        service = build(cfg, feedback=RecordingFeedback())
        outbox = Outbox(tmp_path / "state" / "outbox.sqlite3")
        outbox.close()  # any read now fails, as a damaged or vanished store would
        state = service.state(outbox)
    assert state["outbox"]["depth"] is None
    assert "closed database" in state["outbox"]["error"]
    validate("state", state)


def test_daemon_stalled_thread_stops_the_watchdog_and_says_which(tmp_path: Path) -> None:
    from notify import NotifySocket
    from PIL import Image

    from appliance.sdnotify import Notifier

    path = tmp_path / "001.png"
    Image.fromarray(render_code("LC-STALL0001")).save(path)
    bus = BlockingBus()  # the worker blocks in publish until released: a stall
    with NotifySocket(tmp_path) as manager:
        service = scan_service(
            ReplaySource([path], fps=20, loop=True), bus, RecordingFeedback(),
            notifier=Notifier(manager.address, watchdog_s=0.4), stall_after_s=0.6,
            state_check_s=0.05,  # every other thread beats well within 0.6 s
        )
        stop = threading.Event()
        runner = threading.Thread(target=service.run, args=(stop,))
        runner.start()
        try:
            manager.wait_for(lambda ms: any("READY" in m for m in ms))
            manager.wait_for(lambda ms: any("STALLED worker" in m.get("STATUS", "") for m in ms))
            pings = manager.count("WATCHDOG")
            statuses = [m["STATUS"] for m in manager.messages if "STATUS" in m]
            assert all(s.count("STALLED") == s.count("STALLED worker") for s in statuses)
            # stalled for 2 s now: 10 ping intervals of 0.2 s without a ping
            manager.wait_for(lambda ms: "STALLED worker (2 s" in ms[-1].get("STATUS", ""))
            stalled_at = len(manager.messages)
            bus.release.set()
            messages = manager.wait_for(
                lambda ms: any("WATCHDOG" in m for m in ms[stalled_at:])
                and "STALLED" not in ms[-1].get("STATUS", ""),
            )
        finally:
            stop.set()
            runner.join(10)
        manager.wait_for(lambda ms: any("STOPPING" in m for m in ms))
    stalled = [i for i, m in enumerate(messages) if "STALLED worker" in m.get("STATUS", "")]
    resumed = next(i for i, m in enumerate(messages) if i > stalled[0] and "WATCHDOG" in m)
    assert pings >= 1  # it pinged while healthy
    assert all("WATCHDOG" not in m for m in messages[stalled[0]:resumed])
    assert not runner.is_alive()


def test_heartbeats_call_a_busy_request_worker_stalled() -> None:
    """The POS request worker is watched by when it took its request, not by beats."""
    now = [100.0]
    busy_since: list[float | None] = [None]
    heartbeats = Heartbeats(clock=lambda: now[0])
    heartbeats.watch("requests", lambda: busy_since[0])
    heartbeats.beat("worker")
    now[0] = 105.0
    assert heartbeats.stalled(20.0) == {}
    busy_since[0] = 106.0  # took a request ...
    now[0] = 130.0  # ... and is still on it 24 s later; the scan worker is stalled too
    assert heartbeats.stalled(20.0) == {"requests": 24.0, "worker": 30.0}
    busy_since[0] = None  # idle again: never a stall, however long
    heartbeats.beat("worker")
    now[0] = 1000.0
    assert heartbeats.stalled(20.0) == {"worker": 870.0}


def test_daemon_sigterm_publishes_offline_and_exits_0(broker: Mosquitto, tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    write_demo_frames(frames)
    cfg_path = tmp_path / "config.toml"
    cfg_path.write_text(
        f"""
[device]
id = "test-counter"
[camera]
source = "replay"
replay_path = "{frames}"
replay_loop = true
fps = 20
[mqtt]
host = "{broker.host}"
port = {broker.port}
[feedback]
enabled = false
""",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEAT_SCANNER_")}
    with Subscriber(broker, f"{BASE}/#") as sub:
        sub.wait_subscribed()
        proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "run", "--config", str(cfg_path)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            sub.wait_for(lambda ms: len(payloads(list(ms), "events/scan")) >= 2, timeout=20)
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, stderr
        messages = sub.wait_for(lambda ms: payloads(list(ms), "availability")[-1:] == ["offline"])
    assert payloads(messages, "availability")[-1] == "offline"
    assert "SIGTERM received" in stderr
    # privacy: scanned values are not logged in full
    assert DEMO_CODES["giftcard"] not in stderr


@pytest.mark.parametrize("config_text", ['[camera]\nsource = "replay"\n'])
def test_daemon_replay_without_path_is_a_config_error(tmp_path: Path, config_text: str) -> None:
    cfg_path = tmp_path / "config.toml"
    cfg_path.write_text(config_text + '[feedback]\nenabled = false\n', encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "appliance", "run", "--config", str(cfg_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2  # restarting cannot fix it (RestartPreventExitStatus=2)
    assert "camera.replay_path" in proc.stderr


def leat_config(broker: Mosquitto, frames: Path, sandbox: Any, tmp_path: Path) -> Config:
    token = tmp_path / "leat-token"
    token.touch(mode=0o600)
    token.write_text(sandbox.personal_access_token, encoding="utf-8")
    cfg = make_config(broker, frames)
    leat = cfg.leat.model_copy(
        update={"base_url": sandbox.url, "token_file": token, "shop_uuid": DEMO_SHOP_UUID,
                "resolve_deadline_s": 10.0}  # generous: CI shares 2 cores
    )
    return cfg.model_copy(update={"leat": leat})


@pytest.mark.parametrize("leat_up", [True, False], ids=["leat-up", "leat-down"])
def test_daemon_publishes_identifications_from_leat(
    broker: Mosquitto, tmp_path: Path, leat_up: bool
) -> None:
    from appliance.sandbox.server import LeatSandbox

    frames = tmp_path / "frames"
    write_demo_frames(frames)
    with LeatSandbox() as sandbox, Subscriber(broker, f"{BASE}/#") as sub:
        if not leat_up:
            sandbox.faults.set(outage=True)
        sub.wait_subscribed()
        feedback = RecordingFeedback()
        service = build(leat_config(broker, frames, sandbox, tmp_path), feedback=feedback)
        assert service.run(threading.Event()) == 0
        messages = sub.wait_for(lambda ms: "offline" in payloads(list(ms), "availability"))
    scans = payloads(messages, "events/scan")
    idents = payloads(messages, "events/identification")
    assert [i["scan_event_id"] for i in idents] == [s["event_id"] for s in scans]
    for ident in idents:
        validate("identification", ident)
    [jane] = [i for i in idents if i["identifier"] == DEMO_CODES["loyalty_card"]]
    info = payloads(messages, "info")[0]
    assert "identify" in info["capabilities"]
    state = payloads(messages, "state")[-1]
    validate("state", state)
    if leat_up:
        assert jane["verified"] is True
        assert jane["contact"]["first_name"] == "Jane"
        assert state["leat"] == {"reachable": True}
        assert Signal.ACCEPTED in feedback.signals
    else:
        assert {(i["verified"], i["status"]) for i in idents if i["kind"] != "loyalty_token"} == {
            (False, "offline")
        }
        assert state["leat"] == {"reachable": False}
        assert Signal.OFFLINE in feedback.signals
    # the identification and the scan expire (MQTT v5 message expiry): a till back on its
    # persistent session after a minute gets no customer long gone
    expiring = [m for m in messages
                if m.topic.endswith(("/events/identification", "/events/scan"))]
    assert {m.topic.rsplit("/", 1)[1] for m in expiring} == {"identification", "scan"}
    assert all(0 < m.properties.MessageExpiryInterval <= 60 for m in expiring)


# --- `leat-scanner run` under a (simulated) systemd: a real notify socket -----------------


def run_config(tmp_path: Path, broker: Mosquitto, camera: str, extra: str = "") -> Path:
    cfg_path = tmp_path / "config.toml"
    cfg_path.write_text(
        f"""
[device]
id = "test-counter"
state_dir = "{tmp_path / 'state'}"
[camera]
{camera}
[mqtt]
host = "{broker.host}"
port = {broker.port}
{extra}
""",
        encoding="utf-8",
    )
    return cfg_path


def start_run(cfg_path: Path, env: Mapping[str, str]) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("LEAT_SCANNER_", "NOTIFY_SOCKET", "WATCHDOG_", "GPIOZERO_"))}
    return subprocess.Popen(
        [sys.executable, "-m", "appliance", "run", "--config", str(cfg_path)],
        env=clean | dict(env),
        stderr=subprocess.PIPE,
        text=True,
    )


def stop_run(proc: subprocess.Popen[str]) -> str:
    """SIGTERM, then the exit; returns stderr (kills the process if it does not stop)."""
    try:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return stderr


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_run_notifies_ready_watchdog_status_and_stopping(
    broker: Mosquitto, tmp_path: Path, abstract: bool
) -> None:
    from notify import NotifySocket

    frames = tmp_path / "frames"
    write_demo_frames(frames)
    # feedback stays enabled: off a Pi the pins are simulated, and the log says so
    cfg = run_config(tmp_path, broker,
                     f'source = "replay"\nreplay_path = "{frames}"\nreplay_loop = true\nfps = 15')
    with NotifySocket(tmp_path, abstract=abstract) as manager:
        proc = start_run(cfg, manager.environment(watchdog_s=1.0))
        try:
            manager.wait_for(lambda ms: manager.count("WATCHDOG") >= 3, timeout=30)
        finally:
            stderr = stop_run(proc)
        messages = manager.wait_for(lambda ms: "STOPPING" in ms[-1])
    assert proc.returncode == 0, stderr
    assert messages[0]["READY"] == "1"  # before any ping
    assert messages[0]["STATUS"].startswith("scanning")
    assert messages[-1] == {"STOPPING": "1", "STATUS": "stopping"}
    assert all(m.get("WATCHDOG", "1") == "1" for m in messages)
    assert "simulated with gpiozero's MockFactory" in stderr


def test_run_with_a_failing_camera_is_ready_degraded_and_serves_orders(
    broker: Mosquitto, tmp_path: Path
) -> None:
    from notify import NotifySocket
    from test_orders import order_body, request

    from appliance.sandbox.server import LeatSandbox

    token = tmp_path / "leat-token"
    token.touch(mode=0o600)
    with LeatSandbox() as sandbox, NotifySocket(tmp_path) as manager:
        token.write_text(sandbox.personal_access_token, encoding="utf-8")
        cfg = run_config(
            tmp_path, broker, 'source = "picamera"',  # no picamera2 here: it cannot open
            f'[feedback]\nenabled = false\n[leat]\nbase_url = "{sandbox.url}"\n'
            f'token_file = "{token}"\nshop_uuid = "{DEMO_SHOP_UUID}"\n',
        )
        with Subscriber(broker, f"{BASE}/#") as pos:
            pos.wait_subscribed()
            proc = start_run(cfg, manager.environment(watchdog_s=2.0))
            try:
                ready = manager.wait_for(bool, timeout=20)[0]
                pos.wait_message(f"{BASE}/availability", b"online", timeout=20)
                pos.publish(f"{BASE}/request/order.create",
                            request(order=order_body("degraded-1"), transaction="t-1",
                                    customer={"identifier": "LC-7F3K9Q2M"}))
                reply = pos.wait_message(f"{BASE}/response/order.create", timeout=20)
                manager.wait_for(lambda ms: manager.count("WATCHDOG") >= 1, timeout=10)
            finally:
                stderr = stop_run(proc)
            assert proc.returncode == 0, stderr  # a camera failure is not a crash
            messages = pos.wait_for(lambda ms: payloads(list(ms), "availability")[-1:]
                                    == ["offline"])
    assert ready["READY"] == "1"
    assert ready["STATUS"].startswith("DEGRADED camera:")
    assert json.loads(reply.payload)["status"] == "ok"
    states = payloads(messages, "state")
    assert states[0]["camera"]["ok"] is False
    assert "picamera2" in states[0]["camera"]["error"]
    for state in states:
        validate("state", state)
    assert "camera failed" in stderr


@pytest.mark.parametrize("case", ["lgpio-fails-at-import", "no-pin-factory"])
def test_run_with_failing_pins_scans_without_feedback(
    broker: Mosquitto, tmp_path: Path, case: str
) -> None:
    # lgpio as it fails when the working directory is read-only (gpiozero issue 1106)
    fake = tmp_path / "fake-lgpio"
    fake.mkdir()
    (fake / "lgpio.py").write_text(
        "raise FileNotFoundError(2, 'No such file or directory', '.lgd-nfy-3')\n",
        encoding="utf-8",
    )
    env = {"GPIOZERO_PIN_FACTORY": "lgpio", "PYTHONPATH": str(fake)}
    expected = ".lgd-nfy-3"
    if case == "no-pin-factory":  # gpiozero finds no such factory: BadPinFactory
        env, expected = {"GPIOZERO_PIN_FACTORY": "none-installed"}, "BadPinFactory"
    frames = tmp_path / "frames"
    write_demo_frames(frames)
    cfg = run_config(tmp_path, broker,
                     f'source = "replay"\nreplay_path = "{frames}"\nreplay_loop = true\nfps = 20')
    with Subscriber(broker, f"{BASE}/#") as sub:
        sub.wait_subscribed()
        proc = start_run(cfg, env)
        try:
            messages = sub.wait_for(
                lambda ms: len(payloads(list(ms), "events/scan")) >= 2
                and bool(payloads(list(ms), "state")), timeout=30)
        finally:
            stderr = stop_run(proc)
    assert proc.returncode == 0, stderr
    feedback = payloads(messages, "state")[0]["feedback"]
    assert feedback["ok"] is False and feedback["pins"] is None
    assert expected in feedback["error"]
    assert "ERROR appliance.feedback: LED/buzzer feedback failed" in stderr


def test_dev_example_runs_the_device_off_the_pi() -> None:
    from appliance import config
    from appliance.sandbox.server import LeatSandbox

    dev = Path(__file__).parents[1] / "appliance" / "examples" / "dev.toml"
    cfg = config.load(dev)
    assert cfg.camera.source == "replay" and cfg.camera.replay_loop
    assert cfg.leat.shop_uuid == DEMO_SHOP_UUID
    # the recipe's token is the sandbox's own
    assert f"  {LeatSandbox().personal_access_token} \\\n" in dev.read_text()


def test_run_is_ready_without_waiting_for_the_broker(broker: Mosquitto, tmp_path: Path) -> None:
    from notify import NotifySocket

    frames = tmp_path / "frames"
    write_demo_frames(frames)
    cfg = run_config(tmp_path, broker,
                     f'source = "replay"\nreplay_path = "{frames}"\nreplay_loop = true',
                     "[feedback]\nenabled = false\n")
    broker.stop()  # the broker is down for the whole run
    with NotifySocket(tmp_path) as manager:
        proc = start_run(cfg, manager.environment(watchdog_s=1.0))
        try:
            messages = manager.wait_for(lambda ms: manager.count("WATCHDOG") >= 1, timeout=20)
        finally:
            stderr = stop_run(proc)
    assert proc.returncode == 0, stderr
    assert messages[0]["READY"] == "1"
    assert "MQTT disconnected" in messages[0]["STATUS"]
