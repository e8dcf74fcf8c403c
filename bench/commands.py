"""POS verbs through the device: reply latency per verb at Leat latency L, vs the bare Leat call.

The whole device runs (`daemon.build`: the bus, the request worker, the outbox, the
forwarder, the real httpx client) against a private Mosquitto and the Leat sandbox, which
adds latency L to every call. A paho MQTT v5 client (the POS) publishes each request at
QoS 1 with a response topic and correlation data, one at a time, and times its reply (and,
for an order, its `events/order` outcome, the part that calls Leat). In the same run the
same Leat calls are made directly with `LeatClient` against the same sandbox ("bare"),
so the figures show what the device adds on top of Leat.

    .venv/bin/python bench/commands.py [--latency-ms 50] [--runs 40]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # order bodies

from machine import describe
from test_orders import order_body

from appliance.camera import Frame
from appliance.config import Config
from appliance.daemon import build
from appliance.feedback import NullFeedback
from appliance.leat.client import LeatClient
from appliance.localbroker import LocalMosquitto
from appliance.samples import DEMO_CODES, DEMO_SHOP_UUID
from appliance.sandbox.server import LeatSandbox

DEVICE = "bench"
BASE = f"leat-scanner/{DEVICE}"
REPLIES = "pos/bench/replies"
TIMEOUT_S = 30.0


class NoCamera:
    """A frame source that has ended: the device serves the POS, the camera stays idle."""

    def read(self) -> Frame | None:
        return None

    def close(self) -> None:
        pass


class Pos:
    """The POS: `ask()` publishes one request and waits for its reply (and, when asked, for
    the `events/<name>` message naming its key); returns (reply s, event s, reply)."""

    def __init__(self, broker: LocalMosquitto) -> None:
        self._replies: dict[bytes, dict[str, Any]] = {}
        self._events: dict[str, float] = {}
        self._arrived = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_socket_open = lambda c, u, s: s.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.connect(broker.host, broker.port)
        self.client.subscribe([(REPLIES, 1), (f"{BASE}/events/#", 1)])
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("the POS client is not subscribed")
        self._n = 0

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        document = json.loads(msg.payload)
        with self._arrived:
            if msg.topic == REPLIES:
                self._replies[msg.properties.CorrelationData] = {**document, "_at": now}
            else:
                name = msg.topic.rsplit("/", 1)[1]
                key = document.get("external_identifier") or document.get("request_id")
                self._events[f"{name}:{key}"] = now
            self._arrived.notify_all()

    def ask(self, verb: str, body: dict[str, Any], event: str | None = None
            ) -> tuple[float, float | None, dict[str, Any]]:
        self._n += 1
        key = b"%d" % self._n
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = REPLIES
        props.CorrelationData = key
        start = time.perf_counter()
        self.client.publish(f"{BASE}/request/{verb}", json.dumps(body), qos=1, properties=props)
        with self._arrived:
            if not self._arrived.wait_for(lambda: key in self._replies, TIMEOUT_S):
                raise RuntimeError(f"no reply to {verb} request {key!r}")
            reply = self._replies.pop(key)
            if event is None:
                return reply["_at"] - start, None, reply
            if not self._arrived.wait_for(lambda: event in self._events, TIMEOUT_S):
                raise RuntimeError(f"no {event} after {verb} request {key!r}")
            return reply["_at"] - start, self._events.pop(event) - start, reply

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass(frozen=True)
class Case:
    """One verb: its request, the equivalent bare Leat call(s), and the target's Leat calls
    (p50 <= calls x L + 10 ms); `event` names the events/<name> carrying its outcome."""

    verb: str
    label: str
    request: Callable[[int, Context], dict[str, Any]]
    bare: Callable[[LeatClient, int, Context], object]
    calls: int
    event: str | None = None


@dataclass(frozen=True)
class Context:
    """What the cases need from the sandbox's seed."""

    contact_uuid: str
    run: str  # unique per run of the bench, so external identifiers never collide


def _order(n: int, ctx: Context, prefix: str) -> dict[str, Any]:
    body = order_body(f"{ctx.run}-{prefix}-{n}")
    body["contact"] = {"uuid": ctx.contact_uuid}
    body["business_profile"] = {"uuid": DEMO_SHOP_UUID}
    return body


