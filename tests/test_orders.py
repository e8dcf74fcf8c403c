"""POS order requests: validation, durable storage before the reply, idempotency, MQTT v5."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from broker import Mosquitto, Subscriber
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from appliance import contract
from appliance.bus import MqttBus
from appliance.config import MqttConfig
from appliance.orders import OrderRequests, check_amounts
from appliance.outbox import Item, Kind, Outbox, State

SHOP = "4f1c2a9e-5b7d-4e3a-9c1f-2d8e6a0b7c35"
BASE = "leat-scanner/till-1"


def order_body(ext: str = "pos-1001") -> dict[str, Any]:
    return {
        "external_identifier": ext,
        "status": "COMPLETED",
        "payment_status": "PAID",
        "order_amount": 1400,
        "total_order_amount": 1450,
        "line_items": [
            {
                "external_identifier": f"{ext}-1", "name": "Pizza", "quantity": 1,
                "price": 1200, "total_amount": 1200,
                "sub_line_items": [
                    {"external_identifier": f"{ext}-1a", "name": "Extra cheese", "quantity": 2,
                     "price": 100, "total_amount": 200},
                ],
            }
        ],
        "applied_discounts": [
            {"external_identifier": "d1", "name": "Happy hour", "amount": 100,
             "applied_to": "ORDER"}
        ],
        "charges": [{"external_identifier": "c1", "name": "Service", "total_amount": 150}],
    }


def request(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


class Replies:
    """Collects replies like the bus would publish them."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Mapping[str, Any], bytes | None]] = []

    def __call__(self, topic: str, payload: Mapping[str, Any], correlation: bytes | None) -> None:
        self.sent.append((topic, payload, correlation))


@pytest.fixture
def outbox_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "outbox.sqlite3"


@pytest.fixture
def handler(outbox_path: Path) -> OrderRequests:
    return OrderRequests(outbox_path, Replies(), base_topic=BASE, shop_uuid=SHOP)


def stored(path: Path) -> list[Item]:
    outbox = Outbox(path)
    try:
        return outbox.items()
    finally:
        outbox.close()


def test_orders_valid_order_is_stored_then_answered(
    handler: OrderRequests, outbox_path: Path
) -> None:
    customer = {"identifier": "LC-7F3K9Q2M"}
    response = handler.handle(
        "order.create", request(transaction="till-1/42", customer=customer, order=order_body())
    )
    contract.validate("response", response)
    assert response["status"] == "ok"
    assert response["transaction"] == "till-1/42"
    assert response["data"]["duplicate"] is False
    assert response["data"]["state"] == "pending"
    [item] = stored(outbox_path)
    assert item.id == response["data"]["outbox_id"]
    assert item.kind is Kind.ORDER
    assert item.customer_identifier == "LC-7F3K9Q2M"
    assert item.body["business_profile"] == {"uuid": SHOP}
    assert item.transaction == "till-1/42"


def test_orders_same_request_twice_gives_same_reply_and_one_row(
    handler: OrderRequests, outbox_path: Path
) -> None:
    payload = request(customer={"contact_uuid": "c-1"}, order=order_body())
    first = handler.handle("order.create", payload)
    second = handler.handle("order.create", payload)
    assert first["data"]["outbox_id"] == second["data"]["outbox_id"]
    assert second["data"]["duplicate"] is True
    [item] = stored(outbox_path)
    assert item.body["contact"] == {"uuid": "c-1"}


def test_orders_different_body_under_same_id_is_a_conflict(
    handler: OrderRequests, outbox_path: Path
) -> None:
    handler.handle("order.create", request(order=order_body()))
    changed = order_body()
    changed["payment_status"] = "PENDING"
    response = handler.handle("order.create", request(transaction="t2", order=changed))
    assert response["status"] == "error"
    assert response["error"]["code"] == "conflict"
    assert response["transaction"] == "t2"
    assert len(stored(outbox_path)) == 1


