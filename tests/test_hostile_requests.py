"""Hostile POS requests through a real Mosquitto and the real bus (issue 7): huge, deep and
unencodable requests are answered at once with a named error, replies never land in a
device's topic space, paho's network thread never waits for a request, and a few hundred
fuzzed requests each get exactly one reply."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import socket
import struct
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from broker import Mosquitto, Subscriber
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from test_orders import CONTACT, claim, order_body

from appliance import contract
from appliance.assembly import build
from appliance.bus import BROKER_MAX_PACKET_BYTES, MAX_PACKET_BYTES, MqttBus
from appliance.config import Config, MqttConfig
from appliance.pos.errors import ERRORS
from appliance.pos.intake import MAX_REQUEST_BYTES, OrderRequests
from appliance.samples import write_demo_frames

DEVICE = "till-9"
BASE = f"leat-scanner/{DEVICE}"
REQUEST = f"{BASE}/request/order.create"
DEFAULT_REPLY = f"{BASE}/response/order.create"
POS_REPLY = "pos/till9/replies"
SCAN = {"schema": "leat-scanner/events/scan/1", "value": "LC-12345678"}


class Device:
    """The device's MQTT side for one test: the real bus serving real OrderRequests."""

    def __init__(self, broker: Mosquitto, outbox: Path, reply_hook: Callable[[], None] | None,
                 backlog: int = 8) -> None:
        self.bus = MqttBus(MqttConfig(host=broker.host, port=broker.port), BASE, DEVICE, None,
                           {"x": 1})
        self._hook = reply_hook

        def reply(topic: str, payload: Mapping[str, Any], correlation: bytes | None) -> None:
            if self._hook is not None and threading.current_thread().name == "requests":
                self._hook()
            self.bus.publish_response(topic, payload, correlation)

        self.requests = OrderRequests(outbox, reply, base_topic=BASE, shop_uuid=None,
                                      claim_url=claim, backlog=backlog,
                                      refuse=self.bus.publish_refusal)
        self.bus.serve("request/+", self.requests)
        self.bus.start()
        assert self.bus.wait_serving(10)


@pytest.fixture
def device(broker: Mosquitto, tmp_path: Path) -> Iterator[Device]:
    dev = Device(broker, tmp_path / "outbox.sqlite3", None)
    try:
        yield dev
    finally:
        dev.bus.stop()


def v5(response_topic: str | None = None, correlation: bytes | None = None) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if response_topic is not None:
        props.ResponseTopic = response_topic
    if correlation is not None:
        props.CorrelationData = correlation
    return props


def replies(pos: Subscriber) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in pos.messages if "/response/" in m.topic]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def raw_publish(broker: Mosquitto, topic: str, payload: bytes) -> bytes:
    """Publish at QoS 1 over a bare MQTT 5 socket (no client library to resend it forever);
    returns what the broker answered."""
    with socket.create_connection((broker.host, broker.port), timeout=10) as sock:
        header = b"\x00\x04MQTT\x05\x02\x00\x3c\x00"  # v5, clean start, keepalive 60
        client_id = b"\x00\x07hostile"
        sock.sendall(b"\x10" + _varint(len(header) + len(client_id)) + header + client_id)
        assert sock.recv(64)[:1] == b"\x20"  # CONNACK
        name = topic.encode()
        head = struct.pack(">H", len(name)) + name + b"\x00\x01" + b"\x00"  # mid 1, no props
        with contextlib.suppress(OSError):  # the broker hung up before reading it all
            sock.sendall(b"\x32" + _varint(len(head) + len(payload)) + head + payload)
        try:
            return sock.recv(64)
        except OSError:
            return b""


