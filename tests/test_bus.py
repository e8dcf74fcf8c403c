"""MqttBus against a real mosquitto: availability, Last Will, reconnects, queueing, v5 fields."""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import broker as broker_module
import paho.mqtt.client as mqtt
import pytest
from broker import Mosquitto, Subscriber, free_port
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from appliance import bus as bus_module
from appliance import contract, localbroker
from appliance.bus import Message, MqttBus
from appliance.config import MqttConfig, TlsConfig
from appliance.errors import BusError

ROOT = Path(__file__).resolve().parent.parent
DEVICE = "dev-1"
BASE = f"leat-scanner/{DEVICE}"
AVAILABILITY = f"{BASE}/availability"
INFO = {
    "schema": "leat-scanner/info/1",
    "device_id": DEVICE,
    "version": "0.1.0",
    "contract_version": "1",
    "capabilities": ["scan"],
    "started_at": "2025-01-02T10:00:00+00:00",
    "decode_formats": ["QRCode", "EAN13"],
}
STATE = {
    "schema": "leat-scanner/state/1",
    "device_id": DEVICE,
    "timestamp": "2025-01-02T10:00:05.120+01:00",
    "camera": {"ok": True, "fps": 14.8, "error": None},
    "scans_total": 3,
    "rejected_total": 0,
    "last_scan_at": None,
    "leat": {"reachable": None},
    "outbox": {"depth": 0, "oldest_pending_age_s": None},
}
SCAN = {
    "schema": "leat-scanner/events/scan/1",
    "event_id": "0b6f0a43-3d1e-4a4c-9d2a-6f1f0a1b2c3d",
    "device_id": DEVICE,
    "timestamp": "2025-01-02T10:00:06Z",
    "captured_at": "2025-01-02T10:00:05.950Z",
    "kind": "loyalty_card",
    "value": "LC-12345678",
    "masked": False,
    "format": "QRCode",
}

MakeBus = Callable[..., MqttBus]


@pytest.fixture
def make_bus() -> Iterator[MakeBus]:
    """Build buses (not started) and always stop them after the test."""
    buses: list[MqttBus] = []

    def make(server: Mosquitto | None, password: str | None = None, **options: Any) -> MqttBus:
        port = server.port if server is not None else free_port()
        cfg_keys = {k: options.pop(k) for k in ("username",) if k in options}
        cfg = MqttConfig(host="127.0.0.1", port=port, **cfg_keys)
        bus = MqttBus(cfg, BASE, f"test-{len(buses)}", password, INFO, **options)
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        bus.stop(timeout=2.0)


