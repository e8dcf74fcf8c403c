"""giftcard.reverse and prepaid.reverse through the whole device (`assembly.build`) over a real
Mosquitto, against the Leat sandbox over HTTP: accepted, run exactly once by the durable
outbox, the final outcome with the balance after on `events/command`; a giftcard's non-last
transaction refused on arrival, or `failed` with Leat's 55025 when one slips in later; Leat
down on arrival; Leat's answer lost.

The payments being reversed are made by the test's own Leat client (as another till would).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from broker import Mosquitto
from test_counter_flows import JANE, Pos, running_device
from test_daemon import BASE

from appliance import contract
from appliance.commands_durable import same_giftcard_tx
from appliance.leat.client import LeatClient
from appliance.leat.payments import GiftcardTransaction, ListedGiftcardTransaction
from appliance.outbox import Outbox
from appliance.outbox_items import Kind
from appliance.samples import DEMO_SHOP_UUID
from appliance.sandbox.server import LeatSandbox

CARD = "9c9c9c9c-0000-4f00-8000-000000000001"  # GC-8H2J4K6L8M, 25.00 in the seed
CARD_HASH = "GC-8H2J4K6L8M"
CARD_BALANCE = 2500
JANE_PREPAID = 2000


@pytest.fixture
def till(broker: Mosquitto, tmp_path: Path) -> Iterator[tuple[Pos, LeatSandbox, LeatClient]]:
    """The running device, its POS, and another till's Leat client on the same sandbox."""
    with running_device(broker, tmp_path) as (pos, sandbox), LeatClient(
        sandbox.url, token=sandbox.personal_access_token, shop_uuid=DEMO_SHOP_UUID,
        timeout_s=5.0,
    ) as leat:
        yield pos, sandbox, leat


def pay_card(leat: LeatClient, cents: int) -> str:
    return leat.create_giftcard_transaction(giftcard_uuid=CARD, amount_in_cents=-cents).uuid


def pay_prepaid(leat: LeatClient, cents: int) -> str:
    return leat.create_prepaid_transaction(contact_uuid=JANE, amount_in_cents=-cents).uuid


def card_txs(leat: LeatClient) -> list[int]:
    """The card's transaction amounts, oldest first."""
    return [t.amount_in_cents for t in leat.list_giftcard_transactions(
        giftcard_hash=CARD_HASH, newest_first=False)]


def prepaid_txs(leat: LeatClient) -> list[int]:
    """Jane's prepaid transaction amounts, oldest first."""
    return [t.amount_in_cents for t in reversed(leat.list_prepaid_transactions(
        contact_uuid=JANE))]


def outcomes(pos: Pos, request_id: str, count: int) -> list[dict[str, Any]]:
    """The first `count` events/command of `request_id`, each checked against the contract."""
    def mine(ms: Sequence[mqtt.MQTTMessage]) -> list[dict[str, Any]]:
        return [p for p in (json.loads(m.payload) for m in ms
                            if m.topic == f"{BASE}/events/command")
                if p["request_id"] == request_id]

    found = mine(pos._sub.wait_for(  # the POS's own subscription
        lambda ms: len(mine(ms)) >= count, timeout=30))[:count]
    for event in found:
        contract.validate("command_event", event)
    return found


def reverse_calls(sandbox: LeatSandbox, tx: str) -> int:
    """Reversal requests of `tx` Leat answered 2xx."""
    return sum(1 for m, p, status in sandbox.answers()
               if m == "POST" and p.endswith(f"/{tx}/reverse") and status < 300)


# --------------------------------------------------------------------------- giftcard


def test_giftcard_reverse_gives_the_payment_back_once_with_the_balance_after(
    till: tuple[Pos, LeatSandbox, LeatClient],
) -> None:
    pos, sandbox, leat = till
    tx = pay_card(leat, 1000)
    reply = pos.send("giftcard.reverse", request_id="gr-1", transaction_uuid=tx)
    assert reply["status"] == "accepted" and reply["data"]["duplicate"] is False
    event = pos.outcome("gr-1")
    assert (event["status"], event["verb"]) == ("ok", "giftcard.reverse")
    data = event["data"]
    assert (data["transaction_uuid"], data["giftcard_uuid"], data["amount_in_cents"],
            data["balance_in_cents"], data["already"]) == (tx, CARD, 1000, CARD_BALANCE, False)
    assert leat.get_giftcard(CARD).amount_in_cents == CARD_BALANCE
    # The same request_id again: the stored command, not checked again (the reversal is now
    # the card's last transaction), never sent twice.
    again = pos.send("giftcard.reverse", request_id="gr-1", transaction_uuid=tx)
    assert again["status"] == "accepted" and again["data"]["duplicate"] is True
    # ...and its outcome published again (one lost with a crash reaches the POS so)
    [first, second] = outcomes(pos, "gr-1", 2)
    assert (second["status"], second["data"]) == (first["status"], first["data"])
    assert second["event_id"] != first["event_id"]
    assert card_txs(leat) == [-1000, 1000]
    assert reverse_calls(sandbox, tx) == 1


