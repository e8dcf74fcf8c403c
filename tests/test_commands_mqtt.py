"""POS commands end to end: a real Mosquitto, the bus, the request worker, the ledger and the
Leat sandbox over HTTP; and a device restarted during a value-taking call."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from broker import Mosquitto, Subscriber, request_properties
from fakes import prepared_stores
from test_commands import COFFEE, JANE, SHOP, Device, redeem
from test_orders import order_body

from appliance import contract
from appliance.bus import Message, MqttBus
from appliance.config import MqttConfig
from appliance.leat.client import LeatClient
from appliance.pos.intake import OrderRequests
from appliance.pos.ledger import Ledger
from appliance.pos.runner import Commands
from appliance.sandbox.server import LeatSandbox

DEVICE = "till-5"
BASE = f"leat-scanner/{DEVICE}"
REPLIES = "pos/till5/replies"


def test_commands_over_mqtt_answer_on_the_response_topic_with_correlation_data(
    broker: Mosquitto, tmp_path: Path
) -> None:
    outbox, ledger = prepared_stores(tmp_path / "state")
    bus = MqttBus(MqttConfig(host=broker.host, port=broker.port), BASE, DEVICE, None, {"x": 1})
    seen: list[Message] = []
    with LeatSandbox() as sandbox, LeatClient(
        sandbox.url, token=sandbox.personal_access_token, shop_uuid=SHOP, timeout_s=5.0
    ) as leat, Subscriber(broker, "pos/till5/replies") as pos:
        commands = Commands(leat, ledger, outbox, bus.publish_event, device_id=DEVICE)
        requests = OrderRequests(outbox, bus.publish_response, base_topic=BASE,
                                 shop_uuid=SHOP, commands=commands)

        class Spy:  # the bus's Message as the intake gets it (MQTT v5 expiry included)
            def on_message(self, message: Message) -> None:
                seen.append(message)
                requests.on_message(message)

            def start(self) -> None:
                requests.start()

            def stop(self, timeout: float = 5.0) -> None:
                requests.stop(timeout)

        bus.serve("request/+", Spy())
        bus.start()
        try:
            assert bus.wait_serving(10)
            pos.wait_subscribed()
            sent: list[tuple[str, Mapping[str, Any]]] = [
                ("contact.lookup", {"request_id": "m-1", "identifier": "LC-7F3K9Q2M"}),
                ("reward.redeem", redeem("m-2")),
                ("reward.redeem", redeem("m-2")),  # the same request_id: one Leat call
                ("voucher.validate", {"request_id": "m-3", "code": "WELCOME-JANE"}),
            ]
            for index, (verb, body) in enumerate(sent):
                contract.validate(f"command_{verb.replace('.', '_')}", body)
                pos.publish(f"{BASE}/request/{verb}", json.dumps(body).encode(),
                            request_properties(REPLIES, f"c{index}".encode(), expiry_s=60))
            replies = pos.wait_for(lambda ms: len(ms) == len(sent))
        finally:
            bus.stop()
    by_correlation = {}
    for reply in replies:
        payload = json.loads(reply.payload)
        contract.validate("response", payload)
        by_correlation[reply.properties.CorrelationData] = payload
    assert by_correlation[b"c0"]["data"]["contact"]["uuid"] == JANE
    assert by_correlation[b"c1"]["status"] == "ok"
    assert by_correlation[b"c1"]["data"]["points"] == 1200
    assert by_correlation[b"c2"]["data"] == by_correlation[b"c1"]["data"]
    assert by_correlation[b"c3"]["data"]["voucher"]["contact_uuid"] == JANE
    assert sum(1 for m, p in sandbox.requests() if m == "POST" and p.endswith(
        "/reward-receptions")) == 1
    assert seen and all(m.expiry_s is not None and 0 < m.expiry_s <= 60 for m in seen)


def test_a_value_taking_command_held_by_the_broker_without_expiry_is_never_run_late(
    broker: Mosquitto, tmp_path: Path
) -> None:
    # the device is away (restarting); the till sends a redeem without an expiry, gives up
    # and takes cash; the broker keeps the redeem for the device's session. It must not
    # spend the points when the device comes back.
    outbox, ledger = prepared_stores(tmp_path / "state")
    cfg = MqttConfig(host=broker.host, port=broker.port)
    with LeatSandbox() as sandbox, LeatClient(
        sandbox.url, token=sandbox.personal_access_token, shop_uuid=SHOP, timeout_s=5.0
    ) as leat, Subscriber(broker, f"{REPLIES}/#").wait_subscribed() as pos:
        def device() -> MqttBus:
            bus = MqttBus(cfg, BASE, DEVICE, None, {"x": 1})
            commands = Commands(leat, ledger, outbox, bus.publish_event, device_id=DEVICE)
            bus.serve("request/+", OrderRequests(outbox, bus.publish_response, base_topic=BASE,
                                                 shop_uuid=SHOP, commands=commands))
            bus.start()
            return bus

        bus = device()
        assert bus.wait_serving(10)
        bus.stop()  # the session stays with the broker (mqtt.session_expiry_s)

        def send(body: Mapping[str, Any], expiry_s: int | None = None) -> None:
            props = request_properties(REPLIES, body["request_id"].encode(), expiry_s)
            pos.publish(f"{BASE}/request/reward.redeem", json.dumps(body).encode(), props)

        send(redeem("late"))
        send(redeem("timed"), expiry_s=60)  # the till still waits for this one
        bus = device()
        try:
            assert bus.wait_caught_up(10)
            send(redeem("live"))
            replies = pos.wait_for(lambda ms: len(ms) == 3)
        finally:
            bus.stop()
    got = {m.properties.CorrelationData: json.loads(m.payload) for m in replies}
    assert got[b"late"]["status"] == "error" and got[b"late"]["error"]["code"] == "expired"
    assert got[b"timed"]["status"] == "ok" and got[b"live"]["status"] == "ok"
    assert sum(1 for m, p in sandbox.requests() if m == "POST" and p.endswith(
        "/reward-receptions")) == 2


def test_a_call_the_device_stopped_during_is_reconciled_at_the_next_start(
    tmp_path: Path,
) -> None:
    with LeatSandbox() as sandbox:
        first = Device(sandbox, tmp_path / "state")
        try:  # the reception happened, then the device died before recording it
            reception = first.client.create_reward_reception(
                contact_uuid=JANE, reward_uuid=COFFEE)
            Ledger(tmp_path / "state" / "commands.sqlite3").begin(
                "r-crash", "reward.redeem", {"contact_uuid": JANE, "reward_uuid": COFFEE},
                "tx-crash")
        finally:
            first.close()
        second = Device(sandbox, tmp_path / "state")
        try:
            second.intake.start()  # resumes what the ledger left unsettled
            event = second.events.wait()[0]
            assert event["status"] == "ok" and event["request_id"] == "r-crash"
            assert event["data"]["uuid"] == reception.uuid
            again = second.send("reward.redeem", **redeem("r-crash"))
            assert again["data"]["uuid"] == reception.uuid
            assert second.balance(JANE) == 1200  # spent once
        finally:
            second.intake.stop()
            second.close()


def test_order_requests_echo_an_optional_request_id(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox.sqlite3"
    requests = OrderRequests(outbox, lambda *a: None, base_topic=BASE, shop_uuid=SHOP)
    body = {"request_id": "ord-1", "customer": {"contact_uuid": JANE},
            "order": order_body("pos-9")}
    reply = requests.handle("order.create", json.dumps(body).encode())
    contract.validate("response", reply)
    assert reply["status"] == "ok" and reply["request_id"] == "ord-1"
    again = requests.handle("order.create", json.dumps({**body, "request_id": "ord-2"}).encode())
    assert again["data"]["duplicate"] is True  # the key stays external_identifier
    without = requests.handle("order.create", json.dumps({**body, "request_id": None}).encode())
    assert without["error"]["code"] == "invalid_request"



def test_an_order_is_answered_while_lookups_wait_for_a_slow_leat(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """Orders (SQLite only) and commands (Leat calls) have a worker each: an order is not
    queued behind lookups that each wait seconds for Leat."""
    outbox, ledger = prepared_stores(tmp_path / "state")
    bus = MqttBus(MqttConfig(host=broker.host, port=broker.port), BASE, DEVICE, None, {"x": 1})
    with LeatSandbox() as sandbox, LeatClient(
        sandbox.url, token=sandbox.personal_access_token, shop_uuid=SHOP, timeout_s=5.0
    ) as leat, Subscriber(broker, REPLIES) as pos:
        commands = Commands(leat, ledger, outbox, bus.publish_event, device_id=DEVICE)
        requests = OrderRequests(outbox, bus.publish_response, base_topic=BASE,
                                 shop_uuid=SHOP, commands=commands)
        bus.serve("request/+", requests)
        bus.start()
        try:
            assert bus.wait_serving(10)
            pos.wait_subscribed()
            sandbox.faults.set(latency_s=1.5, only_paths=("/contact-identifiers",))
            for n in range(3):  # 4.5 s of lookups, one after the other
                pos.publish(f"{BASE}/request/contact.lookup",
                            json.dumps({"request_id": f"slow-{n}",
                                        "identifier": "LC-7F3K9Q2M"}).encode(),
                            request_properties(REPLIES, f"lookup-{n}".encode()))
            order = {"customer": {"identifier": "LC-7F3K9Q2M"}, "order": order_body("fast-1")}
            pos.publish(f"{BASE}/request/order.create", json.dumps(order).encode(),
                        request_properties(REPLIES, b"order"))
            [first] = pos.wait_for(lambda ms: len(ms) >= 1, timeout=10)[:1]
            replies = pos.wait_for(lambda ms: len(ms) == 4, timeout=20)
        finally:
            bus.stop()
    assert first.properties.CorrelationData == b"order"  # before any lookup came back
    assert json.loads(first.payload)["status"] == "ok"
    assert {json.loads(r.payload)["status"] for r in replies} == {"ok"}