class LogWatch(logging.Handler):
    """Collects log records and lets a test wait for a condition on them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._condition = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._condition:
            self.records.append(record)
            self._condition.notify_all()

    def wait_for(
        self, predicate: Callable[[list[logging.LogRecord]], bool], timeout: float
    ) -> None:
        with self._condition:
            assert self._condition.wait_for(lambda: predicate(self.records), timeout), [
                r.getMessage() for r in self.records
            ]


def count(records: list[logging.LogRecord], text: str) -> int:
    return sum(text in r.getMessage() for r in records)


def test_bus_publishes_online_and_info_retained_after_connect(
    broker: Mosquitto, make_bus: MakeBus
) -> None:
    bus = make_bus(broker)
    bus.start()
    assert bus.wait_connected(10)
    assert bus.connected
    with Subscriber(broker, f"{BASE}/#") as sub:
        online = sub.wait_message(AVAILABILITY, b"online")
        info = sub.wait_message(f"{BASE}/info")
    assert online.retain
    assert info.retain
    assert json.loads(info.payload) == INFO


def _status_order(messages: list[Any]) -> list[str]:
    """The status topics (last level) in the order they arrived, e.g. ["info", "state", ...]."""
    return [m.topic.rsplit("/", 1)[1] for m in messages
            if m.topic in (AVAILABILITY, f"{BASE}/info", f"{BASE}/state")]


def test_bus_publishes_info_and_state_before_online_on_connect_and_reconnect(
    broker: Mosquitto, make_bus: MakeBus
) -> None:
    # issue 8 item 6: a POS reading the capabilities when "online" arrives must find this
    # run's info (and state) already there, on the first connect and on every reconnect
    bus = make_bus(broker)
    bus.set_state(STATE)
    with Subscriber(broker, f"{BASE}/#").wait_subscribed() as sub:  # live, in arrival order
        bus.start()
        sub.wait_message(AVAILABILITY, b"online")
        assert _status_order(sub.messages) == ["info", "state", "availability"]
        seen = len(sub.messages)
        # Another client taking over the device's client id closes the device's connection
        # (MQTT 5.0 §3.1.4-3); the broker publishes its Last Will, then the bus reconnects.
        intruder = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-0",
                               protocol=MQTTProtocolVersion.MQTTv5)
        intruder.connect(broker.host, broker.port)
        intruder.loop_start()
        try:
            sub.wait_message(AVAILABILITY, b"offline")
        finally:
            intruder.disconnect()
            intruder.loop_stop()
        sub.wait_for(lambda ms: any(m.payload == b"online" for m in ms[seen:]))
        again = _status_order(sub.messages[seen:])
    assert again == ["availability", "info", "state", "availability"], again
    assert [m.payload for m in sub.on(AVAILABILITY)] == [b"online", b"offline", b"online"]


def test_bus_start_returns_without_broker_and_connects_when_it_starts(
    broker: Mosquitto, make_bus: MakeBus
) -> None:
    broker.stop()
    bus = make_bus(broker)
    bus.start()  # must not block or raise
    assert not bus.connected
    broker.start()
    assert bus.wait_connected(10)
    with Subscriber(broker, AVAILABILITY) as sub:
        sub.wait_message(AVAILABILITY, b"online")


def test_bus_last_will_publishes_offline_when_process_dies(broker: Mosquitto) -> None:
    script = (
        "import sys, threading\n"
        "from appliance.bus import MqttBus\n"
        "from appliance.config import MqttConfig\n"
        "cfg = MqttConfig(host='127.0.0.1', port=int(sys.argv[1]))\n"
        "MqttBus(cfg, sys.argv[2], 'will-test', None, {}).start()\n"
        "threading.Event().wait()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with Subscriber(broker, AVAILABILITY) as sub, subprocess.Popen(
        [sys.executable, "-c", script, str(broker.port), BASE],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    ) as proc:
        try:
            sub.wait_message(AVAILABILITY, b"online")
        finally:
            proc.kill()
            proc.wait(timeout=10)
        sub.wait_message(AVAILABILITY, b"offline")
    with Subscriber(broker, AVAILABILITY) as late:
        assert late.wait_message(AVAILABILITY, b"offline").retain


def test_bus_stop_publishes_offline_retained(broker: Mosquitto, make_bus: MakeBus) -> None:
    bus = make_bus(broker)
    bus.start()
    assert bus.wait_connected(10)
    bus.stop()
    assert not bus.connected
    with Subscriber(broker, AVAILABILITY) as sub:
        assert sub.wait_message(AVAILABILITY, b"offline").retain
    bus.stop()  # idempotent
    with pytest.raises(BusError):
        bus.start()


def test_bus_republishes_and_resubscribes_after_broker_restart(
    broker: Mosquitto, make_bus: MakeBus
) -> None:
    received: list[Message] = []
    arrived = threading.Event()

    def handle(message: Message) -> None:
        received.append(message)
        arrived.set()

    bus = make_bus(broker)
    bus.subscribe("request/ping", handle)
    bus.set_state(STATE)
    bus.start()
    assert bus.wait_connected(10)
    broker.stop()  # persistence off: retained messages are forgotten
    broker.start()
    with Subscriber(broker, f"{BASE}/#") as sub:
        sub.wait_message(AVAILABILITY, b"online")
        sub.wait_message(f"{BASE}/info")
        state = sub.wait_message(f"{BASE}/state")
        assert state.retain
        assert json.loads(state.payload) == STATE
        sub.publish(f"{BASE}/request/ping", b'{"n":1}')
        assert arrived.wait(10)
    assert received[0].topic == f"{BASE}/request/ping"
    assert received[0].json() == {"n": 1}


def test_bus_delivers_events_queued_while_disconnected(
    broker: Mosquitto, make_bus: MakeBus
) -> None:
    bus = make_bus(broker)
    bus.start()
    assert bus.wait_connected(10)
    broker.stop()
    for n in range(3):
        bus.publish_event("scan", {**SCAN, "value": f"LC-0000000{n}"})
    broker.start()
    with Subscriber(broker, f"{BASE}/events/#").wait_subscribed() as sub:
        sub.wait_for(lambda ms: len(ms) >= 3)
        values = [json.loads(m.payload)["value"] for m in sub.on(f"{BASE}/events/scan")]
    assert values == ["LC-00000000", "LC-00000001", "LC-00000002"]


def test_bus_publish_event_raises_when_queue_full(make_bus: MakeBus) -> None:
    bus = make_bus(None, max_queued=3)
    bus.start()  # nothing listens on the port
    for _ in range(3):
        bus.publish_event("scan", SCAN)
    with pytest.raises(BusError, match="queue full"):
        bus.publish_event("scan", SCAN)
    for _ in range(3):
        bus.publish_event("identification", SCAN, expiry_s=30)
    with pytest.raises(BusError, match="queue full"):
        bus.publish_event("identification", SCAN, expiry_s=30)


def test_bus_publish_event_sets_message_expiry_and_is_not_retained(
    broker: Mosquitto, make_bus: MakeBus
) -> None:
    bus = make_bus(broker)
    bus.start()
    assert bus.wait_connected(10)
    with Subscriber(broker, f"{BASE}/events/#").wait_subscribed() as sub:
        bus.publish_event("identification", {"n": 1}, expiry_s=30)
        bus.publish_event("scan", SCAN)
        expiring = sub.wait_message(f"{BASE}/events/identification")
        plain = sub.wait_message(f"{BASE}/events/scan")
    assert 0 < getattr(expiring.properties, "MessageExpiryInterval", 0) <= 30
    assert not hasattr(plain.properties, "MessageExpiryInterval")
    assert not expiring.retain
    assert not plain.retain


def test_bus_expiring_event_held_offline_is_dropped_once_expired(
    broker: Mosquitto, make_bus: MakeBus
) -> None:
    now = [1000.0]
    broker.stop()
    bus = make_bus(broker, clock=lambda: now[0])
    bus.start()
    bus.publish_event("identification", {"n": 1}, expiry_s=5)
    bus.publish_event("identification", {"n": 2}, expiry_s=60)
    now[0] += 10  # the first one expires while we are offline
    bus.publish_event("identification", {"n": 3}, expiry_s=60)
    broker.start()
    with Subscriber(broker, f"{BASE}/events/#").wait_subscribed() as sub:
        sub.wait_message(f"{BASE}/events/identification", b'{"n":3}')
        messages = sub.on(f"{BASE}/events/identification")
    assert [json.loads(m.payload) for m in messages] == [{"n": 2}, {"n": 3}]
    assert 0 < getattr(messages[0].properties, "MessageExpiryInterval", 0) <= 50


def test_bus_message_exposes_response_topic_and_correlation_data(
    broker: Mosquitto, make_bus: MakeBus
) -> None:
    received: list[Message] = []
    arrived = threading.Event()

    def handle(message: Message) -> None:
        received.append(message)
        bus.publish_response(message.response_topic or "", {"ok": True}, message.correlation_data)
        arrived.set()

    bus = make_bus(broker)
    bus.subscribe("request/+", handle)
    bus.start()
    assert bus.wait_connected(10)
    properties = Properties(PacketTypes.PUBLISH)
    properties.ResponseTopic = "pos/1/reply"
    properties.CorrelationData = b"\x01corr"
    properties.UserProperty = ("transaction", "t-1")
    with Subscriber(broker, "pos/#") as sub:
        sub.publish(f"{BASE}/request/identify", b"{}", properties)
        assert arrived.wait(10)
        reply = sub.wait_message("pos/1/reply")
    message = received[0]
    assert message == Message(
        topic=f"{BASE}/request/identify",
        payload=b"{}",
        response_topic="pos/1/reply",
        correlation_data=b"\x01corr",
        user_properties=(("transaction", "t-1"),),
    )
    assert getattr(reply.properties, "CorrelationData", None) == b"\x01corr"
    assert json.loads(reply.payload) == {"ok": True}
    assert not reply.retain


def test_bus_handler_exception_is_logged_and_loop_survives(
    broker: Mosquitto, make_bus: MakeBus, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[bytes] = []
    second = threading.Event()

    def handle(message: Message) -> None:
        seen.append(message.payload)
        if message.payload == b"boom":
            raise RuntimeError("handler bug")
        second.set()

    bus = make_bus(broker)
    bus.subscribe("request/x", handle)
    bus.start()
    assert bus.wait_connected(10)
    with Subscriber(broker, AVAILABILITY) as sub:
        sub.publish(f"{BASE}/request/x", b"boom")
        sub.publish(f"{BASE}/request/x", b"fine")
        assert second.wait(10)
    assert seen == [b"boom", b"fine"]
    assert bus.connected
    failures = [r for r in caplog.records if "handler for" in r.getMessage()]
    assert failures and failures[0].exc_info is not None


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_bus_supervise_restarts_a_network_thread_that_died(
    broker: Mosquitto, make_bus: MakeBus, caplog: pytest.LogCaptureFixture
) -> None:
    # paho ends its network thread for good when a callback raises (suppress_exceptions is
    # False): a paho-level on_message that raises once kills it for real
    received = threading.Event()
    bus = make_bus(broker)
    bus.subscribe("request/x", lambda message: received.set())
    bus.start()
    assert bus.wait_serving(10)
    assert not bus.supervise()  # alive: nothing to do
    client = bus._client  # the only way to make paho's own loop raise
    ours = client.on_message

    def crash(*args: Any) -> None:
        client.on_message = ours
        raise RuntimeError("bug inside the network loop")

    [network] = _paho_threads()
    client.on_message = crash
    with Subscriber(broker, AVAILABILITY) as sub:
        sub.publish(f"{BASE}/request/x", b"first")
        network.join(10)
        assert not network.is_alive(), "paho's thread did not end"
        sub.publish(f"{BASE}/request/x", b"second")
        assert not received.wait(0.2)  # nothing is read any more
        assert bus.supervise()
        assert received.wait(10)
    assert "network thread had ended" in caplog.text
    assert not bus.supervise()


def _paho_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate()
            if t.name.startswith("paho-mqtt-client-test-") and t.is_alive()]



def test_bus_connects_with_username_and_password(
    auth_broker: Mosquitto, make_bus: MakeBus
) -> None:
    bus = make_bus(auth_broker, "s3cret-pw", username="scanner")
    bus.start()
    assert bus.wait_connected(10)


def test_bus_wrong_password_is_not_connected_and_logged_once_without_secret(
    auth_broker: Mosquitto, make_bus: MakeBus, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="appliance.bus")
    watch = LogWatch()
    logging.getLogger("appliance.bus").addHandler(watch)
    try:
        bus = make_bus(auth_broker, "wrong-pw-7f3a", username="scanner")
        bus.start()
        # paho logs each CONNACK at DEBUG: wait for two refusals (first retry after 1 s)
        watch.wait_for(lambda rs: count(rs, "Received CONNACK") >= 2, timeout=10)
    finally:
        logging.getLogger("appliance.bus").removeHandler(watch)
    assert not bus.connected
    assert not bus.wait_connected(0)
    assert count(watch.records, "refused the connection") == 1
    assert all("wrong-pw-7f3a" not in r.getMessage() for r in watch.records)
    assert all("wrong-pw-7f3a" not in r.getMessage() for r in caplog.records)


def test_bus_payloads_match_contract(broker: Mosquitto, make_bus: MakeBus) -> None:
    bus = make_bus(broker)
    bus.start()
    assert bus.wait_connected(10)
    with Subscriber(broker, f"{BASE}/#").wait_subscribed() as sub:
        bus.set_state(STATE)
        bus.publish_event("scan", SCAN)
        sub.wait_message(f"{BASE}/events/scan")
        sub.wait_message(f"{BASE}/state")
        messages = {m.topic: m.payload for m in sub.wait_for(lambda ms: len(ms) >= 4)}
    contract.validate("availability", messages[AVAILABILITY].decode("utf-8"))
    for name, topic in [("info", "info"), ("state", "state"), ("scan", "events/scan")]:
        payload = messages[f"{BASE}/{topic}"]
        document = json.loads(payload)
        contract.validate(name, document)
        compact = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
        assert payload == compact.encode("utf-8"), f"{topic} is not compact JSON"


def test_bus_rejects_event_names_with_wildcards(make_bus: MakeBus) -> None:
    bus = make_bus(None)
    with pytest.raises(ValueError, match="event name"):
        bus.publish_event("scan/#", SCAN)


def test_bus_status_still_published_when_event_queue_is_full(
    broker: Mosquitto, make_bus: MakeBus, caplog: pytest.LogCaptureFixture
) -> None:
    broker.stop()
    bus = make_bus(broker, max_queued=2)
    bus.start()
    bus.publish_event("scan", SCAN)
    bus.publish_event("scan", SCAN)
    with pytest.raises(BusError):
        bus.publish_event("scan", SCAN)
    broker.start()
    with Subscriber(broker, f"{BASE}/#").wait_subscribed() as sub:
        sub.wait_message(AVAILABILITY, b"online")
        sub.wait_message(f"{BASE}/info")
        sub.wait_for(lambda ms: sum(m.topic.endswith("/events/scan") for m in ms) == 2)
    assert bus.wait_connected(10)
    assert any("at QoS 0" in r.getMessage() for r in caplog.records)


def test_bus_tls_with_missing_ca_file_raises_bus_error(tmp_path: Path) -> None:
    tls = TlsConfig(enabled=True, ca_file=tmp_path / "missing-ca.pem")
    cfg = MqttConfig(host="127.0.0.1", port=free_port(), tls=tls)
    with pytest.raises(BusError, match="TLS") as caught:
        MqttBus(cfg, BASE, "tls-test", None, INFO)
    assert isinstance(caught.value.__cause__, OSError)


def test_broker_missing_mosquitto_reports_bootstrap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(localbroker, "_which", lambda name: None)
    with pytest.raises(broker_module.MosquittoMissingError, match="run scripts/bootstrap"):
        Mosquitto(tmp_path)


class _Counting(logging.Handler):
    """Counts records whose message contains `text`; `wait(n)` for n of them."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.count = 0
        self._condition = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            with self._condition:
                self.count += 1
                self._condition.notify_all()

    def wait(self, n: int, timeout: float = 15.0) -> bool:
        with self._condition:
            return self._condition.wait_for(lambda: self.count >= n, timeout)


