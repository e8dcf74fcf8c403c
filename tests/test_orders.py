"""POS order requests: validation, durable storage before the reply, idempotency, MQTT v5."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as mqtt
import pytest
from broker import Mosquitto, Subscriber
from jsonschema import ValidationError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from appliance import contract
from appliance.bus import Message, MqttBus, encode
from appliance.config import MqttConfig
from appliance.outbox import Outbox
from appliance.outbox_items import Item, Kind, State
from appliance.pos.amounts import check_amounts
from appliance.pos.errors import RequestError
from appliance.pos.intake import MAX_REQUEST_BYTES, OrderRequests

SHOP = "4f1c2a9e-5b7d-4e3a-9c1f-2d8e6a0b7c35"
BASE = "leat-scanner/till-1"


def claim(item: Item) -> str:
    return f"https://portal.example/l?unique_id={item.external_identifier}"


CONTACT = "0a8b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d"  # a Leat contact uuid


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
    return OrderRequests(outbox_path, Replies(), base_topic=BASE, shop_uuid=SHOP, claim_url=claim)


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
    payload = request(customer={"contact_uuid": CONTACT}, order=order_body())
    first = handler.handle("order.create", payload)
    second = handler.handle("order.create", payload)
    assert first["data"]["outbox_id"] == second["data"]["outbox_id"]
    assert second["data"]["duplicate"] is True
    [item] = stored(outbox_path)
    assert item.body["contact"] == {"uuid": CONTACT}


def test_orders_a_whole_number_written_1200_0_is_the_same_order(
    handler: OrderRequests, outbox_path: Path
) -> None:
    first = handler.handle("order.create", request(order=order_body()))
    text = json.dumps({"order": order_body()}).replace('"price": 1200', '"price": 1200.0')
    assert '"price": 1200.0' in text
    second = handler.handle("order.create", text.encode())
    assert second["data"]["duplicate"] is True, second
    assert second["data"]["outbox_id"] == first["data"]["outbox_id"]
    [item] = stored(outbox_path)
    assert type(item.body["line_items"][0]["price"]) is int  # sent to Leat as 1200
    half = json.dumps({"order": order_body("pos-2")}).replace('"price": 1200', '"price": 1200.5')
    assert handler.handle("order.create", half.encode())["error"]["code"] == "invalid_request"


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
    elif change == "sub_line_total":
        body["line_items"][0]["sub_line_items"][0]["total_amount"] = 100
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
        (request(order=broken("sub_line_total")), "amounts_inconsistent",
         "line_items/0/sub_line_items/0/total_amount"),
        (request(order=broken("repeated_line")), "invalid_request", "repeated"),
        (b"{" + b" " * 300_000 + b"}", "too_large", "262144"),
        (b"\xff" * (MAX_REQUEST_BYTES + 1), "too_large", "262144"),  # before any decoding
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
    sale = request(order=order_body(), customer={"contact_uuid": CONTACT})
    assert handler.handle("order.create", sale)["status"] == "ok"
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


def returned(ext: str, *lines: tuple[str, int], order: str = "pos-1001",
             key: str = "line_items") -> bytes:
    body: dict[str, Any] = {"external_identifier": ext, "status": "COMPLETED",
                            "order": {"external_identifier": order}}
    if lines:
        body[key] = [{"external_identifier": line, "quantity": n} for line, n in lines]
    return request(**{"return": body})


def test_orders_a_return_that_cannot_be_delivered_is_refused_at_the_door(
    handler: OrderRequests, outbox_path: Path
) -> None:
    sale = request(order=order_body(), customer={"contact_uuid": CONTACT})
    assert handler.handle("order.create", sale)["status"] == "ok"

    def refusal(payload: bytes) -> str:
        response = handler.handle("order.return", payload)
        contract.validate("response", response)
        assert response["error"]["code"] == "invalid_request", response
        return str(response["error"]["message"])

    assert "nothing to return" in refusal(returned("r-0"))
    assert "'pos-1001-9' is not a line of order 'pos-1001'" in refusal(
        returned("r-1", ("pos-1001-9", 1)))
    assert "only 1 of the 1 ordered are left" in refusal(returned("r-2", ("pos-1001-1", 2)))
    # the sub-line (2 ordered): one now, one later, then none is left
    for ext in ("r-3", "r-4"):
        ok = handler.handle("order.return",
                            returned(ext, ("pos-1001-1a", 1), key="sub_line_items"))
        assert ok["status"] == "ok", ok
    again = handler.handle("order.return",
                           returned("r-4", ("pos-1001-1a", 1), key="sub_line_items"))
    assert again["data"]["duplicate"] is True  # the same return again is still the same reply
    assert "only 0 of the 2 ordered" in refusal(
        returned("r-5", ("pos-1001-1a", 1), key="sub_line_items"))
    # an order rung up elsewhere is Leat's to check
    assert handler.handle("order.return", returned("r-6", ("x-1", 5), order="other"))[
        "status"] == "ok"
    assert [i.external_identifier for i in stored(outbox_path)] == ["pos-1001", "r-3", "r-4", "r-6"]
    with Outbox(outbox_path) as outbox:  # Leat refused the order: its return cannot go
        order = outbox.find(Kind.ORDER, "pos-1001")
        assert order is not None and outbox.claim(order.id) is not None
        outbox.mark_dead(order.id, code=1003, message="refused")
    assert "is dead on this device" in refusal(returned("r-7", ("pos-1001-1", 1)))
    # a sale without a customer never went to Leat (a claim URL instead): nothing to return
    anonymous = handler.handle("order.create", request(order=order_body("anon-1")))
    assert anonymous["status"] == "ok", anonymous
    assert "had no customer, so it was never sent to Leat" in refusal(
        returned("r-8", ("anon-1-1", 1), order="anon-1"))
    known = request(order=order_body("known-1"), customer={"contact_uuid": CONTACT})
    assert handler.handle("order.create", known)["status"] == "ok"
    assert handler.handle("order.return", returned("r-9", ("known-1-1", 1), order="known-1"))[
        "status"] == "ok"


@pytest.mark.parametrize(
    ("schema", "fields", "message"),
    [
        ("order_request", {"order": {**order_body(), "contact": {"uuid": "u"}}},
         "order/contact: Not allowed here: give the customer in `customer`."),
        ("order_request", {"order": order_body(), "customer": {"identifier": 5}},
         "customer/identifier: 5 is not of type 'string'"),
        ("order_request", {"order": order_body(), "customer": {"contact_uuid": CONTACT,
                                                                "identifier": "i"}},
         "customer: give exactly one of null, contact_uuid, identifier"),
        ("command_contact_lookup", {"request_id": "r-1", "email": "a@example.com",
                                    "identifier": "x"},
         "(top level): give exactly one of identifier, email, contact_uuid"),
        ("command_contact_lookup", {"request_id": "r-1", "contact_uuid": "not-a-uuid"},
         "contact_uuid: 'not-a-uuid' is not a valid uuid"),
        ("order_request", {"order": order_body(), "customer": {"contact_uuid": "c-1"}},
         "customer/contact_uuid: 'c-1' is not a valid uuid"),
    ],
)
def test_orders_schema_refusals_say_what_the_contract_wants(
    schema: str, fields: dict[str, Any], message: str
) -> None:
    """Not jsonschema's Python reprs of the schema ("should not be valid under {}")."""
    with pytest.raises(ValidationError) as refused:
        contract.validate(schema, fields)
    assert contract.explain(refused.value) == message


