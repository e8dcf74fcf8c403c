"""An order from the POS to Leat and its outcome back, through the real parts: Mosquitto,
the bus, the request worker, the SQLite outbox, the forwarder and the Leat sandbox over HTTP.
`events/order` is checked as the POS receives it, not through a fake publish function."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from broker import Mosquitto, Subscriber
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from test_orders import order_body

from appliance import contract
from appliance.bus import MqttBus
from appliance.config import MqttConfig
from appliance.forwarder import Forwarder
from appliance.leat.client import LeatClient
from appliance.pos.intake import OrderRequests
from appliance.sandbox.server import LeatSandbox

SHOP = "4f1c2a9e-5b7d-4e3a-9c1f-2d8e6a0b7c35"
JANE_CARD = "LC-7F3K9Q2M"  # a sandbox contact with 1250 points
DEVICE = "till-4"
BASE = f"leat-scanner/{DEVICE}"


def test_order_flow_events_order_reaches_the_pos_over_mqtt(
    broker: Mosquitto, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox.sqlite3"
    wake = threading.Event()
    bus = MqttBus(MqttConfig(host=broker.host, port=broker.port), BASE, DEVICE, None, {"x": 1})
    requests = OrderRequests(outbox, bus.publish_response, base_topic=BASE, shop_uuid=SHOP,
                             wake=wake)
    bus.serve("request/+", requests)
    with LeatSandbox() as sandbox, LeatClient(
        sandbox.url, token=sandbox.personal_access_token, shop_uuid=SHOP, timeout_s=5.0
    ) as leat, Subscriber(broker, f"{BASE}/events/order", f"{BASE}/response/#") as pos:
        forwarder = Forwarder(outbox, leat, bus.publish_event, device_id=DEVICE, shop_uuid=SHOP)
        bus.start()
        try:
            assert bus.wait_serving(10)
            pos.wait_subscribed()
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ResponseTopic = f"{BASE}/response/order.create"
            for ext, card in (("flow-1", JANE_CARD), ("flow-2", "LC-NOBODY999")):
                body = {"transaction": f"tx-{ext}", "customer": {"identifier": card},
                        "order": order_body(ext)}
                pos.publish(f"{BASE}/request/order.create", json.dumps(body).encode(), props)
            pos.wait_for(lambda ms: sum("/response/" in m.topic for m in ms) == 2)
            assert wake.is_set()  # the request worker woke the forwarder
            assert forwarder.drain_once() == 2
            events = pos.wait_for(
                lambda ms: sum(m.topic.endswith("/events/order") for m in ms) == 2
            )
        finally:
            bus.stop()
    by_tx: dict[str, dict[str, object]] = {}
    for message in events:
        if message.topic.endswith("/events/order"):
            assert not message.retain
            payload = json.loads(message.payload)
            contract.validate("order", payload)
            by_tx[payload["transaction"]] = payload
    delivered, dead = by_tx["tx-flow-1"], by_tx["tx-flow-2"]
    assert delivered["status"] == "delivered"
    assert delivered["external_identifier"] == "flow-1"
    assert delivered["points"] > 0
    assert delivered["new_balance"] == 1250 + delivered["points"]
    assert dead["status"] == "dead"
    assert dead["error"] is not None