@pytest.mark.parametrize("end", ["kill", "stop"])
def test_bus_outage_is_one_warning_not_an_error_per_retry(
    broker: Mosquitto, make_bus: MakeBus, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch, end: str,
) -> None:
    monkeypatch.setattr("appliance.bus.RECONNECT_MIN_S", 0.02)
    monkeypatch.setattr("appliance.bus.RECONNECT_MAX_S", 0.05)
    paho_log = logging.getLogger("appliance.bus.paho")
    retries = _Counting("Connection failed, retrying")  # paho's DEBUG line per attempt
    paho_log.addHandler(retries)
    try:
        with caplog.at_level(logging.DEBUG, logger="appliance.bus.paho"):
            bus = make_bus(broker)
            bus.start()
            assert bus.wait_connected(10)
            getattr(broker, end)()  # a crash (kill -9) or a restart (SIGTERM) of the broker
            assert retries.wait(8)  # paho logged "Client is not connected" at ERROR each time
            broker.start()
            assert bus.wait_connected(10)
    finally:
        paho_log.removeHandler(retries)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("MQTT: connection lost")
    assert "Unspecified error" not in warnings[0]  # paho's socket error says what happened


def test_bus_unacknowledged_offline_falls_back_to_the_last_will(
    broker: Mosquitto, make_bus: MakeBus
) -> None:
    bus = make_bus(broker)
    bus.start()
    assert bus.wait_connected(10)
    with Subscriber(broker, AVAILABILITY) as sub:
        sub.wait_message(AVAILABILITY, b"online")
        # No time to wait for the broker's ack of "offline": the bus must then disconnect
        # asking for its Last Will (reason 0x04), a second "offline" from the broker itself.
        bus.stop(timeout=0)
        offline = sub.wait_for(lambda ms: [m.payload for m in ms].count(b"offline") == 2)
    assert [m.payload for m in offline] == [b"online", b"offline", b"offline"]
    assert all(m.retain for m in offline[1:])


