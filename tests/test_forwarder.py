"""The forwarder against the real sandbox over HTTP, with real SQLite outbox files.

No sleeps: `drain_once()` with an injected clock and rng; `run()` is observed through the
events it publishes. Tests named `..._assumption` rely on sandbox behaviour the Leat sources
leave open (a repeated external_identifier is 1003, see docs/sandbox.md).
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from broker import Mosquitto, Subscriber
from fakes import SHOP, Clock

from appliance import contract
from appliance.bus import MqttBus
from appliance.config import MqttConfig
from appliance.delivery import TokenSettings
from appliance.errors import BusError
from appliance.forwarder import Forwarder
from appliance.leat.client import LeatClient
from appliance.leat.token import verify
from appliance.outbox import Outbox
from appliance.outbox_items import Kind, State
from appliance.sandbox.server import LeatSandbox

JANE = "c0a80101-1a2b-4c3d-8e4f-000000000001"
UNKNOWN = "00000000-0000-4000-8000-000000000000"
JANE_CARD = "LC-7F3K9Q2M"
CREATE = "/orders/create-and-process"
RETURN = "/order-returns/create-and-process"
FIND = "/orders/find"
SECRET = "very_secret"


class Events:
    """Collects published events (thread-safe) and lets a test wait for them."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []
        self.changed = threading.Condition()

    def __call__(self, name: str, payload: dict[str, Any]) -> None:
        contract.validate("order", payload)
        with self.changed:
            self.items.append((name, payload))
            self.changed.notify_all()

    def payloads(self) -> list[dict[str, Any]]:
        with self.changed:
            return [payload for _, payload in self.items]

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.items) >= count, timeout)


def order(
    ext: str, *, contact: str | None = JANE, amount: int = 2500, **extra: Any
) -> dict[str, Any]:
    """A create-and-process body: one line of `amount` minor units."""
    body: dict[str, Any] = {
        "external_identifier": ext,
        "status": "COMPLETED",
        "payment_status": "PAID",
        "total_order_amount": amount,
        "line_items": [
            {
                "external_identifier": f"{ext}-1",
                "name": "Beans",
                "quantity": 1,
                "price": amount,
                "total_amount": amount,
            }
        ],
        **extra,
    }
    if contact is not None:
        body["contact"] = {"uuid": contact}
    return body


def return_body(ext: str, order_ext: str) -> dict[str, Any]:
    """A full return of `order()`'s one line."""
    return {
        "external_identifier": ext,
        "order": {"external_identifier": order_ext},
        "line_items": [{"external_identifier": f"{order_ext}-1", "quantity": 1}],
    }


def calls(sandbox: LeatSandbox, suffix: str, method: str | None = None) -> int:
    """How many API requests the sandbox read whose path ends with `suffix`."""
    return sum(
        1
        for m, path in sandbox.requests()
        if path.rstrip("/").endswith(suffix) and (method is None or m == method)
    )


@pytest.fixture
def events() -> Events:
    return Events()


def state(outbox: Outbox, item_id: int) -> State:
    item = outbox.get(item_id)
    assert item is not None
    return item.state


def drain_all(forwarder: Forwarder, clock: Clock, rounds: int = 20) -> None:
    """drain_once, advancing the clock past any backoff, until nothing is attempted."""
    for _ in range(rounds):
        clock.advance(400)
        if forwarder.drain_once() == 0:
            return
    raise AssertionError("the outbox did not drain")


# ------------------------------------------------------------------------- deliveries


def test_forwarder_delivers_and_publishes_the_points(
    forwarder: Forwarder, outbox: Outbox, sandbox: LeatSandbox, events: Events
) -> None:
    item = outbox.enqueue(Kind.ORDER, "T-1", order("T-1"), transaction="tx-1").item
    assert forwarder.reachable is None
    assert forwarder.drain_once() == 1
    done = outbox.get(item.id)
    assert done is not None
    assert done.state is State.DELIVERED
    assert done.result is not None
    assert done.result["points"] == 25
    assert forwarder.reachable is True
    [recorded] = sandbox.orders()
    assert recorded["external_identifier"] == "T-1"
    assert recorded["business_profile"]["uuid"] == SHOP
    [(name, payload)] = events.items
    assert name == "order"
    assert payload["status"] == "delivered"
    assert payload["transaction"] == "tx-1"
    assert (payload["points"], payload["new_balance"]) == (25, 1275)
    assert payload["leat_uuid"] == recorded["uuid"]
    assert payload["error"] is None
    assert forwarder.drain_once() == 0