def test_hostile_huge_and_deep_requests_are_answered_and_the_device_stays_connected(
    broker: Mosquitto, device: Device, caplog: pytest.LogCaptureFixture
) -> None:
    field = "jane.doe@example.com " + "a@" * 125_000  # quadratic masking took ~52 s on it
    with Subscriber(broker, f"{BASE}/#", "pos/#") as pos:
        pos.wait_subscribed()
        pos.publish(REQUEST, b"x" * 1_000_000, v5(POS_REPLY, b"1MB"))
        # 10 MB is over the broker's max_packet_size: it hangs up on that publisher
        # (DISCONNECT 0x95, "packet too large") and never forwards the message.
        assert raw_publish(broker, REQUEST, b"x" * 10_000_000)[:1] in (b"\xe0", b"")
        pos.publish(REQUEST, json.dumps({"order": {**order_body(), "reference": field}}).encode(),
                    v5(POS_REPLY, b"250kB"))
        pos.publish(REQUEST, b'{"order":' + b"[" * 1000 + b"]" * 1000 + b"}",
                    v5(POS_REPLY, b"deep"))
        pos.publish(REQUEST, b'{"transaction": "\\ud800", "order": {}}', v5(POS_REPLY, b"sur"))
        for n in range(20):  # scans keep flowing
            device.bus.publish_event("scan", {**SCAN, "n": n})
        pos.publish(REQUEST, json.dumps({"customer": {"identifier": "LC-1"},
                                         "order": order_body("fine-1")}).encode(),
                    v5(POS_REPLY, b"fine"))
        pos.wait_for(lambda ms: len([m for m in ms if m.topic == POS_REPLY]) >= 5, timeout=5)
        pos.wait_for(lambda ms: len([m for m in ms if m.topic.endswith("/events/scan")]) == 20,
                     timeout=5)
        answers = {m.properties.CorrelationData: json.loads(m.payload)
                   for m in pos.on(POS_REPLY)}
        onlines = pos.on(f"{BASE}/availability")
    assert {k: (a["error"] or {}).get("code") for k, a in answers.items()} == {
        b"1MB": "too_large", b"250kB": "invalid_request", b"deep": "too_deep",
        b"sur": "invalid_json", b"fine": None,
    }
    assert "order/reference" in answers[b"250kB"]["error"]["message"]
    for answer in answers.values():
        contract.validate("response", answer)
    assert [m.payload for m in onlines] == [b"online"]  # never dropped and reconnected
    assert device.bus.connected
    assert not [r for r in caplog.records if "connection lost" in r.getMessage()]
    assert "jane.doe@example.com" not in caplog.text


def test_hostile_byte_order_marks_in_properties_are_answered_and_the_device_stays_connected(
    broker: Mosquitto, device: Device, caplog: pytest.LogCaptureFixture
) -> None:
    # U+FEFF is a legal character in MQTT strings ([MQTT-1.5.4-3]) and Mosquitto forwards it;
    # paho-mqtt 2.2's reader called the PUBLISH malformed and dropped the connection before
    # the PUBACK, so the broker handed the request out again at every reconnect.
    def body(ext: str) -> bytes:
        return json.dumps({"customer": {"identifier": "LC-1"}, "order": order_body(ext)}).encode()

    with Subscriber(broker, f"{BASE}/#", "pos/#") as pos:
        pos.wait_subscribed()
        noted = v5(POS_REPLY, b"user-property")
        noted.UserProperty = [("note", "\ufeffhello")]
        pos.publish(REQUEST, body("bom-1"), noted)
        typed = v5(POS_REPLY, b"content-type")
        typed.ContentType = "application/json\ufeff"
        pos.publish(REQUEST, body("bom-2"), typed)
        pos.publish(REQUEST, body("bom-3"), v5("pos/till9\ufeff", b"response-topic"))
        pos.publish(REQUEST, body("bom-4"), v5(POS_REPLY, b"after"))
        pos.wait_for(lambda ms: len([m for m in ms if m.topic == POS_REPLY]) >= 3, timeout=10)
        pos.wait_for(lambda ms: any(m.topic.endswith("\ufeff") or m.topic == DEFAULT_REPLY
                                    for m in ms), timeout=10)
        answers = {m.properties.CorrelationData: json.loads(m.payload) for m in pos.messages
                   if "/response/" in m.topic or m.topic.startswith("pos/")}
        onlines = pos.on(f"{BASE}/availability")
    assert set(answers) == {b"user-property", b"content-type", b"response-topic", b"after"}
    assert all(a["status"] == "ok" for k, a in answers.items() if k != b"response-topic")
    assert [m.payload for m in onlines] == [b"online"]  # never dropped and reconnected
    assert device.bus.connected
    assert not [r for r in caplog.records if "connection lost" in r.getMessage()]


