"""Money over MQTT end to end: a real Mosquitto, the bus, the request worker, the ledger and
the Leat sandbox over HTTP. A giftcard payment whose answer Leat lost is answered `ok` with
one transaction; a second till's equal payment then cannot be told apart: `unknown` /
cannot_tell on the response topic and on events/command, and never paid again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from broker import Mosquitto, Subscriber, request_properties
from fakes import SHOP, prepared_stores
from test_commands import JANE

from appliance import contract
from appliance.bus import MqttBus
from appliance.config import MqttConfig
from appliance.leat.client import LeatClient
from appliance.pos.intake import OrderRequests
from appliance.pos.runner import Commands
from appliance.sandbox.server import LeatSandbox

DEVICE = "till-7"
BASE = f"leat-scanner/{DEVICE}"
REPLIES = "pos/till7/replies"
GIFTCARD = "9c9c9c9c-0000-4f00-8000-000000000001"


def test_money_over_mqtt_lost_answers_are_ok_once_or_cannot_tell(
    broker: Mosquitto, tmp_path: Path
) -> None:
    outbox, ledger = prepared_stores(tmp_path / "state")
    bus = MqttBus(MqttConfig(host=broker.host, port=broker.port), BASE, DEVICE, None, {"x": 1})
    with LeatSandbox() as sandbox, LeatClient(
        sandbox.url, token=sandbox.personal_access_token, shop_uuid=SHOP, timeout_s=5.0
    ) as leat, Subscriber(broker, REPLIES, f"{BASE}/events/command",
                          f"{BASE}/availability") as pos:
        commands = Commands(leat, ledger, outbox, bus.publish_event, device_id=DEVICE)
        requests = OrderRequests(outbox, bus.publish_response, base_topic=BASE,
                                 shop_uuid=SHOP, commands=commands)
        bus.serve("request/+", requests)
        bus.start()

        def ask(verb: str, correlation: bytes, body: dict[str, Any]) -> dict[str, Any]:
            contract.validate(f"command_{verb.replace('.', '_')}", body)
            pos.publish(f"{BASE}/request/{verb}", json.dumps(body).encode(),
                        request_properties(REPLIES, correlation, expiry_s=60))
            messages = pos.wait_for(lambda ms: any(
                m.topic == REPLIES and m.properties.CorrelationData == correlation
                for m in ms))
            reply: dict[str, Any] = json.loads(next(
                m.payload for m in messages if m.topic == REPLIES
                and m.properties.CorrelationData == correlation))
            contract.validate_reply(verb, reply)
            return reply

        try:
            assert bus.wait_serving(10)
            pos.wait_subscribed()
            # "online" comes after the device's own subscriptions (bus.py): it listens now
            pos.wait_message(f"{BASE}/availability", b"online")
            sandbox.faults.set(drop_after_receive=True,
                               only_paths=("/giftcard-transactions",), times=1)
            paid = ask("giftcard.pay", b"c1", {"request_id": "m-1", "amount_in_cents": 600,
                                               "giftcard_uuid": GIFTCARD})
            assert paid["status"] == "ok" and paid["data"]["balance_in_cents"] == 1900, paid
            # another till (its own ledger, so this transaction is no claim of ours) pays
            # 6.00 as well; our next equal payment's answer is lost
            leat.create_giftcard_transaction(giftcard_uuid=GIFTCARD, amount_in_cents=-600)
            sandbox.faults.set(drop_after_receive=True,
                               only_paths=("/giftcard-transactions",), times=1)
            body = {"request_id": "m-2", "amount_in_cents": 600, "giftcard_uuid": GIFTCARD}
            unsure = ask("giftcard.pay", b"c2", body)
            assert unsure["status"] == "unknown", unsure
            assert unsure["error"]["code"] == "cannot_tell"
            event_msg = pos.wait_message(f"{BASE}/events/command")
            event = json.loads(event_msg.payload)
            contract.validate("command_event", event)
            assert event["request_id"] == "m-2" and event["status"] == "unknown"
            assert sorted(event["error"]["candidates"]) == sorted(
                unsure["error"]["candidates"])
            again = ask("giftcard.pay", b"c3", body)  # the recorded outcome, not a payment
            assert again["error"] == unsure["error"]
            prepaid = ask("prepaid.pay", b"c4", {"request_id": "m-3", "amount_in_cents": 250,
                                                 "contact_uuid": JANE})
            assert prepaid["data"]["balance_in_cents"] == 1750
        finally:
            bus.stop()
    posted = sum(1 for m, p in sandbox.requests()
                 if m == "POST" and p.endswith("/giftcard-transactions"))
    assert posted == 3  # ours twice, the other till's once: nothing resent