def test_forwarder_outage_then_recovery_delivers_each_order_once(
    forwarder: Forwarder, outbox: Outbox, sandbox: LeatSandbox, clock: Clock
) -> None:
    ids = [outbox.enqueue(Kind.ORDER, f"O-{n}", order(f"O-{n}")).item.id for n in range(8)]
    sandbox.faults.set(outage=True)
    assert forwarder.drain_once() >= 1
    assert forwarder.reachable is False
    for _ in range(3):  # probes fail while the outage lasts
        clock.advance(10)
        forwarder.drain_once()
    assert not sandbox.orders()
    sandbox.faults.clear()
    drain_all(forwarder, clock)
    assert forwarder.reachable is True
    assert all(state(outbox, i) is State.DELIVERED for i in ids)
    recorded = sandbox.orders()
    assert sorted(o["external_identifier"] for o in recorded) == sorted(f"O-{n}" for n in range(8))
    assert sum(o["sandbox"]["points"] for o in recorded) == 8 * 25
    assert calls(sandbox, CREATE) == 8


def test_forwarder_ambiguous_send_is_looked_up_not_posted_again(
    forwarder: Forwarder, outbox: Outbox, sandbox: LeatSandbox, clock: Clock, events: Events
) -> None:
    item = outbox.enqueue(Kind.ORDER, "A-1", order("A-1")).item
    sandbox.faults.set(drop_after_receive=True, only_paths=(CREATE,), times=1)
    assert forwarder.drain_once() == 1
    pending = outbox.get(item.id)
    assert pending is not None
    assert (pending.state, pending.ambiguous) == (State.PENDING, True)
    assert not events.items
    clock.advance(400)
    assert forwarder.drain_once() == 1
    [recorded] = sandbox.orders()
    done = outbox.get(item.id)
    assert done is not None
    assert done.state is State.DELIVERED
    assert done.result is not None
    assert done.result["leat_uuid"] == recorded["uuid"]
    assert calls(sandbox, CREATE) == 1
    assert calls(sandbox, FIND) == 1
    [payload] = events.payloads()
    assert (payload["status"], payload["points"], payload["leat_uuid"]) == (
        "delivered",
        None,
        recorded["uuid"],
    )


def test_forwarder_ambiguous_send_not_received_is_posted_again(
    forwarder: Forwarder, outbox: Outbox, sandbox: LeatSandbox, clock: Clock
) -> None:
    item = outbox.enqueue(Kind.ORDER, "A-2", order("A-2")).item
    sandbox.faults.set(status=502, only_paths=(CREATE,), times=1)  # 5xx: ambiguous, not acted
    forwarder.drain_once()
    pending = outbox.get(item.id)
    assert pending is not None
    assert pending.ambiguous
    clock.advance(400)
    assert forwarder.drain_once() == 1
    assert state(outbox, item.id) is State.DELIVERED
    assert (calls(sandbox, FIND), calls(sandbox, CREATE)) == (1, 2)
    assert len(sandbox.orders()) == 1


@pytest.mark.parametrize("answer", [
    {"data": {}},
    {"data": {"uuid": "00000000-0000-0000-0000-000000000000"}},  # a bare object, no order
    {"data": {"result": {"type": "POINTS_TRANSACTION", "data": {"points": 1}}}},
    {"data": {"order": {"uuid": "00000000-0000-0000-0000-000000000000",
                        "external_identifier": "someone-else"}}},
], ids=["empty", "bare-object", "result-only", "another-order"])
def test_forwarder_a_success_without_our_order_is_looked_up_not_delivered(
    forwarder: Forwarder, outbox: Outbox, sandbox: LeatSandbox, clock: Clock,
    answer: dict[str, Any],
) -> None:
    # A 2xx that does not show our order (a proxy, a wrong base_url, an API change) says
    # nothing of what Leat did: delivered on it, the order was lost
    item = outbox.enqueue(Kind.ORDER, "A-3", order("A-3")).item
    sandbox.faults.set(status=200, body=json.dumps(answer), only_paths=(CREATE,), times=1)
    forwarder.drain_once()
    pending = outbox.get(item.id)
    assert pending is not None
    assert (pending.state, pending.ambiguous) == (State.PENDING, True)
    assert sandbox.orders() == []
    clock.advance(400)
    assert forwarder.drain_once() == 1
    assert state(outbox, item.id) is State.DELIVERED
    assert (calls(sandbox, FIND), calls(sandbox, CREATE)) == (1, 2)
    assert [o["external_identifier"] for o in sandbox.orders()] == ["A-3"]


# ------------------------------------------------------------------------- rejections