def test_hostile_retained_request_is_never_run_however_often_it_is_handed_out(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """A retained request comes again at every subscription (each restart, each reconnect):
    run then, it would take money or store an order long after the POS gave up on it."""
    outbox = tmp_path / "outbox.sqlite3"
    body = {"customer": {"identifier": "LC-1"}, "order": order_body("kept-1"),
            "transaction": "t-kept"}
    with Subscriber(broker, f"{BASE}/#", "pos/#") as pos:
        pos.wait_subscribed()
        pos.publish(REQUEST, json.dumps(body).encode(), v5(POS_REPLY, b"r"), retain=True)
        for start in range(2):  # the device starts (again): the broker hands it out each time
            device = Device(broker, outbox, None)
            try:
                [*_, refused] = pos.wait_for(
                    lambda ms, n=start: len([m for m in ms if m.topic == POS_REPLY]) > n)
            finally:
                device.bus.stop()
            answer = json.loads(refused.payload)
            contract.validate("response", answer)
            assert answer["error"]["code"] == "retained"
            assert answer["transaction"] == "t-kept"
        pos.publish(REQUEST, b"", retain=True)  # the POS clears it: not a request, no reply
        device = Device(broker, outbox, None)
        try:
            pos.publish(REQUEST, json.dumps({**body, "transaction": "t-live"}).encode(),
                        v5(POS_REPLY, b"live"))
            [*_, live] = pos.wait_for(
                lambda ms: len([m for m in ms if m.topic == POS_REPLY]) == 3)
        finally:
            device.bus.stop()
    assert json.loads(live.payload)["status"] == "ok"  # a live request runs as ever
    assert len(pos.on(POS_REPLY)) == 3


def test_hostile_slow_request_never_holds_paho_thread(
    broker: Mosquitto, tmp_path: Path
) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow() -> None:  # the worker hangs in its reply, as in a slow SQLite commit
        entered.set()
        release.wait(30)

    device = Device(broker, tmp_path / "outbox.sqlite3", slow, backlog=2)
    try:
        with Subscriber(broker, f"{BASE}/#", "pos/#") as pos:
            pos.wait_subscribed()
            for n in range(4):
                body = {"customer": {"identifier": "LC-1"}, "order": order_body(f"slow-{n}")}
                pos.publish(REQUEST, json.dumps(body).encode(), v5(POS_REPLY, b"%d" % n))
                if n == 0:
                    assert entered.wait(10)
            # two wait in the backlog, the fourth is answered `busy` at the door, at once
            [busy] = pos.wait_for(lambda ms: any(m.topic == POS_REPLY for m in ms), timeout=5)[
                -1:
            ]
            assert busy.properties.CorrelationData == b"3"
            assert json.loads(busy.payload)["error"]["code"] == "busy"
            # at QoS 0: refusals never take the QoS 1 queue's places replies and events need
            assert busy.qos == 0
            for n in range(10):  # paho's thread is free: events and requests still flow
                device.bus.publish_event("scan", {**SCAN, "n": n})
            pos.wait_for(lambda ms: sum(m.topic.endswith("/events/scan") for m in ms) == 10,
                         timeout=5)
            assert not release.is_set()
            assert device.requests.busy_since is not None  # what a watchdog can look at
            assert device.requests.waiting == 2
            release.set()
            pos.wait_for(lambda ms: sum(m.topic == POS_REPLY for m in ms) == 4, timeout=10)
            answers = {m.properties.CorrelationData: json.loads(m.payload)["status"]
                       for m in pos.on(POS_REPLY)}
    finally:
        release.set()
        device.bus.stop()
    assert answers == {b"0": "ok", b"1": "ok", b"2": "ok", b"3": "error"}


def test_hostile_stop_answers_every_queued_request(broker: Mosquitto, tmp_path: Path) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow() -> None:
        entered.set()
        release.wait(30)

    device = Device(broker, tmp_path / "outbox.sqlite3", slow, backlog=4)
    with Subscriber(broker, "pos/#", DEFAULT_REPLY) as pos:
        pos.wait_subscribed()
        for n in range(4):
            body = {"customer": {"identifier": "LC-1"}, "order": order_body(f"q-{n}")}
            pos.publish(REQUEST, json.dumps(body).encode(), v5(POS_REPLY, b"%d" % n))
            if n == 0:
                assert entered.wait(10)
        # refused at the door, in order: once answered, the three before it wait in the queue
        pos.publish(REQUEST, b"{}", v5("pos/#", b"marker"))
        pos.wait_message(DEFAULT_REPLY)
        release.set()
        device.bus.stop()  # paho acked them on arrival: each must still be answered
        pos.wait_for(lambda ms: len(ms) == 5, timeout=10)
        answers = {m.properties.CorrelationData: json.loads(m.payload)["status"]
                   for m in pos.on(POS_REPLY)}
    assert answers == {b"0": "ok", b"1": "ok", b"2": "ok", b"3": "ok"}


@pytest.mark.parametrize(
    "response_topic",
    [
        f"{BASE}/availability",
        f"{BASE}/events/order",
        f"{BASE}/request/order.create",
        "leat-scanner/other-till/request/x",
        "leat-scanner/other-till/response/order.create",
        "pos/+/replies",
        "",
    ],
)
def test_hostile_reply_never_lands_in_a_device_topic_space(
    broker: Mosquitto, device: Device, response_topic: str
) -> None:
    with Subscriber(broker, "leat-scanner/#", "pos/#") as pos:
        pos.wait_subscribed()
        pos.wait_message(f"{BASE}/availability", b"online")  # the retained one
        body = json.dumps({"customer": {"identifier": "LC-1"}, "order": order_body()}).encode()
        pos.publish(REQUEST, body, v5(response_topic, b"c-1"))
        pos.publish(REQUEST, body, v5(POS_REPLY, b"c-2"))  # the same order, honoured topic
        pos.wait_for(lambda ms: any(m.topic == POS_REPLY for m in ms), timeout=5)
        pos.wait_for(lambda ms: any(m.topic == DEFAULT_REPLY for m in ms), timeout=5)
        seen = [(m.topic, m.payload) for m in pos.messages]
    [refused] = [json.loads(p) for t, p in seen if t == DEFAULT_REPLY]
    assert refused["error"]["code"] == "invalid_response_topic"
    assert json.loads(next(p for t, p in seen if t == POS_REPLY))["status"] == "ok"
    device_topics = {t for t, _ in seen if t.startswith("leat-scanner/")}
    assert device_topics == {f"{BASE}/availability", f"{BASE}/info", REQUEST, DEFAULT_REPLY}
    assert [p for t, p in seen if t == f"{BASE}/availability"] == [b"online"]


def test_hostile_mqtt_311_request_is_answered_on_the_default_topic(
    broker: Mosquitto, device: Device
) -> None:
    answered = threading.Event()
    got: list[mqtt.MQTTMessage] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv311)

    def on_message(c: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        got.append(message)
        answered.set()

    client.on_message = on_message
    client.connect(broker.host, broker.port)
    client.subscribe(DEFAULT_REPLY, qos=1)
    client.loop_start()
    try:
        body = {"customer": {"identifier": "LC-1"}, "order": order_body()}
        client.publish(REQUEST, json.dumps(body), qos=1).wait_for_publish(10)
        assert answered.wait(10)
    finally:
        client.disconnect()
        client.loop_stop()
    assert json.loads(got[0].payload)["status"] == "ok"


# ---------------------------------------------------------------- fuzz


def _lone_surrogate(rng: random.Random) -> str:
    return "\\u" + rng.choice(["d800", "dbff", "dc00", "DFFF", "d83d"])


def fuzz_case(rng: random.Random, n: int) -> tuple[str, bytes, str | None]:
    """One hostile request: (verb, payload, response topic)."""
    body: dict[str, Any] = {"transaction": f"fz-{n}", "order": order_body(f"fz-{n}")}
    if rng.random() < 0.5:
        body["customer"] = rng.choice([{"identifier": "LC-1"}, {"contact_uuid": CONTACT}, None,
                                       {"email": "a@b.c"}, [], "LC-1"])
    order = body["order"]
    line = order["line_items"][0]
    junk: list[Any] = [None, True, -1, 1.5, 10**30, "", "x" * rng.randint(1, 3000), [], {},
                       "\u202e\u200b", "\u0000", float("inf")]
    mutation = rng.randrange(16)
    if mutation == 0:
        order[rng.choice(list(order))] = rng.choice(junk)
    elif mutation == 1:
        del order[rng.choice(list(order))]
    elif mutation == 2:
        line[rng.choice(list(line))] = rng.choice(junk)
    elif mutation == 3:
        line["total_amount"] += rng.randint(1, 500)
    elif mutation == 4:
        order["total_order_amount"] = rng.randint(0, 10**6)
    elif mutation == 5:
        deep: dict[str, Any] = {**line}
        for _ in range(rng.randint(2, 250)):
            deep = {**line, "sub_line_items": [deep]}
        order["line_items"] = [deep]
    elif mutation == 6:
        order["applied_discounts"][0]["applied_to"] = rng.choice(
            ["ORDER", "ORDER_LINES", "LINE_ITEM", "LINE_ITEMS", "SUB_LINE_ITEMS", "order", 7])
    elif mutation == 7:
        body["transaction"] = rng.choice(junk)
    elif mutation == 8:
        order["reference"] = "a@" * rng.randint(1, 130_000)
    elif mutation == 9:
        order["line_items"] = [line] * rng.randint(2, 600)
    payload = json.dumps(body, allow_nan=True).encode()
    if mutation == 10:
        depth = rng.randint(20, 5000)
        payload = b'{"order":' + b"[" * depth + b"]" * depth + b"}"
    elif mutation == 11:
        payload = json.dumps(body).replace(f'"fz-{n}"', f'"fz{_lone_surrogate(rng)}"', 1).encode()
    elif mutation == 12:
        payload = payload[: rng.randrange(len(payload))]
    elif mutation == 13:
        payload = bytes(rng.randrange(256) for _ in range(rng.randint(0, 400)))
    elif mutation == 14:
        payload = rng.choice([b"[]", b"null", b"1e999999", b"9" * 5000, b"\xef\xbb\xbf{}",
                              b'{"order": {}, "order": 1}', b"{" + b" " * 300_000 + b"}"])
    verb = rng.choice(["order.create"] * 6 + ["order.return", "order.delete", "x" * 300])
    topic = rng.choice([POS_REPLY] * 6 + [None, f"{BASE}/state", "pos/#", "leat-scanner/x/y"])
    return verb, payload, topic


def test_hostile_fuzz_every_request_gets_exactly_one_named_reply(
    broker: Mosquitto, device: Device
) -> None:
    rng = random.Random(20261202)
    cases = [fuzz_case(rng, n) for n in range(500)]
    with Subscriber(broker, "pos/#", f"{BASE}/response/#") as pos:
        pos.wait_subscribed()
        for n, (verb, payload, topic) in enumerate(cases):
            pos.publish(f"{BASE}/request/{verb}", payload, v5(topic, b"%d" % n))
            # one at a time, so that none is answered `busy`
            pos.wait_for(lambda ms, k=n + 1: len(ms) >= k, timeout=10)
        by_case: dict[int, list[dict[str, Any]]] = {}
        for message in pos.messages:
            by_case.setdefault(int(message.properties.CorrelationData), []).append(
                json.loads(message.payload))
    assert sorted(by_case) == list(range(len(cases)))
    codes: dict[str, int] = {}
    for n, answers in by_case.items():
        assert len(answers) == 1, (n, answers)
        [answer] = answers
        contract.validate("response", answer)
        code = "ok" if answer["status"] == "ok" else answer["error"]["code"]
        codes[code] = codes.get(code, 0) + 1
        assert code != "internal", (n, cases[n][:1], answer)
        assert code == "ok" or code in ERRORS
    logging.getLogger(__name__).info("fuzz replies: %s", codes)
    assert codes.get("ok", 0) > 20 and len(codes) >= 8  # the cases reached every layer


def test_hostile_provisioned_broker_takes_more_than_a_request_and_less_than_the_device() -> None:
    conf = Path(__file__).resolve().parent.parent / "systemd" / "mosquitto-leat.conf"
    settings = dict(
        line.split(None, 1) for line in conf.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    )
    limit = int(settings["max_packet_size"])
    assert limit == BROKER_MAX_PACKET_BYTES  # the tests' broker uses the same
    assert MAX_REQUEST_BYTES < limit < MAX_PACKET_BYTES
    assert "message_size_limit" not in settings  # its PUBACK 0x95 breaks paho publishers
    assert settings["set_tcp_nodelay"] == "true"


def test_hostile_device_without_leat_answers_every_request_not_configured(
    broker: Mosquitto, tmp_path: Path
) -> None:
    frames = tmp_path / "frames"
    write_demo_frames(frames)
    config = Config.model_validate({
        "device": {"id": DEVICE, "state_dir": str(tmp_path / "state")},
        "camera": {"source": "replay", "replay_path": str(frames / "000-empty.png"),
                   "replay_loop": True, "fps": 5},
        "mqtt": {"host": broker.host, "port": broker.port},
        "feedback": {"enabled": False},
    })
    stop = threading.Event()
    with Subscriber(broker, "pos/#", f"{BASE}/availability") as pos:
        pos.wait_subscribed()
        service = build(config)
        runner = threading.Thread(target=service.run, args=(stop,))
        runner.start()
        try:
            pos.wait_message(f"{BASE}/availability", b"online")
            body = {"transaction": "t-1", "customer": {"identifier": "LC-1"},
                    "order": order_body()}
            pos.publish(REQUEST, json.dumps(body).encode(), v5(POS_REPLY, b"a"))
            pos.publish(f"{BASE}/request/order.return", b"not even json", v5(POS_REPLY, b"b"))
            pos.wait_for(lambda ms: sum(m.topic == POS_REPLY for m in ms) == 2)
        finally:
            stop.set()
            runner.join(30)
        answers = {m.properties.CorrelationData: json.loads(m.payload) for m in pos.on(POS_REPLY)}
    assert {k: a["error"]["code"] for k, a in answers.items()} == {
        b"a": "not_configured", b"b": "not_configured"
    }
    assert answers[b"a"]["transaction"] == "t-1"