def test_orders_refusals_log_where_never_what_was_sent(
    handler: OrderRequests, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="appliance.pos.intake")
    card, email = "6277123456789012" * 20, "jané.døe@exämple.com"  # the card: too long
    response = handler.handle("order.create", request(
        order=order_body(), customer={"identifier": card}))
    assert card[:32] in response["error"]["message"]  # the POS is told what it sent ...
    handler.handle("contact.lookup", request(request_id="r-1", email=email, identifier=card))
    handler.handle("order.create\u200b", request(order=order_body()))
    text = caplog.text
    assert "request order.create refused: invalid_request at customer/identifier" in text
    assert card[:8] not in text and "døe" not in text  # ... the log never is
    assert "order.create\\u200b" in text  # a zero-width character shown, not hidden


def test_orders_a_refused_order_names_what_the_contract_wants(handler: OrderRequests) -> None:
    response = handler.handle("order.create", request(order={**order_body(), "contact": {}}))
    assert response["error"] == {
        "code": "invalid_request",
        "message": "order/contact: Not allowed here: give the customer in `customer`.",
    }


def test_orders_anonymous_order_gets_a_claim_url(handler: OrderRequests) -> None:
    response = handler.handle("order.create", request(order=order_body()))
    assert response["data"]["claim_url"] == "https://portal.example/l?unique_id=pos-1001"
    named = handler.handle("order.create", request(customer={"contact_uuid": CONTACT},
                                                   order=order_body("pos-2")))
    assert named["data"]["claim_url"] is None