def test_bus_clean_stop_then_crash_still_leaves_offline(
    broker: Mosquitto, make_bus: MakeBus
) -> None:
    first = make_bus(broker)
    first.start()
    assert first.wait_connected(10)
    first.stop()  # a clean "offline"; the broker drops that connection's Will
    test_bus_last_will_publishes_offline_when_process_dies(broker)  # same topics, new process


class _Collect:
    """A `Service` that keeps what it is given."""

    def __init__(self) -> None:
        self.got: queue.Queue[Message] = queue.Queue()

    def on_message(self, message: Message) -> None:
        self.got.put(message)

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 5.0) -> None:
        pass


def test_a_request_sent_once_the_bus_serves_is_delivered_on_a_first_connection(
    broker: Mosquitto, make_bus: MakeBus
) -> None:
    # CONNACK comes before the broker has our subscription: a request published between the
    # two, on a fresh session, reaches nobody. wait_serving() waits for the SUBACK.
    for round_ in range(5):
        bus = make_bus(broker)
        service = _Collect()
        bus.serve("request/+", service)
        assert not bus.wait_serving(0)
        bus.start()
        assert bus.wait_serving(10)
        with Subscriber(broker, "pos/unused").wait_subscribed() as pos:
            pos.publish(f"{bus.base_topic}/request/ping", b"{}", None)
            assert service.got.get(timeout=10).topic.endswith("/request/ping"), round_
        bus.stop()
        assert not bus.wait_serving(0)


