"""POS request round trips through a real Mosquitto: valid orders and hostile requests.

A paho MQTT v5 client (the POS) publishes each request at QoS 1 with a response topic and
waits for its reply; the device side is the real bus serving `OrderRequests` with a real
outbox file (every `ok` is an fsync'd commit). Prints the median and 95th percentile
round trip per kind of request, the resident memory before and after the fuzzed requests of
the test suite, and how long the log masking takes on 1 MB of adversarial text.

    .venv/bin/python bench/requests.py [--orders 300] [--fuzz 2000]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the fuzz cases

from machine import describe
from test_hostile_requests import fuzz_case
from test_orders import claim, order_body

from appliance.bus import MqttBus
from appliance.config import MqttConfig
from appliance.localbroker import LocalMosquitto
from appliance.logs import RedactingFilter
from appliance.pos.intake import OrderRequests

BASE = "leat-scanner/bench"
REPLIES = "pos/bench/replies"


class Pos:
    """A POS client: `ask()` publishes one request and returns the reply's round trip (s)."""

    def __init__(self, broker: LocalMosquitto) -> None:
        self._replies: dict[bytes, bytes] = {}
        self._arrived = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_socket_open = lambda c, u, s: s.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.connect(broker.host, broker.port)
        self.client.subscribe([("pos/#", 1), (f"{BASE}/response/#", 1)])
        self.client.loop_start()
        self._n = 0

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._arrived:
            self._replies[msg.properties.CorrelationData] = msg.payload
            self._arrived.notify_all()

    def ask(self, verb: str, payload: bytes, topic: str | None = REPLIES) -> tuple[float, bytes]:
        self._n += 1
        key = b"%d" % self._n
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = topic or REPLIES
        props.CorrelationData = key
        start = time.perf_counter()
        self.client.publish(f"{BASE}/request/{verb}", payload, qos=1, properties=props)
        with self._arrived:
            if not self._arrived.wait_for(lambda: key in self._replies, 30):
                raise RuntimeError(f"no reply to request {key!r}")
            return time.perf_counter() - start, self._replies.pop(key)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def report(name: str, times: list[float]) -> None:
    ordered = sorted(times)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    print(f"{name:<28} n={len(times):<5} median {statistics.median(times) * 1000:7.2f} ms"
          f"   p95 {p95 * 1000:7.2f} ms")


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument("--fuzz", type=int, default=2000)
    args = parser.parse_args()
    print(describe("paho-mqtt", "jsonschema"))
    with tempfile.TemporaryDirectory() as tmp, LocalMosquitto(Path(tmp) / "broker") as broker:
        bus = MqttBus(MqttConfig(host=broker.host, port=broker.port), BASE, "bench", None, {})
        bus.serve("request/+", OrderRequests(Path(tmp) / "outbox.sqlite3", bus.publish_response,
                                             base_topic=BASE, shop_uuid=None, claim_url=claim))
        bus.start()
        bus.wait_connected(10)
        pos = Pos(broker)
        try:
            valid = [pos.ask("order.create", json.dumps(
                {"customer": {"identifier": "LC-1"}, "order": order_body(f"b-{n}")}).encode())[0]
                for n in range(args.orders)]
            report("valid order (fsync'd)", valid)
            hostile = {
                "1 MB payload": b"x" * 1_000_000,
                "250 kB field": json.dumps({"order": {**order_body(), "reference": "a@" * 125_000}}
                                           ).encode(),
                "1000-deep JSON": b'{"order":' + b"[" * 1000 + b"]" * 1000 + b"}",
                "50,000 bad lines": json.dumps({"order": {**order_body(), "line_items": [[]]
                                                          * 50_000}}).encode(),
                "lone surrogate": b'{"transaction": "\\ud800", "order": {}}',
            }
            for name, payload in hostile.items():
                report(name, [pos.ask("order.create", payload)[0] for _ in range(20)])
            before = rss_mb()
            rng = random.Random(1)
            fuzz = [pos.ask(verb, payload, topic)[0]
                    for verb, payload, topic in (fuzz_case(rng, n) for n in range(args.fuzz))]
            report("fuzzed request", fuzz)
            print(f"RSS before/after {args.fuzz} fuzzed requests: {before:.0f} / {rss_mb():.0f} MB")
        finally:
            pos.close()
            bus.stop()
    for unit in ("a", "a@", "a.b@"):
        text = unit * (1_000_000 // len(unit))
        record = logging.LogRecord("bench", logging.INFO, "", 0, text, None, None)
        seconds = timed(lambda r=record: RedactingFilter().filter(r))  # type: ignore[misc]
        print(f"log masking of 1 MB of {unit!r:<7} {seconds * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