def test_forwarder_rejection_is_dead_and_a_fixed_body_is_delivered(
    forwarder: Forwarder, outbox: Outbox, sandbox: LeatSandbox, events: Events
) -> None:
    item = outbox.enqueue(Kind.ORDER, "R-1", order("R-1", contact=UNKNOWN)).item
    assert forwarder.drain_once() == 1
    dead = outbox.get(item.id)
    assert dead is not None
    assert (dead.state, dead.error_code) == (State.DEAD, 55031)
    assert dead.error_message
    [payload] = events.payloads()
    assert payload["status"] == "dead"
    assert payload["error"]["code"] == 55031
    assert forwarder.reachable is True  # Leat answered
    outbox.drop(item.id)
    fixed = outbox.enqueue(Kind.ORDER, "R-1", order("R-1")).item
    assert forwarder.drain_once() == 1
    assert state(outbox, fixed.id) is State.DELIVERED
    assert len(sandbox.orders()) == 1


def test_forwarder_malformed_line_is_dead_with_1003(
    forwarder: Forwarder, outbox: Outbox, sandbox: LeatSandbox
) -> None:
    body = order("R-2")
    del body["line_items"][0]["name"]
    item = outbox.enqueue(Kind.ORDER, "R-2", body).item
    forwarder.drain_once()
    dead = outbox.get(item.id)
    assert dead is not None
    assert (dead.state, dead.error_code) == (State.DEAD, 1003)
    assert not sandbox.orders()


@pytest.mark.parametrize(("status", "body"), [
    (400, "<html><body>400 Bad Request</body></html>"),  # a proxy's page
    (422, json.dumps({"message": "The given data was invalid."})),  # no Leat code
], ids=["proxy-page", "no-code"])
def test_forwarder_a_refusal_without_leats_code_keeps_the_order_with_an_alert(
    forwarder: Forwarder, outbox: Outbox, sandbox: LeatSandbox, clock: Clock, events: Events,
    status: int, body: str,
) -> None:
    # only Leat's own error code makes an order dead: anything else is not Leat deciding
    item = outbox.enqueue(Kind.ORDER, "R-4", order("R-4")).item
    sandbox.faults.set(status=status, body=body, only_paths=(CREATE,), times=1)
    forwarder.drain_once()
    held = outbox.get(item.id)
    assert held is not None
    assert (held.state, held.ambiguous) == (State.PENDING, True)
    assert forwarder.alert is not None and "1 item(s) held" in forwarder.alert
    assert not events.items
    clock.advance(400)
    assert forwarder.drain_once() == 1
    assert state(outbox, item.id) is State.DELIVERED
    assert (calls(sandbox, FIND), calls(sandbox, CREATE)) == (1, 2)
    assert len(sandbox.orders()) == 1
    assert forwarder.alert is None


def test_forwarder_dead_letter_retried_after_a_transient_rejection(
    forwarder: Forwarder, outbox: Outbox, sandbox: LeatSandbox
) -> None:
    item = outbox.enqueue(Kind.ORDER, "R-3", order("R-3")).item
    sandbox.faults.set(status=400, only_paths=(CREATE,), times=1)
    forwarder.drain_once()
    assert state(outbox, item.id) is State.DEAD
    outbox.retry(item.id)
    assert forwarder.drain_once() == 1
    assert state(outbox, item.id) is State.DELIVERED
    assert len(sandbox.orders()) == 1


# ------------------------------------------------------------------ retry scheduling


def test_forwarder_429_retry_after_is_respected(
    forwarder: Forwarder, outbox: Outbox, sandbox: LeatSandbox, clock: Clock
) -> None:
    item = outbox.enqueue(Kind.ORDER, "L-1", order("L-1")).item
    sandbox.faults.set(rate_limit_retry_after=120, times=1)
    start = clock.now
    assert forwarder.drain_once() == 1
    pending = outbox.get(item.id)
    assert pending is not None
    assert pending.state is State.PENDING
    assert not pending.ambiguous
    assert pending.next_attempt_at >= start + 120
    clock.advance(100)
    assert forwarder.drain_once() == 0
    clock.advance(21)
    assert forwarder.drain_once() == 1
    assert state(outbox, item.id) is State.DELIVERED


def test_forwarder_503_is_retried(
    forwarder: Forwarder, outbox: Outbox, sandbox: LeatSandbox, clock: Clock
) -> None:
    item = outbox.enqueue(Kind.ORDER, "M-1", order("M-1")).item
    sandbox.faults.set(maintenance=True, times=1)
    forwarder.drain_once()
    pending = outbox.get(item.id)
    assert pending is not None
    assert (pending.state, pending.ambiguous, pending.attempts) == (State.PENDING, False, 1)
    clock.advance(10)
    assert forwarder.drain_once() == 1
    assert state(outbox, item.id) is State.DELIVERED
    assert calls(sandbox, FIND) == 0