CASES: list[Case] = [
    Case(
        "order.create", "order.create (contact uuid)",
        lambda n, ctx: {"transaction": f"tx-{n}", "customer": {"contact_uuid": ctx.contact_uuid},
                        "order": order_body(f"{ctx.run}-dev-{n}")},
        lambda leat, n, ctx: leat.create_and_process_order(_order(n, ctx, "bare")),
        calls=1, event="order",
    ),
    # TODO(pos-core merge): the command verbs (contact.lookup, reward.*, voucher.*,
    # order.get, points.preview) join here once the command layer is on this branch.
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def row(label: str, seconds: list[float]) -> tuple[str, float, float]:
    ms = [s * 1000 for s in seconds]
    return label, statistics.median(ms), percentile(ms, 0.95)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    latency_ms = args.latency_ms
    rows: list[tuple[str, float, float]] = []
    verdicts: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        token = work / "token"
        with LocalMosquitto(work / "broker") as broker, LeatSandbox() as sandbox:
            token.touch(mode=0o600)
            token.write_text(sandbox.personal_access_token, encoding="utf-8")
            cfg = Config.model_validate({
                "device": {"id": DEVICE, "state_dir": str(work / "state")},
                "mqtt": {"host": broker.host, "port": broker.port},
                "feedback": {"enabled": False},
                "leat": {"base_url": sandbox.url, "token_file": str(token),
                         "shop_uuid": DEMO_SHOP_UUID},
            })
            service = build(cfg, source=NoCamera(), feedback=NullFeedback(),
                            stop_when_source_ends=False)
            stop = threading.Event()
            runner = threading.Thread(target=service.run, args=(stop,), name="device")
            runner.start()
            pos = Pos(broker)
            leat = LeatClient(sandbox.url, token=sandbox.personal_access_token,
                              shop_uuid=DEMO_SHOP_UUID, timeout_s=10.0)
            try:
                found = leat.find_contact_identifier(DEMO_CODES["loyalty_card"])
                assert found.contact is not None
                ctx = Context(found.contact.uuid, f"b{int(time.time())}")
                sandbox.faults.set(latency_s=latency_ms / 1000)
                for case in CASES:
                    replies, outcomes, bare = [], [], []
                    for n in range(args.runs + 3):  # the first 3 warm up
                        key = None if case.event is None else f"{case.event}:{ctx.run}-dev-{n}"
                        reply_s, event_s, reply = pos.ask(case.verb, case.request(n, ctx), key)
                        if reply.get("status") not in ("ok", "accepted"):
                            raise RuntimeError(f"{case.verb}: {reply}")
                        start = time.perf_counter()
                        case.bare(leat, n, ctx)
                        if n >= 3:
                            replies.append(reply_s)
                            bare.append(time.perf_counter() - start)
                            if event_s is not None:
                                outcomes.append(event_s)
                    rows.append(row(f"{case.label}: reply", replies))
                    if outcomes:
                        rows.append(row(f"{case.label}: events/{case.event}", outcomes))
                    rows.append(row(f"{case.label}: bare Leat call(s)", bare))
                    measured = statistics.median([s * 1000 for s in outcomes or replies])
                    target = case.calls * latency_ms + 10
                    verdicts.append(f"{case.label}: p50 {measured:.1f} ms <= "
                                    f"{case.calls} x L + 10 = {target:.0f} ms: "
                                    f"{'met' if measured <= target else 'NOT met'}")
            finally:
                leat.close()
                pos.close()
                stop.set()
                runner.join(30)
    print(describe("paho-mqtt", "httpx"))
    print(f"Leat latency L = {latency_ms:g} ms per call (sandbox); {args.runs} requests per "
          "verb, one at a time, after 3 to warm up")
    print(f"{'':<52}{'p50 ms':>8}{'p95 ms':>8}")
    for label, p50, p95 in rows:
        print(f"{label:<52}{p50:>8.1f}{p95:>8.1f}")
    for line in verdicts:
        print("target " + line)


if __name__ == "__main__":
    main()