def test_orders_unknown_verb_and_wake(outbox_path: Path) -> None:
    wake = threading.Event()
    handler = OrderRequests(
        outbox_path, Replies(), base_topic=BASE, shop_uuid=SHOP, wake=wake, claim_url=claim
    )
    unknown = handler.handle("order.delete", request(transaction="t-1", request_id="r-1"))
    assert unknown["error"]["code"] == "invalid_request"
    assert (unknown["transaction"], unknown["request_id"]) == ("t-1", "r-1")  # matchable
    assert not wake.is_set()
    handler.handle("order.create", request(order=order_body()))
    assert wake.is_set()


def test_orders_check_amounts_accepts_a_consistent_order_without_warnings() -> None:
    assert check_amounts(order_body()) == []


def test_orders_over_mqtt_v5_response_topic_and_correlation(
    broker: Mosquitto, outbox_path: Path
) -> None:
    bus = MqttBus(MqttConfig(host=broker.host, port=broker.port), BASE, "till-1", None, {"x": 1})
    handler = OrderRequests(
        outbox_path, bus.publish_response, base_topic=BASE, shop_uuid=SHOP, claim_url=claim
    )
    bus.serve("request/+", handler)
    bus.start()
    try:
        assert bus.wait_serving(10)
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
    handler = OrderRequests(
        outbox_path, bus.publish_response, base_topic=BASE, shop_uuid=SHOP, claim_url=claim
    )
    bus.serve("request/+", handler)
    bus.start()
    try:
        assert bus.wait_serving(10)
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
        handler = OrderRequests(
            outbox_path, bus.publish_response, base_topic=BASE, shop_uuid=SHOP, claim_url=claim
        )
        bus.serve("request/+", handler)
        bus.start()
        assert bus.wait_serving(10)
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


# ---------------------------------------------------------------- Leat's amounts (issue 7)


def leat_example(applied_to: str = "LINE_ITEM") -> dict[str, Any]:
    """Leat's documented order (Leat's Create Order response): order_amount 3175, a 225 discount
    applied to a line, charges 381, total 3331 = 3175 - 225 + 381."""
    return {
        "external_identifier": "leat-doc-1",
        "status": "COMPLETED",
        "payment_status": "PAID",
        "currency": "EUR",
        "order_amount": 3175,
        "total_discount_amount": 225,
        "total_order_amount": 3331,
        "line_items": [
            {"external_identifier": "l-1", "name": "Burger", "quantity": 2, "price": 1250,
             "discount_amount": 225, "total_amount": 2275,
             "sub_line_items": [
                 {"external_identifier": "l-1a", "name": "Bacon", "quantity": 2, "price": 150,
                  "total_amount": 300},
             ]},
            {"external_identifier": "l-2", "name": "Fries", "quantity": 2, "price": 300,
             "total_amount": 600},
        ],
        "applied_discounts": [
            {"external_identifier": "d-1", "name": "Burger deal", "amount": 225,
             "type": "ABSOLUTE", "value": 225, "applied_to": applied_to,
             "line_items": [{"external_identifier": "l-1"}]},
        ],
        "charges": [
            {"external_identifier": "c-1", "name": "Service", "total_amount": 381,
             "charge_definition": {"external_identifier": "SERVICE_CHARGE"}},
        ],
    }