def test_giftcard_reverse_of_a_non_last_transaction_is_refused_on_arrival(
    till: tuple[Pos, LeatSandbox, LeatClient], tmp_path: Path,
) -> None:
    pos, sandbox, leat = till
    first, _ = pay_card(leat, 500), pay_card(leat, 300)
    reply = pos.send("giftcard.reverse", request_id="gr-old", transaction_uuid=first)
    assert reply["status"] == "error"
    assert reply["error"]["code"] == "not_last_transaction"
    with Outbox(tmp_path / "state" / "outbox.sqlite3") as outbox:
        assert outbox.find(Kind.COMMAND, "gr-old") is None  # nothing stored
    assert reverse_calls(sandbox, first) == 0
    assert leat.get_giftcard(CARD).amount_in_cents == CARD_BALANCE - 800
    # a card or hash that is not the transaction's is refused, not stored
    other = "9c9c9c9c-0000-4f00-8000-000000000006"
    wrong = pos.send("giftcard.reverse", request_id="gr-wrong", transaction_uuid=first,
                     giftcard_uuid=other)
    assert wrong["error"]["code"] == "invalid_request"
    last = leat.list_giftcard_transactions(giftcard_hash=CARD_HASH, per_page=1)[0].uuid
    assert last is not None
    wrong = pos.send("giftcard.reverse", request_id="gr-hash", transaction_uuid=last,
                     hash="2026112200017")
    assert wrong["error"]["code"] == "invalid_request"
    # a transaction Leat does not know is refused with Leat's own code
    unknown = pos.send("giftcard.reverse", request_id="gr-unknown",
                       transaction_uuid="00000000-0000-4000-8000-000000000000")
    assert (unknown["error"]["code"], unknown["error"]["leat_code"]) == ("leat_rejected", 5010)


def test_giftcard_reverse_fails_with_55025_when_a_transaction_slips_in_before_it_is_sent(
    till: tuple[Pos, LeatSandbox, LeatClient],
) -> None:
    pos, sandbox, leat = till
    tx = pay_card(leat, 700)
    # The device cannot read or reverse the transaction (Leat down for it), the other till
    # can still pay: accepted on arrival, durable, Leat decides when it is sent.
    sandbox.faults.set(outage=True, only_paths=("/giftcard-transactions/",))
    reply = pos.send("giftcard.reverse", request_id="gr-slip", transaction_uuid=tx)
    assert reply["status"] == "accepted"
    pay_card(leat, 200)  # slips in
    sandbox.faults.clear()
    event = pos.outcome("gr-slip")
    assert event["status"] == "failed"
    assert (event["error"]["code"], event["error"]["leat_code"]) == ("leat_rejected", 55025)
    assert leat.get_giftcard(CARD).amount_in_cents == CARD_BALANCE - 900  # nothing given back
    assert card_txs(leat) == [-700, -200]


def test_giftcard_reverse_offline_on_arrival_is_delivered_once_when_leat_is_back(
    till: tuple[Pos, LeatSandbox, LeatClient],
) -> None:
    pos, sandbox, leat = till
    tx = pay_card(leat, 1200)
    sandbox.faults.set(outage=True)
    reply = pos.send("giftcard.reverse", request_id="gr-off", transaction_uuid=tx)
    assert reply["status"] == "accepted"
    sandbox.faults.clear()
    event = pos.outcome("gr-off")
    assert event["status"] == "ok" and event["data"]["balance_in_cents"] == CARD_BALANCE
    assert card_txs(leat) == [-1200, 1200]
    assert reverse_calls(sandbox, tx) == 1


def test_giftcard_reverse_whose_answer_is_lost_is_settled_from_the_card_never_sent_twice(
    till: tuple[Pos, LeatSandbox, LeatClient],
) -> None:
    pos, sandbox, leat = till
    tx = pay_card(leat, 400)
    # Leat reverses it, then the connection drops: the forwarder cannot know it happened.
    sandbox.faults.set(drop_after_receive=True, only_paths=(f"/giftcard-transactions/{tx}/",))
    reply = pos.send("giftcard.reverse", request_id="gr-lost", transaction_uuid=tx)
    assert reply["status"] == "accepted"
    event = pos.outcome("gr-lost")
    sandbox.faults.clear()
    assert event["status"] == "ok"
    assert event["data"]["already"] is True  # found in the card's transactions
    assert (event["data"]["amount_in_cents"], event["data"]["balance_in_cents"]) == (
        400, CARD_BALANCE)
    assert card_txs(leat) == [-400, 400]  # one reversal
    assert sum(1 for m, p in sandbox.requests()
               if m == "POST" and p.endswith(f"/{tx}/reverse")) == 1


# ---------------------------------------------------------------------------- prepaid