def test_forwarder_probe_mode_sends_one_request_at_a_time(
    forwarder: Forwarder, outbox: Outbox, sandbox: LeatSandbox, clock: Clock
) -> None:
    ids = [outbox.enqueue(Kind.ORDER, f"P-{n}", order(f"P-{n}")).item.id for n in range(10)]
    sandbox.faults.set(maintenance=True)
    first = forwarder.drain_once()
    assert 1 <= first <= forwarder.concurrency  # found out; no further requests this pass
    assert forwarder.probing
    assert calls(sandbox, CREATE) == first
    assert forwarder.drain_once() == 0  # the next probe is not due yet
    for n in range(1, 6):
        clock.advance(forwarder.probe_max_s)
        assert forwarder.drain_once() == 1
        assert calls(sandbox, CREATE) == first + n
    # a long outage never pushes an item further back than one probe interval
    horizon = clock.now + forwarder.probe_max_s
    assert all(i.next_attempt_at <= horizon for i in outbox.items([State.PENDING]))
    sandbox.faults.clear()
    clock.advance(forwarder.probe_max_s)
    assert forwarder.drain_once() == 10  # the probe succeeds, then full speed in the same pass
    assert not forwarder.probing
    assert all(state(outbox, i) is State.DELIVERED for i in ids)
    assert len(sandbox.orders()) == 10


