"""A value-taking command still queued behind other calls at its deadline is never sent:
it is answered `offline` (nothing taken) and may be sent again. An outside review had slow
reads hold the command pool's threads; a giftcard payment waiting behind them was answered
`unknown` and reached Leat 3 s after its `expires_at`."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fakes import SHOP
from test_commands import Events
from test_money import GIFTCARD
from test_orders import Replies

from appliance.leat.client import LeatClient
from appliance.outbox import Outbox
from appliance.pos.intake import OrderRequests
from appliance.pos.ledger import Ledger
from appliance.pos.runner import Commands
from appliance.sandbox.server import LeatSandbox

LATENCY_S = 4.0  # Leat answers order lookups slowly: under timeout_s, over the deadline
DEADLINE_S = 0.5  # leat.command_deadline_s


@pytest.fixture
def busy(tmp_path: Path) -> Iterator[tuple[LeatSandbox, OrderRequests, Events]]:
    state = tmp_path / "state"
    state.mkdir()
    Outbox.prepare(state / "outbox.sqlite3")
    Ledger.prepare(state / "commands.sqlite3")
    with LeatSandbox() as sandbox, LeatClient(
        sandbox.url, token=sandbox.personal_access_token, shop_uuid=SHOP, timeout_s=10.0
    ) as client:
        events = Events()
        commands = Commands(client, state / "commands.sqlite3", state / "outbox.sqlite3", events,
                            device_id="till-9", deadline_s=DEADLINE_S,
                            reconcile_delays_s=(0.2, 0.5, 1.0))
        intake = OrderRequests(state / "outbox.sqlite3", Replies(), base_topic="x/till-9",
                               shop_uuid=SHOP, commands=commands)
        try:
            yield sandbox, intake, events
        finally:
            sandbox.faults.clear()
            commands.close()


def test_a_payment_queued_behind_slow_calls_is_not_sent_after_its_deadline(
    busy: tuple[LeatSandbox, OrderRequests, Events],
) -> None:
    sandbox, intake, events = busy
    sandbox.faults.set(latency_s=LATENCY_S, only_paths=("/orders",))
    for n in range(4):  # every thread of the pool waits for Leat's slow answer
        reply = intake.handle("order.get", json.dumps(
            {"request_id": f"get-{n}", "external_identifier": f"nope-{n}"}).encode())
        assert reply["error"]["code"] == "offline", reply
    pay = {"request_id": "pay-1", "amount_in_cents": 700, "giftcard_uuid": GIFTCARD,
           "expires_at": (datetime.now(UTC) + timedelta(seconds=2)).isoformat()}
    reply = intake.handle("giftcard.pay", json.dumps(pay).encode())
    assert reply["status"] == "error" and reply["error"]["code"] == "offline", reply
    assert "not sent to Leat" in reply["error"]["message"]
    sandbox.faults.clear()
    # the slow reads end; the payment was cancelled, not left queued: Leat never sees it
    assert not happens(lambda: any("giftcard-transactions" in path
                                   for _, path in sandbox.requests()), within=LATENCY_S + 1)
    assert events.sent == []
    # nothing was recorded: the till may send it again, and now it runs
    again = intake.handle("giftcard.pay", json.dumps(
        {**pay, "expires_at": (datetime.now(UTC) + timedelta(seconds=30)).isoformat()}).encode())
    assert again["status"] == "ok", again


def happens(condition: Callable[[], bool], within: float) -> bool:
    """Whether `condition` comes true within `within` seconds (polled)."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        if condition():
            return True
        threading.Event().wait(0.05)
    return condition()