def broken(change: str) -> dict[str, Any]:
    body = order_body()
    if change == "line_total":
        body["line_items"][0]["total_amount"] = 1100
    elif change == "order_amount":
        body["order_amount"] = 1500
    elif change == "total":
        body["total_order_amount"] = 1400
    elif change == "repeated_line":
        body["line_items"][0]["sub_line_items"][0]["external_identifier"] = "pos-1001-1"
    return body


@pytest.mark.parametrize(
    ("payload", "code", "names"),
    [
        (b"{not json", "invalid_json", "JSON"),
        (b"\xff\xfe", "invalid_json", "UTF-8"),
        (b"[1, 2]", "invalid_json", "object"),
        (request(order={"status": "COMPLETED"}), "invalid_request", "external_identifier"),
        (request(order={**order_body(), "contact": {"uuid": "x"}}), "invalid_request", "contact"),
        (request(order=order_body(), customer={"email": "a@b.c"}), "invalid_request", "customer"),
        (request(order={**order_body(), "status": "DONE"}), "invalid_request", "status"),
        (request(order=broken("line_total")), "amounts_inconsistent", "line_items/0/total_amount"),
        (request(order=broken("order_amount")), "amounts_inconsistent", "order_amount"),
        (request(order=broken("total")), "amounts_inconsistent", "total_order_amount"),
        (request(order=broken("repeated_line")), "invalid_request", "repeated"),
        (b"{" + b" " * 300_000 + b"}", "invalid_request", "too large"),
    ],
)
def test_orders_bad_requests_name_the_problem_and_store_nothing(
    handler: OrderRequests, outbox_path: Path, payload: bytes, code: str, names: str
) -> None:
    response = handler.handle("order.create", payload)
    contract.validate("response", response)
    assert response["status"] == "error"
    assert response["error"]["code"] == code
    assert names in response["error"]["message"]
    assert response["data"] is None
    assert stored(outbox_path) == []


def test_orders_return_waits_for_its_order(handler: OrderRequests, outbox_path: Path) -> None:
    assert handler.handle("order.create", request(order=order_body()))["status"] == "ok"
    body = {
        "external_identifier": "ret-1", "status": "COMPLETED",
        "order": {"external_identifier": "pos-1001"},
        "line_items": [{"external_identifier": "pos-1001-1", "quantity": 1}],
    }
    response = handler.handle("order.return", request(**{"return": body}))
    assert response["status"] == "ok", response
    order, ret = stored(outbox_path)
    assert (ret.kind, ret.order_external_identifier) == (Kind.RETURN, "pos-1001")
    outbox = Outbox(outbox_path)
    try:
        assert [i.id for i in outbox.due()] == [order.id]  # the return waits for its order
        assert outbox.claim(order.id) is not None
        outbox.mark_delivered(order.id, {"leat_uuid": "o-1", "points": 14, "new_balance": 1264})
        assert [i.id for i in outbox.due()] == [ret.id]
    finally:
        outbox.close()


def test_orders_anonymous_order_gets_a_claim_url(outbox_path: Path) -> None:
    handler = OrderRequests(
        outbox_path, Replies(), base_topic=BASE, shop_uuid=SHOP,
        claim_url=lambda item: f"https://portal.example/l?unique_id={item.external_identifier}",
    )
    response = handler.handle("order.create", request(order=order_body()))
    assert response["data"]["claim_url"] == "https://portal.example/l?unique_id=pos-1001"
    named = handler.handle(
        "order.create", request(customer={"contact_uuid": "c"}, order=order_body("pos-2"))
    )
    assert named["data"]["claim_url"] is None


def test_orders_unknown_verb_and_wake(outbox_path: Path) -> None:
    wake = threading.Event()
    handler = OrderRequests(outbox_path, Replies(), base_topic=BASE, shop_uuid=SHOP, wake=wake)
    assert handler.handle("order.delete", b"{}")["error"]["code"] == "invalid_request"
    assert not wake.is_set()
    handler.handle("order.create", request(order=order_body()))
    assert wake.is_set()


def test_orders_check_amounts_accepts_leat_example() -> None:
    check_amounts(order_body())  # no exception: the documented arithmetic holds