def test_prepaid_reverse_gives_the_payment_back_once_with_the_balance_after(
    till: tuple[Pos, LeatSandbox, LeatClient],
) -> None:
    pos, sandbox, leat = till
    tx = pay_prepaid(leat, 650)
    reply = pos.send("prepaid.reverse", request_id="pr-1", transaction_uuid=tx,
                     contact_uuid=JANE)
    assert reply["status"] == "accepted"
    event = pos.outcome("pr-1")
    assert (event["status"], event["verb"]) == ("ok", "prepaid.reverse")
    assert (event["data"]["transaction_uuid"], event["data"]["amount_in_cents"],
            event["data"]["balance_in_cents"]) == (tx, 650, JANE_PREPAID)
    assert leat.get_prepaid_balance(JANE) == JANE_PREPAID
    assert reverse_calls(sandbox, tx) == 1
    # reversing it again is Leat's refusal, final (ASSUMPTION: 1003, docs/sandbox.md)
    pos.send("prepaid.reverse", request_id="pr-2", transaction_uuid=tx)
    failed = pos.outcome("pr-2")
    assert failed["status"] == "failed" and failed["error"]["leat_code"] == 1003
    pos.send("prepaid.reverse", request_id="pr-2", transaction_uuid=tx)  # asked again
    again = outcomes(pos, "pr-2", 2)[1]
    assert (again["status"], again["error"]) == ("failed", failed["error"])
    assert prepaid_txs(leat) == [-650, 650]
    assert leat.get_prepaid_balance(JANE) == JANE_PREPAID


def test_prepaid_reverse_offline_on_arrival_is_delivered_once_when_leat_is_back(
    till: tuple[Pos, LeatSandbox, LeatClient],
) -> None:
    pos, sandbox, leat = till
    tx = pay_prepaid(leat, 300)
    sandbox.faults.set(outage=True)
    reply = pos.send("prepaid.reverse", request_id="pr-off", transaction_uuid=tx)
    assert reply["status"] == "accepted"
    sandbox.faults.clear()
    event = pos.outcome("pr-off")
    assert event["status"] == "ok" and event["data"]["balance_in_cents"] == JANE_PREPAID
    assert prepaid_txs(leat) == [-300, 300]
    assert reverse_calls(sandbox, tx) == 1


def test_prepaid_reverse_whose_answer_is_lost_is_settled_from_the_contact_never_sent_twice(
    till: tuple[Pos, LeatSandbox, LeatClient],
) -> None:
    pos, sandbox, leat = till
    tx = pay_prepaid(leat, 250)
    sandbox.faults.set(drop_after_receive=True, only_paths=(f"/prepaid-transactions/{tx}/",))
    reply = pos.send("prepaid.reverse", request_id="pr-lost", transaction_uuid=tx,
                     contact_uuid=JANE)
    assert reply["status"] == "accepted"
    event = pos.outcome("pr-lost")
    sandbox.faults.clear()
    assert event["status"] == "ok" and event["data"]["already"] is True
    assert event["data"]["balance_in_cents"] == JANE_PREPAID
    assert prepaid_txs(leat) == [-250, 250]  # one reversal
    assert sum(1 for m, p in sandbox.requests()
               if m == "POST" and p.endswith(f"/{tx}/reverse")) == 1


def test_prepaid_reverse_of_this_devices_payment_needs_only_its_uuid(
    till: tuple[Pos, LeatSandbox, LeatClient],
) -> None:
    pos, sandbox, leat = till
    # paid through the device by the scanned card: the device recorded the contact
    paid = pos.send("prepaid.pay", request_id="pp-1", identifier="LC-7F3K9Q2M",
                    amount_in_cents=420)
    assert paid["status"] == "ok"
    tx = paid["data"]["transaction_uuid"]
    sandbox.faults.set(drop_after_receive=True, only_paths=(f"/prepaid-transactions/{tx}/",))
    reply = pos.send("prepaid.reverse", request_id="pr-own", transaction_uuid=tx)
    assert reply["status"] == "accepted"
    event = pos.outcome("pr-own")
    sandbox.faults.clear()
    # the lost answer was settled from the contact's transactions, filled in by the device
    assert (event["status"], event["data"]["already"], event["data"]["contact_uuid"]) == (
        "ok", True, JANE)
    assert event["data"]["balance_in_cents"] == JANE_PREPAID
    assert prepaid_txs(leat) == [-420, 420]


def test_a_listed_giftcard_transaction_without_uuid_is_matched_by_leats_id() -> None:
    # Leat's own List Giftcard Transactions example shows `uuid: null` on every item
    tx = GiftcardTransaction(uuid="t-1", amount_in_cents=-500, giftcard_uuid=CARD,
                             shop_uuid=None, type="STANDARD", created_at=None, id=2271)

    def listed(uuid: str | None, id_: int | None) -> ListedGiftcardTransaction:
        return ListedGiftcardTransaction(id=id_, uuid=uuid, amount_in_cents=-500,
                                         giftcard_uuid=None, shop_uuid=None, settled=False,
                                         created_at=None)

    assert same_giftcard_tx(listed(None, 2271), tx)
    assert same_giftcard_tx(listed("t-1", None), tx)
    assert not same_giftcard_tx(listed(None, 2272), tx)
    assert not same_giftcard_tx(listed("t-2", 2271), tx)  # a uuid on both decides
    assert not same_giftcard_tx(listed(None, None), tx)
