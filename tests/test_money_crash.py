"""The money proof: `kill -9` of the real `leat-scanner run` process at random moments while a
POS pays with a giftcard and prepaid and reverses payments (real Mosquitto, SQLite files,
the Leat sandbox over HTTP). Afterwards the balances in Leat equal the start plus the sum of
what the POS was told, to the cent: every `ok` reply, every final `events/command` outcome,
nothing taken or given back that the POS was not told about, nothing told that did not
happen.

The POS behaves as the README asks: a request without an answer (the device died) is sent
again with the same request_id; an `unknown` or `accepted` one waits for `events/command`,
and a give-back whose event never came is asked again (its outcome is then published again).
"""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from broker import Mosquitto, Subscriber
from test_crash import BASE, start, write_config

from appliance import contract
from appliance.leat.client import LeatClient
from appliance.samples import DEMO_SHOP_UUID
from appliance.sandbox.server import LeatSandbox

KILLS = 50
CARD = "9c9c9c9c-0000-4f00-8000-000000000006"  # 50.00 in the seed; its program's max 500.00
JANE = "c0a80101-1a2b-4c3d-8e4f-000000000001"
NOTHING_TAKEN = frozenset({"leat_rejected", "not_applied", "offline", "expired",
                           "not_last_transaction", "invalid_request"})


@dataclass
class Op:
    """One POS request and what the POS was told it did to a balance (signed cents)."""

    request_id: str
    verb: str
    body: dict[str, Any]
    amount: int
    told: int | None = None  # None: not told yet
    tx: str | None = None  # a payment's transaction uuid, once told ok
    reversing: bool = False  # a reversal of this payment was sent

    @property
    def balance(self) -> str:
        return self.verb.split(".")[0]  # "giftcard" or "prepaid"

    @property
    def pays(self) -> bool:
        return self.verb.endswith(".pay")


class Till:
    """The POS's book: what it sent, and what each answer and event told it."""

    def __init__(self, sub: Subscriber, rng: random.Random) -> None:
        self.sub = sub
        self.rng = rng
        self.ops: dict[str, Op] = {}
        self.seen = 0

    def send(self, op: Op) -> None:
        self.ops.setdefault(op.request_id, op)
        self.sub.publish(f"{BASE}/request/{op.verb}", json.dumps(op.body).encode())

    def next_op(self) -> Op:
        """A payment, or the reversal of a payment told ok (the card's newest, so Leat may
        take it; a prepaid one at random)."""
        n = len(self.ops)
        card_paid = [o for o in self.ops.values() if o.verb == "giftcard.pay" and o.tx]
        prepaid_paid = [o for o in self.ops.values() if o.verb == "prepaid.pay" and o.tx
                        and not o.reversing]
        choice = self.rng.random()
        if choice < 0.2 and card_paid and not card_paid[-1].reversing:
            paid = card_paid[-1]
            paid.reversing = True
            return Op(f"gr-{n}", "giftcard.reverse",
                      {"request_id": f"gr-{n}", "transaction_uuid": paid.tx}, paid.amount)
        if choice < 0.4 and prepaid_paid:
            paid = self.rng.choice(prepaid_paid)
            paid.reversing = True
            return Op(f"pr-{n}", "prepaid.reverse",
                      {"request_id": f"pr-{n}", "transaction_uuid": paid.tx,
                       "contact_uuid": JANE}, paid.amount)
        amount = 100 + n  # every payment its own amount: never two equal candidates
        if choice < 0.7:
            return Op(f"gp-{n}", "giftcard.pay", {"request_id": f"gp-{n}",
                      "giftcard_uuid": CARD, "amount_in_cents": amount}, amount)
        return Op(f"pp-{n}", "prepaid.pay", {"request_id": f"pp-{n}", "contact_uuid": JANE,
                  "amount_in_cents": amount}, amount)

    def learn(self, messages: Sequence[mqtt.MQTTMessage]) -> None:
        """Read the replies and events that arrived since the last call."""
        for message in messages[self.seen:]:
            if "/response/" in message.topic or message.topic.endswith("/events/command"):
                payload = json.loads(message.payload)
                op = self.ops.get(payload.get("request_id", ""))
                if op is not None:
                    event = message.topic.endswith("/events/command")
                    contract.validate("command_event" if event else "response", payload)
                    self._told(op, payload, event)
        self.seen = len(messages)

    def _told(self, op: Op, payload: dict[str, Any], event: bool) -> None:
        status, data, error = payload["status"], payload["data"], payload["error"]
        told: int | None = None
        if status == "ok":
            told = -op.amount if op.pays else op.amount
            if op.pays:
                op.tx = data["transaction_uuid"]
                assert data["amount_in_cents"] == op.amount
            elif data.get("amount_in_cents") is not None:
                assert data["amount_in_cents"] == op.amount
        elif (event and status == "failed") or (
                status == "error" and error["code"] in NOTHING_TAKEN):
            told = 0
        elif status == "error":
            assert error["code"] == "busy", payload  # anything else: a told outcome we miss
        if told is not None:
            assert op.told in (None, told), (op, payload)  # never told two different things
            op.told = told

    def untold(self, messages: Sequence[mqtt.MQTTMessage]) -> list[Op]:
        self.learn(messages)
        return [o for o in self.ops.values() if o.told is None]

    def effect(self, balance: str) -> int:
        return sum(o.told or 0 for o in self.ops.values() if o.balance == balance)