def _serving(cfg: MqttConfig, client_id: str, **options: Any) -> tuple[MqttBus, _Collect]:
    """A bus (not started) serving `request/+` to a `_Collect` as `client_id`."""
    bus = MqttBus(cfg, BASE, client_id, None, INFO, **options)
    service = _Collect()
    bus.serve("request/+", service)
    return bus, service


def _leave_a_session(cfg: MqttConfig, client_id: str) -> None:
    """Connect a serving bus as `client_id` once and stop it: the broker keeps its session
    (subscriptions included) and holds what is published for it."""
    bus, _ = _serving(cfg, client_id)
    bus.start()
    assert bus.wait_serving(10) and bus.wait_caught_up(10)  # a new session: nothing held
    bus.stop()


def test_requests_the_broker_held_while_the_device_was_away_are_flagged_resumed(
    broker: Mosquitto,
) -> None:
    # a persistent session: the broker keeps what is published for the device while it is
    # away and hands it out on the next connection; MQTT does not say it waited
    cfg = MqttConfig(host="127.0.0.1", port=broker.port)
    _leave_a_session(cfg, "held-1")
    with Subscriber(broker, "pos/unused").wait_subscribed() as pos:
        for n in range(25):  # more than Mosquitto sends at once (max_inflight_messages 20)
            pos.publish(f"{BASE}/request/pay", json.dumps({"n": n}).encode(), None)
        again, service = _serving(cfg, "held-1")
        again.start()
        try:
            held = [service.got.get(timeout=10) for _ in range(25)]
            assert [m.json()["n"] for m in held] == list(range(25))
            assert all(m.resumed for m in held)
            assert again.wait_caught_up(10)
            pos.publish(f"{BASE}/request/pay", b'{"n":25}', None)
            live = service.got.get(timeout=10)
            assert live.json() == {"n": 25} and not live.resumed
        finally:
            again.stop()