@pytest.mark.parametrize(
    "applied_to", ["ORDER_LINES", "LINE_ITEM", "LINE_ITEMS", "SUB_LINE_ITEMS"]
)
def test_orders_leat_documented_order_is_accepted_without_warnings(
    handler: OrderRequests, outbox_path: Path, applied_to: str
) -> None:
    # Counting only applied_to ORDER discounts gives 3175 + 381 = 3556 != 3331: the old rule
    # refused Leat's own example; a line-level discount must count in the total.
    response = handler.handle(
        "order.create",
        request(customer={"contact_uuid": CONTACT}, order=leat_example(applied_to)),
    )
    contract.validate("response", response)
    assert response["status"] == "ok", response
    assert response["data"]["warnings"] == []
    assert [i.external_identifier for i in stored(outbox_path)] == ["leat-doc-1"]


def test_orders_order_level_discount_is_counted_once() -> None:
    body = leat_example("ORDER")
    assert check_amounts(body) == []  # 3175 - 225 + 381
    body["total_order_amount"] = 3175 + 381  # as if the ORDER discount were not there
    [warning] = check_amounts(body)
    assert "total_order_amount is 3556" in warning
    assert "3331" in warning


def test_orders_line_discount_amount_is_part_of_the_line_total() -> None:
    body = leat_example()
    assert check_amounts(body) == []  # 1250 x 2 - 225 = 2275
    body["line_items"][0]["total_amount"] = 2500  # price x quantity, discount forgotten
    with pytest.raises(RequestError) as refused:
        check_amounts(body)
    assert refused.value.code == "amounts_inconsistent"
    assert "line_items/0/total_amount is 2500" in str(refused.value)
    assert "discount_amount 225 = 2275" in str(refused.value)


def test_orders_sub_line_discount_amount_is_part_of_its_total() -> None:
    body = leat_example()
    sub = body["line_items"][0]["sub_line_items"][0]
    sub.update(discount_amount=50, total_amount=250)
    body["order_amount"] -= 50
    body["total_order_amount"] -= 50
    assert check_amounts(body) == []
    sub["total_amount"] = 300
    with pytest.raises(RequestError, match="sub_line_items/0/total_amount is 300"):
        check_amounts(body)


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("order_amount", 9999, "order/order_amount is 9999 but the line and sub-line totals "
                               "add up to 3175"),
        ("total_order_amount", 1, "order/total_order_amount is 1"),
        ("total_discount_amount", 7, "order/total_discount_amount is 7"),
    ],
)
def test_orders_inconsistent_order_totals_are_accepted_and_named(
    handler: OrderRequests, outbox_path: Path, field: str, value: int, named: str
) -> None:
    body = leat_example()
    body[field] = value
    response = handler.handle("order.create", request(customer={"identifier": "LC-1"}, order=body))
    contract.validate("response", response)
    assert response["status"] == "ok"
    [warning] = response["data"]["warnings"]
    assert warning.startswith(named)
    assert len(stored(outbox_path)) == 1


# ---------------------------------------------------------------- hostile payloads (issue 7)


def nested(depth: int) -> bytes:
    return b'{"order": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (nested(1000), "too_deep"),  # json.loads would recurse; it was RecursionError/internal
        (nested(100_000), "too_deep"),
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, "too_deep"),
        (nested(31), "invalid_request"),  # 32 deep with the top object: parsed, then refused
        (nested(32), "too_deep"),
        (b'{"order": "' + b"[" * 5000 + b'"}', "invalid_request"),  # brackets in a string
        (b'{"order": "\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', "invalid_request"),
        (b'{"order": [[[[' + b"1," * 100_000 + b"1]]]]}", "invalid_request"),
    ],
)
def test_orders_nesting_is_limited_before_parsing(
    handler: OrderRequests, payload: bytes, code: str
) -> None:
    response = handler.handle("order.create", payload)
    contract.validate("response", response)
    assert response["error"]["code"] == code