@pytest.mark.slow  # 50 real process starts: 47-67 s here (still run by scripts/test)
def test_kill_9_during_pays_and_reversals_moves_exactly_what_the_pos_was_told(
    broker: Mosquitto, tmp_path: Path
) -> None:
    rng = random.Random(20261203)
    with LeatSandbox() as sandbox, Subscriber(broker, f"{BASE}/#") as sub, LeatClient(
        sandbox.url, token=sandbox.personal_access_token, shop_uuid=DEMO_SHOP_UUID,
        timeout_s=5.0,
    ) as leat:
        leat.create_giftcard_transaction(giftcard_uuid=CARD, amount_in_cents=40000)
        leat.create_prepaid_transaction(contact_uuid=JANE, amount_in_cents=100000)
        card_start = leat.get_giftcard(CARD).amount_in_cents
        prepaid_start = leat.get_prepaid_balance(JANE)
        # Leat acts, then waits: kills land between Leat acting and the device recording it.
        sandbox.faults.set(latency_s=0.03, only_paths=("/giftcard-transactions",
                                                        "/prepaid-transactions"))
        sub.wait_subscribed()
        config = write_config(tmp_path, broker, sandbox)
        till = Till(sub, rng)
        onlines = 0

        def wait_online() -> None:
            nonlocal onlines
            onlines += 1
            sub.wait_online(BASE, onlines, timeout=30)

        for _ in range(KILLS):
            proc = start(config)
            try:
                wait_online()
                for _ in range(rng.randint(1, 3)):
                    op = till.next_op()
                    till.send(op)
                    if rng.random() < 0.3:
                        break  # killed with the request in flight
                    sub.wait_for(lambda ms, r=op.request_id: any(
                        "/response/" in m.topic and json.loads(m.payload).get("request_id") == r
                        for m in ms), timeout=20)
                    till.learn(list(sub.messages))
                # a random moment: mid-call, mid-reversal, or idle
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=rng.uniform(0.0, 0.12))
            finally:
                proc.kill()
                proc.wait(timeout=10)

        # One uninterrupted run: the POS asks again about everything it was not told.
        proc = start(config)
        try:
            wait_online()
            sandbox.faults.clear()
            for op in till.untold(list(sub.messages)):
                till.send(op)
            sub.wait_for(lambda ms: not till.untold(ms), timeout=90)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
        card_end = leat.get_giftcard(CARD).amount_in_cents
        prepaid_end = leat.get_prepaid_balance(JANE)

    verbs = {o.verb for o in till.ops.values() if o.told}
    assert {"giftcard.pay", "prepaid.pay", "giftcard.reverse", "prepaid.reverse"} <= verbs
    assert card_end == card_start + till.effect("giftcard")
    assert prepaid_end == prepaid_start + till.effect("prepaid")