@pytest.mark.parametrize("end", ["quiet", "max"])
def test_a_marker_the_broker_never_returns_ends_the_flagging_after_a_while(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, end: str
) -> None:
    # an ACL that lets the device read its requests only: the marker never comes back
    server = Mosquitto(tmp_path / "broker")
    acl = tmp_path / "broker" / "acl"
    acl.write_text(f"topic read {BASE}/request/#\ntopic write #\n", encoding="utf-8")
    with server.conf.open("a", encoding="utf-8") as conf:
        conf.write(f"acl_file {acl}\n")
    server.start()
    now = [1000.0]
    cfg = MqttConfig(host="127.0.0.1", port=server.port)
    try:
        _leave_a_session(cfg, "acl-1")
        with Subscriber(server, "pos/unused").wait_subscribed() as pos:
            pos.publish(f"{BASE}/request/pay", b'{"n":0}', None)
            again, service = _serving(cfg, "acl-1", clock=lambda: now[0])
            again.start()
            try:
                assert service.got.get(timeout=10).resumed
                for n in (1, 2):  # held messages still coming slowly (a slow link): held
                    now[0] += bus_module.MARKER_QUIET_S * 0.7
                    pos.publish(f"{BASE}/request/pay", json.dumps({"n": n}).encode(), None)
                    assert service.got.get(timeout=10).resumed  # the marker is not back
                assert not again.wait_caught_up(0)
                if end == "quiet":  # nothing came for MARKER_QUIET_S
                    now[0] += bus_module.MARKER_QUIET_S + 1
                else:  # a till keeps asking: MARKER_MAX_S after the marker at the latest
                    step = bus_module.MARKER_QUIET_S * 0.7
                    while now[0] + step <= 1000 + bus_module.MARKER_MAX_S:
                        now[0] += step
                        pos.publish(f"{BASE}/request/pay", b'{"n":2}', None)
                        assert service.got.get(timeout=10).resumed
                    now[0] += step  # past the maximum, never quiet
                pos.publish(f"{BASE}/request/pay", b'{"n":3}', None)
                assert not service.got.get(timeout=10).resumed
                assert again.wait_caught_up(0)
                assert "did not return the session marker" in caplog.text
            finally:
                again.stop()
    finally:
        server.stop()


def test_a_marker_paho_cannot_queue_at_the_reconnect_keeps_flagging_until_it_is_sent(
    broker: Mosquitto,
) -> None:
    # events published while away fill paho's queue: the marker is refused at the reconnect;
    # what the broker held must still be flagged (fail closed), and the marker sent later
    cfg = MqttConfig(host="127.0.0.1", port=broker.port)
    _leave_a_session(cfg, "full-1")
    with Subscriber(broker, "pos/unused").wait_subscribed() as pos:
        pos.publish(f"{BASE}/request/pay", b'{"n":0}', None)
        again, service = _serving(cfg, "full-1", max_queued=2)
        for n in range(2):
            again.publish_event("scan", {**SCAN, "value": f"LC-0000000{n}"})
        again.start()
        try:
            assert service.got.get(timeout=10).resumed
            assert not again.wait_caught_up(0)
            deadline = time.monotonic() + 10
            while not again.wait_caught_up(0.05) and time.monotonic() < deadline:
                again.supervise()  # as the daemon does every second: once paho has room
            assert again.wait_caught_up(0)
            pos.publish(f"{BASE}/request/pay", b'{"n":1}', None)
            assert not service.got.get(timeout=10).resumed
        finally:
            again.stop()