def test_orders_sub_lines_of_sub_lines_are_refused(
    handler: OrderRequests, outbox_path: Path
) -> None:
    body = order_body()
    sub = body["line_items"][0]["sub_line_items"][0]
    sub["sub_line_items"] = [
        {"external_identifier": "deeper", "name": "x", "quantity": 1, "price": 0,
         "total_amount": 0},
    ]
    response = handler.handle("order.create", request(transaction="t-9", order=body))
    contract.validate("response", response)
    assert response["error"]["code"] == "nested_sub_lines"
    assert "line_items/0/sub_line_items/0/sub_line_items" in response["error"]["message"]
    assert response["transaction"] == "t-9"
    assert stored(outbox_path) == []
    with pytest.raises(jsonschema.ValidationError):  # the contract says so too
        contract.validate("order_request", {"order": body})


def test_orders_200_deep_sub_lines_are_refused_without_recursion(handler: OrderRequests) -> None:
    line: dict[str, Any] = {"external_identifier": "x", "name": "x", "quantity": 1, "price": 0,
                            "total_amount": 0}
    for _ in range(200):
        line = {**line, "sub_line_items": [line]}
    body = {**order_body(), "line_items": [line]}
    response = handler.handle("order.create", json.dumps({"order": body}).encode())
    assert response["error"]["code"] == "too_deep"


@pytest.mark.parametrize(
    "payload",
    [
        b'{"transaction": "\\ud800", "order": {}}',
        b'{"transaction": "ok", "customer": {"identifier": "\\udfff"}, "order": {}}',
        b'{"transaction": "ok", "\\ud83d": 1}',
    ],
)
def test_orders_lone_surrogates_are_refused_and_the_reply_encodes(
    handler: OrderRequests, payload: bytes
) -> None:
    response = handler.handle("order.create", payload)
    encode(response)  # raised UnicodeEncodeError: no reply was sent
    contract.validate("response", response)
    assert response["error"]["code"] == "invalid_json"
    assert "surrogate" in response["error"]["message"]


def test_orders_surrogate_pairs_are_fine(handler: OrderRequests) -> None:
    customer = {"contact_uuid": CONTACT}
    payload = json.dumps({"transaction": "till \U0001f600", "customer": customer,
                          "order": order_body()}).encode()  # ensure_ascii: a \\ud83d\\ude00 pair
    assert b"\\ud83d\\ude00" in payload
    response = handler.handle("order.create", payload)
    assert response["status"] == "ok"
    assert response["transaction"] == "till \U0001f600"


def test_orders_a_huge_field_is_not_echoed_whole(handler: OrderRequests) -> None:
    body = {**order_body(), "reference": "jane.doe@example.com " + "a@" * 125_000}
    response = handler.handle("order.create", request(order=body))
    contract.validate("response", response)
    assert response["error"]["code"] == "invalid_request"
    assert "order/reference" in response["error"]["message"]
    assert len(response["error"]["message"]) <= 400


# ---------------------------------------------------------------- configuration (issue 7, item 5)


def test_orders_anonymous_order_without_token_settings_is_not_configured(
    outbox_path: Path,
) -> None:
    handler = OrderRequests(outbox_path, Replies(), base_topic=BASE, shop_uuid=SHOP)
    response = handler.handle("order.create", request(transaction="t-1", order=order_body()))
    contract.validate("response", response)
    assert response["error"]["code"] == "not_configured"
    assert "portal_url" in response["error"]["message"]
    assert response["transaction"] == "t-1"
    assert stored(outbox_path) == []
    named = handler.handle(
        "order.create", request(customer={"identifier": "LC-1"}, order=order_body())
    )
    assert named["status"] == "ok"


def test_orders_anonymous_order_needs_a_positive_total(handler: OrderRequests) -> None:
    body = {**order_body(), "order_amount": 0, "total_order_amount": 0, "line_items": [
        {"external_identifier": "free", "name": "Water", "quantity": 1, "price": 0,
         "total_amount": 0}]}
    del body["applied_discounts"], body["charges"]
    response = handler.handle("order.create", request(order=body))
    assert response["error"]["code"] == "invalid_request"
    assert "total_order_amount" in response["error"]["message"]