def test_orders_over_mqtt_v5_response_topic_and_correlation(
    broker: Mosquitto, outbox_path: Path
) -> None:
    bus = MqttBus(MqttConfig(host=broker.host, port=broker.port), BASE, "till-1", None, {"x": 1})
    handler = OrderRequests(outbox_path, bus.publish_response, base_topic=BASE, shop_uuid=SHOP)
    bus.subscribe("request/+", handler.on_message)
    bus.start()
    try:
        assert bus.wait_connected(10)
        with Subscriber(broker, "pos/replies/#", f"{BASE}/response/#") as pos:
            pos.wait_subscribed()
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ResponseTopic = "pos/replies/till-1"
            props.CorrelationData = b"req-7"
            pos.publish(f"{BASE}/request/order.create", request(order=order_body()), props)
            pos.publish(f"{BASE}/request/order.create", b"garbage", None)
            messages = pos.wait_for(lambda ms: len(ms) >= 2)
    finally:
        bus.stop()
    by_topic = {m.topic: m for m in messages}
    direct = by_topic["pos/replies/till-1"]
    assert direct.properties.CorrelationData == b"req-7"
    assert json.loads(direct.payload)["status"] == "ok"
    fallback = json.loads(by_topic[f"{BASE}/response/order.create"].payload)
    assert fallback["error"]["code"] == "invalid_json"
    assert [i.state for i in stored(outbox_path)] == [State.PENDING]
    assert isinstance(messages[0], mqtt.MQTTMessage)


def test_orders_survive_a_broker_restart_mid_stream(broker: Mosquitto, outbox_path: Path) -> None:
    bus = MqttBus(MqttConfig(host=broker.host, port=broker.port), BASE, "till-1", None, {"x": 1})
    handler = OrderRequests(outbox_path, bus.publish_response, base_topic=BASE, shop_uuid=SHOP)
    bus.subscribe("request/+", handler.on_message)
    bus.start()
    try:
        assert bus.wait_connected(10)
        for round_, ids in enumerate((["a-1", "a-2"], ["b-1", "b-2"])):
            with Subscriber(broker, f"{BASE}/response/#", f"{BASE}/availability") as pos:
                pos.wait_subscribed()
                # after the restart: the device's own "online" shows it resubscribed
                pos.wait_message(f"{BASE}/availability", b"online", timeout=30)
                for ext in ids:
                    pos.publish(f"{BASE}/request/order.create", request(order=order_body(ext)))
                pos.wait_for(lambda ms: len([m for m in ms if "/response/" in m.topic]) == 2)
            if round_ == 0:
                broker.stop()  # retained messages and sessions are gone (no persistence)
                broker.start()
    finally:
        bus.stop()
    assert sorted(i.external_identifier for i in stored(outbox_path)) == [
        "a-1", "a-2", "b-1", "b-2"
    ]


def test_orders_request_sent_while_the_device_restarts_is_not_lost(
    broker: Mosquitto, outbox_path: Path
) -> None:
    def device() -> MqttBus:
        bus = MqttBus(
            MqttConfig(host=broker.host, port=broker.port), BASE, "till-1", None, {"x": 1}
        )
        handler = OrderRequests(outbox_path, bus.publish_response, base_topic=BASE, shop_uuid=SHOP)
        bus.subscribe("request/+", handler.on_message)
        bus.start()
        assert bus.wait_connected(10)
        return bus

    device().stop()  # the device goes away; its MQTT session (and subscription) stays
    with Subscriber(broker, f"{BASE}/response/#") as pos:
        pos.wait_subscribed()
        pos.publish(f"{BASE}/request/order.create", request(order=order_body("gap-1")))
        restarted = device()  # the broker hands over the request it held
        try:
            [reply] = pos.wait_for(lambda ms: len(ms) == 1)
        finally:
            restarted.stop()
    assert json.loads(reply.payload)["status"] == "ok"
    assert [i.external_identifier for i in stored(outbox_path)] == ["gap-1"]