def test_forwarder_auth_error_keeps_the_order_and_logs_once(
    path: Path,
    outbox: Outbox,
    sandbox: LeatSandbox,
    events: Events,
    clock: Clock,
    client: LeatClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    items = [outbox.enqueue(Kind.ORDER, f"U-{n}", order(f"U-{n}")).item.id for n in range(3)]
    with LeatClient(sandbox.url, token="wrong", timeout_s=5.0) as wrong:
        bad = Forwarder(
            path,
            wrong,
            events,
            device_id="till-1",
            shop_uuid=SHOP,
            clock=clock,
            rng=random.Random(1),
            concurrency=1,
        )
        with caplog.at_level(logging.ERROR, logger="appliance.forwarder"):
            bad.drain_once()
            clock.advance(10)
            bad.drain_once()
    assert bad.reachable is False
    assert sum("credentials" in r.getMessage() for r in caplog.records) == 1
    assert all(state(outbox, i) is State.PENDING for i in items)
    good = Forwarder(path, client, events, device_id="till-1", shop_uuid=SHOP, clock=clock)
    drain_all(good, clock)
    assert all(state(outbox, i) is State.DELIVERED for i in items)


def test_forwarder_publish_failure_keeps_the_delivery(
    path: Path, outbox: Outbox, client: LeatClient, clock: Clock
) -> None:
    def broken(name: str, payload: dict[str, Any]) -> None:
        raise BusError("broker gone")

    item = outbox.enqueue(Kind.ORDER, "B-1", order("B-1")).item
    Forwarder(path, client, broken, device_id="till-1", shop_uuid=SHOP, clock=clock).drain_once()
    assert state(outbox, item.id) is State.DELIVERED


def test_forwarder_holds_outcome_events_the_bus_cannot_queue_and_pauses_until_sent(
    path: Path, outbox: Outbox, client: LeatClient, clock: Clock, tmp_path: Path
) -> None:
    # MQTT away a long time while Leat takes orders: paho's queue fills with events/order;
    # an outcome must never be dropped, so delivering waits until it can be published
    server = Mosquitto(tmp_path / "broker")
    bus = MqttBus(MqttConfig(host="127.0.0.1", port=server.port), "leat-scanner/till-1",
                  "till-1", None, {}, max_queued=2)
    ids = [outbox.enqueue(Kind.ORDER, f"Q-{n}", order(f"Q-{n}")).item.id for n in range(5)]
    forwarder = Forwarder(path, client, bus.publish_event, device_id="till-1",
                          shop_uuid=SHOP, clock=clock, concurrency=1)
    forwarder.drain_once()  # the one in flight when the queue filled is delivered too
    assert [state(outbox, i) for i in ids] == [State.DELIVERED] * 4 + [State.PENDING]
    server.start()
    try:
        with Subscriber(server, "leat-scanner/till-1/events/order").wait_subscribed() as pos:
            bus.start()  # paho sends what it queued, which makes room
            assert bus.wait_connected(10)
            stop = threading.Event()
            loop = threading.Thread(target=forwarder.run, args=(stop,))
            loop.start()  # tries the held events again every second, then delivers
            try:
                got = pos.wait_for(lambda ms: len(ms) >= 5)
            finally:
                stop.set()
                loop.join(10)
            assert [json.loads(m.payload)["external_identifier"] for m in got] == [
                f"Q-{n}" for n in range(5)]
        assert state(outbox, ids[4]) is State.DELIVERED
    finally:
        bus.stop()
        server.stop()


# -------------------------------------------------------------------------- customers


def test_forwarder_resolves_a_scanned_card_at_send_time(
    forwarder: Forwarder, outbox: Outbox, sandbox: LeatSandbox
) -> None:
    item = outbox.enqueue(
        Kind.ORDER, "C-1", order("C-1", contact=None), customer_identifier=JANE_CARD
    ).item
    assert forwarder.drain_once() == 1
    assert state(outbox, item.id) is State.DELIVERED
    [recorded] = sandbox.orders()
    assert recorded["contact"]["uuid"] == JANE
    stored = outbox.get(item.id)
    assert stored is not None
    assert "contact" not in stored.body  # resolved into a copy, the stored body is as given


@pytest.mark.parametrize(
    ("card", "code"), [("LC-NOSUCH00", 60003), ("LC-INACTIVE9", 60004), ("LC-UNLINKED7", 60011)]
)
def test_forwarder_unusable_card_is_dead(
    forwarder: Forwarder,
    outbox: Outbox,
    sandbox: LeatSandbox,
    events: Events,
    card: str,
    code: int | None,
) -> None:
    item = outbox.enqueue(
        Kind.ORDER, "C-2", order("C-2", contact=None), customer_identifier=card
    ).item
    forwarder.drain_once()
    dead = outbox.get(item.id)
    assert dead is not None
    assert (dead.state, dead.error_code) == (State.DEAD, code)
    assert dead.error_message is not None
    assert "customer card" in dead.error_message
    assert not sandbox.orders()
    assert events.payloads()[0]["error"]["code"] == code


def test_forwarder_no_customer_gets_a_claim_url_without_calling_leat(
    path: Path,
    outbox: Outbox,
    client: LeatClient,
    sandbox: LeatSandbox,
    events: Events,
    clock: Clock,
) -> None:
    token = TokenSettings(portal_url="https://demo.piggy.eu", account_secret=SECRET)
    assert SECRET not in repr(token)
    forwarder = Forwarder(
        path, client, events, device_id="till-1", shop_uuid=SHOP, token=token, clock=clock
    )
    item = outbox.enqueue(Kind.ORDER, "N-1", order("N-1", contact=None, amount=1040)).item
    assert forwarder.drain_once() == 1
    assert state(outbox, item.id) is State.DELIVERED
    assert sandbox.requests() == []
    [payload] = events.payloads()
    url = urlsplit(payload["claim_url"])
    params = dict(parse_qsl(url.query))
    assert (url.netloc, url.path) == ("demo.piggy.eu", "/l")
    assert verify(params, SECRET)
    assert not verify(params, "other")
    assert (params["unique_id"], params["unit_value"], params["shop_uuid"]) == ("N-1", "10.4", SHOP)
    assert params["timestamp"] == str(int(item.created_at))
    assert forwarder.claim_url(item) == payload["claim_url"]  # what the request handler sends
    assert payload["leat_uuid"] is None


def test_forwarder_no_customer_and_no_token_settings_is_dead(
    forwarder: Forwarder, outbox: Outbox, sandbox: LeatSandbox
) -> None:
    item = outbox.enqueue(Kind.ORDER, "N-2", order("N-2", contact=None)).item
    assert forwarder.claim_url(item) is None
    forwarder.drain_once()
    dead = outbox.get(item.id)
    assert dead is not None
    assert dead.state is State.DEAD
    assert dead.error_message is not None
    assert "no loyalty token settings" in dead.error_message
    assert sandbox.requests() == []


# ---------------------------------------------------------------------------- returns


def test_forwarder_return_waits_for_its_order(
    forwarder: Forwarder, outbox: Outbox, sandbox: LeatSandbox, clock: Clock, events: Events
) -> None:
    order_id = outbox.enqueue(Kind.ORDER, "W-1", order("W-1")).item.id
    return_id = outbox.enqueue(
        Kind.RETURN, "W-1-R", return_body("W-1-R", "W-1"), order_external_identifier="W-1"
    ).item.id
    sandbox.faults.set(status=500, only_paths=(CREATE,), times=1)
    assert forwarder.drain_once() == 1  # only the order; the return is held back
    assert calls(sandbox, RETURN) == 0
    clock.advance(400)
    assert forwarder.drain_once() == 2  # the order, then its return in the same pass
    assert state(outbox, order_id) is State.DELIVERED
    assert state(outbox, return_id) is State.DELIVERED
    [ret] = sandbox.order_returns()
    assert ret["external_identifier"] == "W-1-R"
    kinds = [(p["kind"], p["status"]) for p in events.payloads()]
    assert kinds == [("order", "delivered"), ("return", "delivered")]
    assert events.payloads()[1]["points"] == -25
    assert [r for r in sandbox.requests() if r[0] == "POST"][-1][1].rstrip("/").endswith(RETURN)


def test_forwarder_ambiguous_return_duplicate_means_delivered_assumption(
    forwarder: Forwarder, outbox: Outbox, sandbox: LeatSandbox, clock: Clock
) -> None:
    outbox.enqueue(Kind.ORDER, "D-1", order("D-1"))
    return_id = outbox.enqueue(
        Kind.RETURN, "D-1-R", return_body("D-1-R", "D-1"), order_external_identifier="D-1"
    ).item.id
    sandbox.faults.set(drop_after_receive=True, only_paths=(RETURN,), times=1)
    assert forwarder.drain_once() == 2
    clock.advance(400)
    assert forwarder.drain_once() == 1  # posted again: Leat says duplicate (1003)
    assert state(outbox, return_id) is State.DELIVERED
    assert calls(sandbox, RETURN) == 2
    assert len(sandbox.order_returns()) == 1


# ---------------------------------------------------------------------------- run()


def test_forwarder_run_sends_a_new_order_when_woken(
    path: Path, client: LeatClient, sandbox: LeatSandbox, events: Events
) -> None:
    wake, stop = threading.Event(), threading.Event()
    forwarder = Forwarder(path, client, events, device_id="till-1", shop_uuid=SHOP, wake=wake)
    thread = threading.Thread(target=forwarder.run, args=(stop,), daemon=True)
    with Outbox(path) as box:
        thread.start()
        try:
            box.enqueue(Kind.ORDER, "RUN-1", order("RUN-1"))
            wake.set()
            # far below the idle poll (30 s): the wake-up sent it
            assert events.wait_for(1, timeout=5.0)
            box.enqueue(Kind.ORDER, "RUN-2", order("RUN-2"))
            wake.set()
            assert events.wait_for(2, timeout=5.0)
        finally:
            stop.set()
            thread.join(timeout=5.0)
    assert not thread.is_alive()
    assert [o["external_identifier"] for o in sandbox.orders()] == ["RUN-1", "RUN-2"]


# ---------------------------------------------------------------------------- kill -9

CHILD = """
import random, sys, threading
from pathlib import Path
from appliance.forwarder import Forwarder
from appliance.leat.client import LeatClient
from appliance.outbox import Outbox

path, url, token, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
client = LeatClient(url, token=token, shop_uuid=sys.argv[5], timeout_s=5.0)
forwarder = Forwarder(path, client, lambda name, payload: None, device_id="till-1",
                      shop_uuid=sys.argv[5], backoff_base_s=0.01, backoff_cap_s=0.05,
                      probe_max_s=0.05)
with Outbox(path) as box:
    box.recover()
    print("ready", flush=True)
    if mode == "finish":
        for _ in range(200):
            forwarder.drain_once()
            if box.depth() == 0:
                break
    else:
        forwarder.run(threading.Event())
"""


def _child(path: Path, sandbox: LeatSandbox, mode: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            str(path),
            sandbox.url,
            sandbox.personal_access_token,
            mode,
            SHOP,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def kill_9_while_working(
    path: Path, sandbox: LeatSandbox, rng: random.Random, rounds: int,
    progress: Callable[[], int],
) -> list[int]:
    """Start a forwarder process on `path` `rounds` times and `kill -9` it at a random moment
    (most land between Leat acting and SQLite recording it); `progress()` after each kill."""
    seen = []
    for _ in range(rounds):
        child = _child(path, sandbox, "run")
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        try:
            child.wait(timeout=rng.uniform(0.0, 0.15))
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
        child.stdout.close()
        seen.append(progress())
    return seen


def finish_without_faults(path: Path, sandbox: LeatSandbox) -> None:
    """Clear the sandbox's faults and let one forwarder process drain the outbox to the end."""
    sandbox.faults.clear()
    child = _child(path, sandbox, "finish")
    out, _ = child.communicate(timeout=30)
    assert child.returncode == 0, out


def test_forwarder_kill_9_while_draining_delivers_each_order_once(
    path: Path, outbox: Outbox, sandbox: LeatSandbox
) -> None:
    rng = random.Random(20261122)
    for n in range(20):
        outbox.enqueue(Kind.ORDER, f"K-{n}", order(f"K-{n}"))
    # The sandbox acts first and then waits, so most kills land between Leat and SQLite.
    sandbox.faults.set(latency_s=0.1, only_paths=(CREATE,))
    progress = kill_9_while_working(path, sandbox, rng, 10, lambda: len(sandbox.orders()))
    assert progress[0] < 20  # killed while there was work to do
    assert calls(sandbox, FIND) >= 1  # some kill left an item SENDING: looked up, not re-posted
    finish_without_faults(path, sandbox)
    recorded = sorted(o["external_identifier"] for o in sandbox.orders())
    assert recorded == sorted(f"K-{n}" for n in range(20))
    assert all(o["sandbox"]["points"] == 25 for o in sandbox.orders())
    assert all(i.state is State.DELIVERED for i in outbox.items(limit=100))


def test_forwarder_failed_lookup_is_not_ambiguous(
    forwarder: Forwarder, outbox: Outbox, sandbox: LeatSandbox, clock: Clock
) -> None:
    item = outbox.enqueue(
        Kind.ORDER, "G-1", order("G-1", contact=None), customer_identifier=JANE_CARD
    ).item
    sandbox.faults.set(status=502, only_paths=("/contact-identifiers",), times=1)
    assert forwarder.drain_once() == 1
    pending = outbox.get(item.id)
    assert pending is not None
    assert (pending.state, pending.ambiguous) == (State.PENDING, False)  # nothing was posted
    clock.advance(400)
    assert forwarder.drain_once() == 1
    assert state(outbox, item.id) is State.DELIVERED
    assert calls(sandbox, FIND) == 0


# ------------------------------------------------------------- Leat's undocumented answers

DUPLICATE_IN_ERRORS = {  # Laravel style: a generic message, the detail per field
    "message": "Invalid input.",
    "code": 1003,
    "status_code": 400,
    "errors": {"external_identifier": ["The external identifier has already been taken."]},
}


def ambiguous_item(outbox: Outbox, ext: str) -> int:
    """An order whose attempt may have reached Leat (a lost answer): PENDING, ambiguous."""
    item_id = outbox.enqueue(Kind.ORDER, ext, order(ext)).item.id
    assert outbox.claim(item_id) is not None
    outbox.mark_retry(item_id, delay_s=0, error="no answer", ambiguous=True)
    return item_id


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param({"status": 404, "body": "<html><h1>404 Not Found</h1></html>"}, id="bare-404"),
        pytest.param({"status": 404, "body": {"message": "Not Found"}}, id="404-no-code"),
        pytest.param(
            {"status": 400, "body": {"message": "Something went wrong.", "code": 1000,
                                     "status_code": 400}},
            id="other-message",
        ),
        pytest.param(
            {"status": 400, "body": {"message": "Contact not found.", "code": 55031,
                                     "status_code": 400}},
            id="not-found-but-not-an-order",
        ),
    ],
)
def test_forwarder_unexplained_find_keeps_the_order_pending_with_an_alert(
    forwarder: Forwarder,
    outbox: Outbox,
    sandbox: LeatSandbox,
    clock: Clock,
    events: Events,
    caplog: pytest.LogCaptureFixture,
    answer: dict[str, Any],
) -> None:
    item_id = ambiguous_item(outbox, "U-1")
    sandbox.faults.set(only_paths=(FIND,), **answer)
    caplog.set_level(logging.INFO, logger="appliance.forwarder")
    for _ in range(3):  # however often Leat answers so, the order is never given up
        assert forwarder.drain_once() == 1
        held = outbox.get(item_id)
        assert held is not None
        assert (held.state, held.ambiguous) == (State.PENDING, True)
        assert forwarder.alert is not None
        assert "1 item(s) held" in forwarder.alert
        assert forwarder.reachable is True  # Leat answered; it is not an outage
        clock.advance(400)
    state_payload = {  # what the daemon's `state` shows (contract: state.schema.json)
        "schema": "leat-scanner/state/1", "device_id": "till-1",
        "timestamp": "2026-12-02T08:00:00+00:00",
        "camera": {"ok": True, "fps": 30.0, "error": None},
        "scans_total": 0, "rejected_total": 0, "last_scan_at": None,
        "leat": {"reachable": forwarder.reachable, "alert": forwarder.alert},
    }
    contract.validate("state", state_payload)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1  # once, not on every retry
    assert "orders/find" in errors[0].getMessage()
    assert calls(sandbox, CREATE) == 0  # never posted while unexplained
    assert not events.items
    sandbox.faults.clear()
    assert forwarder.drain_once() == 1  # understood again: not found, so posted
    assert state(outbox, item_id) is State.DELIVERED
    assert forwarder.alert is None
    assert len(sandbox.orders()) == 1