@pytest.mark.parametrize(
    "payload",
    [request(transaction="t-5", order=order_body()), b"garbage", b"[]", nested(1000)],
)
def test_orders_without_leat_every_request_is_not_configured(payload: bytes) -> None:
    handler = OrderRequests(None, Replies(), base_topic=BASE, shop_uuid=None)
    response = handler.handle("order.create", payload)
    contract.validate("response", response)
    assert response["error"]["code"] == "not_configured"
    assert response["transaction"] == ("t-5" if payload.startswith(b'{"transaction"') else None)
    assert handler.handle("order.return", b"{}")["error"]["code"] == "not_configured"


# ---------------------------------------------------------------- reply topics (issue 7)


@pytest.mark.parametrize(
    ("requested", "answered_on"),
    [
        (None, f"{BASE}/response/order.create"),  # MQTT 3.1.1: no response topic
        ("pos/till1/replies", "pos/till1/replies"),  # the POS's own topic: honoured
        (f"{BASE}/response/order.create/till-7", f"{BASE}/response/order.create/till-7"),
        ("leat-scanners/x", "leat-scanners/x"),  # not a device's space (whole levels)
    ],
)
def test_orders_reply_topic_is_honoured(
    handler: OrderRequests, requested: str | None, answered_on: str
) -> None:
    assert handler.reply_topic(requested, "order.create") == (answered_on, None)


@pytest.mark.parametrize(
    ("requested", "named"),
    [
        (f"{BASE}/availability", "device"),
        (f"{BASE}/events/order", "device"),
        (f"{BASE}/state", "device"),
        (f"{BASE}/request/order.create", "device"),  # would loop back to us
        (f"{BASE}", "device"),
        ("leat-scanner/till-2/request/x", "device"),  # another device
        ("leat-scanner/till-2/response/order.create", "device"),
        ("leat-scanner", "device"),
        ("pos/+/replies", "wildcard"),
        ("pos/#", "wildcard"),
        ("pos/\0x", "NUL"),
        ("", "empty"),
        ("p" * 513, "longer than 512"),
        ("$SYS/broker/x", "broker"),
    ],
)
def test_orders_reply_topic_in_a_device_space_or_invalid_is_refused(
    handler: OrderRequests, requested: str, named: str
) -> None:
    topic, problem = handler.reply_topic(requested, "order.create")
    assert topic == f"{BASE}/response/order.create"
    assert problem is not None
    assert named in problem


def test_orders_custom_base_topic_protects_its_parent(outbox_path: Path) -> None:
    handler = OrderRequests(outbox_path, Replies(), base_topic="shop/scanners/till-1",
                            shop_uuid=SHOP)
    assert handler.reply_topic("shop/scanners/till-2/request/x", "v")[1] is not None
    assert handler.reply_topic("leat-scanner/till-2/request/x", "v")[1] is not None
    assert handler.reply_topic("shop/pos/replies", "v") == ("shop/pos/replies", None)


def test_orders_refused_response_topic_is_answered_on_the_default_topic(
    outbox_path: Path,
) -> None:
    replies = Replies()
    handler = OrderRequests(outbox_path, replies, base_topic=BASE, shop_uuid=SHOP)
    message = Message(f"{BASE}/request/order.create", request(order=order_body()),
                      response_topic=f"{BASE}/availability", correlation_data=b"c-1")
    handler.on_message(message)  # refused at the door: no worker needed
    [(topic, response, correlation)] = replies.sent
    assert topic == f"{BASE}/response/order.create"
    assert correlation == b"c-1"
    assert response["error"]["code"] == "invalid_response_topic"
    assert response["transaction"] is None  # the body had none; a command's request_id:
    command = Message(f"{BASE}/request/voucher.redeem",
                      request(request_id="r-2", transaction="t-2"), response_topic="$SYS/x")
    handler.on_message(command)
    refused = replies.sent[-1][1]
    assert (refused["transaction"], refused["request_id"]) == ("t-2", "r-2")
    contract.validate("response", refused)
    assert stored(outbox_path) == []