def test_forwarder_alert_survives_an_outage_and_counts_items(
    forwarder: Forwarder, outbox: Outbox, sandbox: LeatSandbox, clock: Clock
) -> None:
    first = ambiguous_item(outbox, "U-2")
    second = ambiguous_item(outbox, "U-3")
    sandbox.faults.set(status=404, body="Not Found", only_paths=(FIND,))
    assert forwarder.drain_once() == 2
    assert forwarder.alert is not None
    assert forwarder.alert.startswith("2 item(s) held")
    sandbox.faults.set(outage=True)  # Leat unreachable: nothing was understood or resolved
    clock.advance(400)
    forwarder.drain_once()
    assert forwarder.alert is not None
    sandbox.faults.clear()
    drain_all(forwarder, clock)
    assert state(outbox, first) is State.DELIVERED
    assert state(outbox, second) is State.DELIVERED
    assert forwarder.alert is None


def test_forwarder_duplicate_of_an_order_that_never_left_is_dead_assumption(
    forwarder: Forwarder, outbox: Outbox, sandbox: LeatSandbox, client: LeatClient,
    events: Events,
) -> None:
    # Another order already has this external_identifier in Leat (a POS reusing its ids).
    client.create_and_process_order(order("X-1", business_profile={"uuid": SHOP}))
    item_id = outbox.enqueue(Kind.ORDER, "X-1", order("X-1", amount=900)).item.id
    assert forwarder.drain_once() == 1
    dead = outbox.get(item_id)
    assert dead is not None
    assert (dead.state, dead.error_code) == (State.DEAD, 1003)
    assert calls(sandbox, FIND) == 0
    [payload] = events.payloads()
    assert (payload["status"], payload["leat_uuid"]) == ("dead", None)
    assert len(sandbox.orders()) == 1


def test_forwarder_duplicate_in_errors_only_of_a_new_order_is_dead(
    forwarder: Forwarder, outbox: Outbox, sandbox: LeatSandbox
) -> None:
    item_id = outbox.enqueue(Kind.ORDER, "X-2", order("X-2")).item.id
    sandbox.faults.set(status=400, body=DUPLICATE_IN_ERRORS, only_paths=(CREATE,), times=1)
    assert forwarder.drain_once() == 1
    assert state(outbox, item_id) is State.DEAD
    assert forwarder.alert is None


def test_forwarder_ambiguous_duplicate_is_checked_with_find_assumption(
    forwarder: Forwarder, outbox: Outbox, sandbox: LeatSandbox, clock: Clock, client: LeatClient,
    events: Events,
) -> None:
    item_id = ambiguous_item(outbox, "X-3")
    # The lost attempt did land after all, but the first lookup missed it (e.g. Leat was
    # still processing it): find says "not found", the post is called a duplicate.
    recorded = client.create_and_process_order(order("X-3", business_profile={"uuid": SHOP}))
    assert recorded.order is not None
    not_found = {"message": "Order not found.", "code": 9404, "status_code": 404}
    sandbox.faults.set(status=404, body=not_found, only_paths=(FIND,), times=1)
    assert forwarder.drain_once() == 1
    done = outbox.get(item_id)
    assert done is not None
    assert done.state is State.DELIVERED
    assert done.result is not None
    assert (done.result["found"], done.result["leat_uuid"]) == ("duplicate", recorded.order.uuid)
    assert (calls(sandbox, FIND), calls(sandbox, CREATE)) == (2, 2)  # one is the test's own
    [payload] = events.payloads()
    assert (payload["status"], payload["leat_uuid"]) == ("delivered", recorded.order.uuid)
    assert len(sandbox.orders()) == 1


def test_forwarder_ambiguous_duplicate_in_errors_that_find_misses_is_held(
    forwarder: Forwarder, outbox: Outbox, sandbox: LeatSandbox, clock: Clock
) -> None:
    item_id = ambiguous_item(outbox, "X-4")
    sandbox.faults.set(status=400, body=DUPLICATE_IN_ERRORS, only_paths=(CREATE,), times=1)
    assert forwarder.drain_once() == 1
    held = outbox.get(item_id)
    assert held is not None
    assert (held.state, held.ambiguous) == (State.PENDING, True)  # read from `errors`: not DEAD
    assert forwarder.alert is not None
    assert "duplicate" in forwarder.alert
    clock.advance(400)
    assert forwarder.drain_once() == 1
    assert state(outbox, item_id) is State.DELIVERED
    assert forwarder.alert is None