# ---------------------------------------------------------------- the worker (issue 7)


def test_orders_full_backlog_answers_busy_at_once_and_stop_answers_the_rest(
    outbox_path: Path,
) -> None:
    replies = Replies()
    handler = OrderRequests(outbox_path, replies, base_topic=BASE, shop_uuid=SHOP, backlog=2,
                            claim_url=claim)
    for n in range(3):  # the worker is not started: two wait, the third is refused
        handler.on_message(Message(f"{BASE}/request/order.create",
                                   request(transaction=f"t-{n}", order=order_body(f"o-{n}"))))
    [(topic, busy, _)] = replies.sent
    assert topic == f"{BASE}/response/order.create"
    assert busy["error"]["code"] == "busy"
    assert busy["transaction"] == "t-2"  # the POS can tell which request it was
    handler.start()
    handler.stop(timeout=10)  # answers what waits, then ends the worker
    assert [r["status"] for _, r, _ in replies.sent] == ["error", "ok", "ok"]
    assert [r["transaction"] for _, r, _ in replies.sent[1:]] == ["t-0", "t-1"]
    handler.on_message(Message(f"{BASE}/request/order.create",
                               request(transaction="t-9", request_id="r-9", order=order_body())))
    stopping = replies.sent[-1][1]
    assert stopping["error"]["code"] == "busy"  # after stop: refused, not lost
    assert "stopping" in stopping["error"]["message"]
    assert (stopping["transaction"], stopping["request_id"]) == ("t-9", "r-9")
    contract.validate("response", stopping)
    assert len(stored(outbox_path)) == 2


@pytest.mark.parametrize(
    "payload",
    [
        b'"\\' * 87_000,  # a plain JSON-string regex rescanned from every quote: ~80 s
        b'\\"' * 130_000,
        b'"' + b"\\\\" * 130_000,
        b'"\\"\\' * 65_000,
        b'{"a":"' + b'[\\"' * 87_000,
        b'{"order": "' + b"a@" * 130_000 + b'"}',
        b"[" * 262_000,
    ],
)
def test_orders_hostile_payloads_are_refused_in_linear_time(
    handler: OrderRequests, payload: bytes
) -> None:
    answered: list[dict[str, Any]] = []
    done = threading.Event()

    def run() -> None:
        answered.append(handler.handle("order.create", payload))
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(10), "a hostile payload took over 10 s"
    assert answered[0]["error"]["code"] in ("invalid_json", "too_deep", "invalid_request")


def test_orders_stop_without_a_worker_answers_what_waits(outbox_path: Path) -> None:
    replies = Replies()
    handler = OrderRequests(outbox_path, replies, base_topic=BASE, shop_uuid=SHOP)
    handler.on_message(Message(f"{BASE}/request/order.create", b"[]"))
    assert replies.sent == []
    handler.stop()
    [(_, response, _)] = replies.sent
    assert response["error"]["code"] == "invalid_json"
    handler.on_message(Message(f"{BASE}/request/order.create", b"[]"))
    assert "stopping" in replies.sent[-1][1]["error"]["message"]


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999"])
def test_orders_numbers_that_are_not_json_are_refused(
    handler: OrderRequests, outbox_path: Path, number: bytes
) -> None:
    # NaN passes every minimum and maximum of the schema (comparisons with NaN are false)
    body = json.dumps({"customer": {"contact_uuid": CONTACT}, "order": order_body()})
    payload = body.replace('"applied_to": "ORDER"', '"applied_to": "ORDER", "value": 0').encode()
    assert handler.handle("order.create", payload)["status"] == "ok"  # the field is fine
    payload = payload.replace(b'"value": 0', b'"value": ' + number)
    response = handler.handle("order.create", payload.replace(b"pos-1001", b"pos-2002"))
    assert response["error"]["code"] == "invalid_json"
    assert len(stored(outbox_path)) == 1
