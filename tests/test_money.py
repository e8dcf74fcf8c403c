"""The money verbs against the Leat sandbox over HTTP: giftcard.pay / giftcard.load /
prepaid.pay / prepaid.topup, Leat's refusals, offline within the deadline, lost answers
reconciled to exactly one transaction, request_id replays, and `cannot_tell` when two equal
payments cannot be told apart (never a retry). Every request and reply is schema-checked."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fakes import SHOP, unreachable_url
from test_commands import JANE, SAM, Device

from appliance import contract
from appliance.outbox import Outbox
from appliance.pos import money
from appliance.pos.ledger import Ledger
from appliance.pos.verbs import CannotTell, Context, NotApplied
from appliance.resolve import Resolver
from appliance.sandbox.seed import BUNDLED_SEED
from appliance.sandbox.server import LeatSandbox

GIFTCARD = "9c9c9c9c-0000-4f00-8000-000000000001"  # GC-8H2J4K6L8M, 25.00
GIFTCARD_HASH = "GC-8H2J4K6L8M"
EMPTY_CARD = "9c9c9c9c-0000-4f00-8000-000000000002"  # an unsold card: 0.00
EXPIRED_CARD = "9c9c9c9c-0000-4f00-8000-000000000003"
INACTIVE_CARD = "9c9c9c9c-0000-4f00-8000-0000000000ff"  # added to the seed below
JANE_CARD = "LC-7F3K9Q2M"  # Jane's prepaid balance: 20.00


@pytest.fixture
def sandbox() -> Iterator[LeatSandbox]:
    """The demo seed plus an inactive giftcard (Leat's 7010 in the sandbox)."""
    seed: dict[str, Any] = json.loads(BUNDLED_SEED.read_text(encoding="utf-8"))
    seed["giftcards"].append({
        "id": 41699, "uuid": INACTIVE_CARD, "hash": "GC-INACTIVE1", "type": "PHYSICAL",
        "active": False, "upgradeable": True, "amount_in_cents": 1000,
        "expiration_date": None, "program": "f0f0f0f0-0000-4e00-8000-000000000001"})
    with LeatSandbox(seed) as server:
        yield server


@pytest.fixture
def device(sandbox: LeatSandbox, tmp_path: Path) -> Iterator[Device]:
    dev = Device(sandbox, tmp_path / "state")
    try:
        yield dev
    finally:
        dev.close()


def pay(rid: str, amount: int = 1000, **card: Any) -> dict[str, Any]:
    return {"request_id": rid, "transaction": f"tx-{rid}", "amount_in_cents": amount,
            **(card or {"giftcard_uuid": GIFTCARD})}


def prepaid(rid: str, amount: int = 500, **who: Any) -> dict[str, Any]:
    return {"request_id": rid, "amount_in_cents": amount, **(who or {"contact_uuid": JANE})}


def card_balance(device: Device, uuid: str = GIFTCARD) -> int:
    return device.client.get_giftcard(uuid).amount_in_cents


def card_txs(device: Device, hash_: str = GIFTCARD_HASH) -> list[int]:
    return [t.amount_in_cents
            for t in device.client.list_giftcard_transactions(giftcard_hash=hash_,
                                                               newest_first=False)]


def prepaid_txs(device: Device, contact: str = JANE) -> list[int]:
    return [t.amount_in_cents
            for t in device.client.list_prepaid_transactions(contact_uuid=contact)]


def posts(device: Device, path: str) -> int:
    return device.calls("POST", path)


# ------------------------------------------------------------------------------ giftcard


def test_giftcard_pay_by_uuid_and_by_hash_replies_the_transaction_and_the_balance_left(
    device: Device,
) -> None:
    reply = device.send("giftcard.pay", **pay("g-1", 1000))
    assert reply["status"] == "ok", reply
    data = reply["data"]
    assert data["balance_in_cents"] == 1500 and data["amount_in_cents"] == 1000
    assert data["giftcard_uuid"] == GIFTCARD and data["transaction_uuid"] == data["uuid"]
    tx = device.client.get_giftcard_transaction(data["transaction_uuid"])
    assert (tx.amount_in_cents, tx.giftcard_uuid, tx.shop_uuid) == (-1000, GIFTCARD, SHOP)
    by_hash = device.send("giftcard.pay", **pay("g-2", 500, hash=GIFTCARD_HASH))
    assert by_hash["data"]["balance_in_cents"] == 1000
    assert by_hash["data"]["giftcard_uuid"] == GIFTCARD
    assert card_balance(device) == 1000 and card_txs(device) == [-1000, -500]


def test_giftcard_pay_names_leats_refusals_and_moves_nothing(device: Device) -> None:
    cases = [(pay("g-low", 2501), 5003), (pay("g-exp", 100, giftcard_uuid=EXPIRED_CARD), 5002),
             (pay("g-off", 100, giftcard_uuid=INACTIVE_CARD), 7010),
             (pay("g-none", 100, hash="GC-NOSUCH00"), 5001)]
    for body, code in cases:
        reply = device.send("giftcard.pay", **body)
        assert reply["status"] == "error" and reply["error"]["code"] == "leat_rejected", reply
        assert reply["error"]["leat_code"] == code
    assert card_balance(device) == 2500 and card_txs(device) == []
    assert card_balance(device, EXPIRED_CARD) == 1500
    assert card_balance(device, INACTIVE_CARD) == 1000


def test_giftcard_load_sells_an_unsold_card_once_and_refuses_a_sold_one(device: Device
                                                                       ) -> None:
    sold = device.send("giftcard.load", **pay("l-1", 2000, giftcard_uuid=EMPTY_CARD))
    assert sold["status"] == "ok" and sold["data"]["balance_in_cents"] == 2000
    again = device.send("giftcard.load", **pay("l-2", 2000, hash="GC-EMPTY0000"))
    assert again["error"]["code"] == "already_sold", again
    more = device.send("giftcard.load", **pay("l-3", 500, giftcard_uuid=EMPTY_CARD),
                       require_unsold=False)
    assert more["data"]["balance_in_cents"] == 2500
    over = device.send("giftcard.load", **pay("l-4", 48000, giftcard_uuid=EMPTY_CARD),
                       require_unsold=False)
    assert over["error"]["leat_code"] == 5008
    assert card_txs(device, "GC-EMPTY0000") == [2000, 500]
    assert device.send("giftcard.load", **pay("l-2", 2000, hash="GC-EMPTY0000"))[
        "error"]["code"] == "already_sold"  # refused before Leat: may come again


def test_giftcard_pay_answer_lost_is_one_transaction_and_the_pos_told_ok(device: Device
                                                                        ) -> None:
    device.sandbox.faults.set(drop_after_receive=True, only_paths=("/giftcard-transactions",),
                              times=1)
    reply = device.send("giftcard.pay", **pay("g-drop", 700))
    assert reply["status"] == "ok", reply
    assert reply["data"]["balance_in_cents"] == 1800
    assert posts(device, "/giftcard-transactions") == 1
    assert device.calls("GET", "/giftcard-transactions") >= 1
    assert card_txs(device) == [-700] and card_balance(device) == 1800
    tx = device.client.get_giftcard_transaction(reply["data"]["transaction_uuid"])
    assert tx.amount_in_cents == -700


def test_giftcard_load_answer_lost_is_reconciled(device: Device) -> None:
    device.sandbox.faults.set(drop_after_receive=True,
                              only_paths=("/giftcard-transactions",), times=1)
    reply = device.send("giftcard.load", **pay("l-drop", 1500, giftcard_uuid=EMPTY_CARD))
    assert reply["status"] == "ok" and reply["data"]["balance_in_cents"] == 1500, reply
    assert card_txs(device, "GC-EMPTY0000") == [1500]


def test_giftcard_pay_refused_unacted_is_not_applied_and_may_be_paid_again(device: Device
                                                                          ) -> None:
    device.sandbox.faults.set(status=502, only_paths=("/giftcard-transactions",), times=1)
    reply = device.send("giftcard.pay", **pay("g-502", 700))
    assert reply["error"]["code"] == "not_applied", reply
    assert card_txs(device) == []
    assert device.send("giftcard.pay", **pay("g-502b", 700))["status"] == "ok"
    assert card_txs(device) == [-700]


def test_sequential_lost_answers_of_equal_payments_each_find_their_own(device: Device) -> None:
    """The second lost payment sees the first one's transaction too, but that one is the
    first request's recorded outcome: not a candidate."""
    uuids = []
    for rid in ("g-s1", "g-s2"):
        device.sandbox.faults.set(drop_after_receive=True,
                                  only_paths=("/giftcard-transactions",), times=1)
        reply = device.send("giftcard.pay", **pay(rid, 300))
        assert reply["status"] == "ok", reply
        uuids.append(reply["data"]["uuid"])
    assert len(set(uuids)) == 2 and card_txs(device) == [-300, -300]


def test_same_request_id_100_times_is_one_transaction(device: Device) -> None:
    replies = [device.send("giftcard.pay", **pay("g-rep", 100)) for _ in range(100)]
    assert all(r["data"] == replies[0]["data"] for r in replies)
    replies = [device.send("prepaid.pay", **prepaid("p-rep", 100)) for _ in range(100)]
    assert all(r["data"] == replies[0]["data"] for r in replies)
    assert card_txs(device) == [-100] and prepaid_txs(device) == [-100]
    assert posts(device, "/giftcard-transactions") == 1
    assert posts(device, "/prepaid-transactions") == 1


# ------------------------------------------------------------------------------- prepaid


def test_prepaid_pay_and_topup_by_contact_and_by_card_reply_the_balance_after(
    device: Device,
) -> None:
    paid = device.send("prepaid.pay", **prepaid("p-1", 500))
    assert paid["status"] == "ok", paid
    assert paid["data"]["balance_in_cents"] == 1500 and paid["data"]["contact_uuid"] == JANE
    topped = device.send("prepaid.topup", **prepaid("p-2", 250, identifier=JANE_CARD))
    assert topped["data"]["balance_in_cents"] == 1750
    assert topped["data"]["transaction_uuid"] == topped["data"]["uuid"]
    assert device.client.get_prepaid_balance(JANE) == 1750
    assert prepaid_txs(device) == [250, -500]


def test_prepaid_pay_above_the_balance_and_unknown_cards_are_named(device: Device) -> None:
    low = device.send("prepaid.pay", **prepaid("p-low", 1, contact_uuid=SAM))
    assert low["error"]["code"] == "leat_rejected" and low["error"]["leat_code"] == 9999
    for rid, card, code in (("p-x", "LC-NOBODY999", 60003), ("p-y", "LC-INACTIVE9", 60004)):
        reply = device.send("prepaid.pay", **prepaid(rid, identifier=card))
        assert reply["error"]["leat_code"] == code, reply
    assert prepaid_txs(device, SAM) == []


def test_prepaid_answers_lost_are_one_transaction_each_and_the_pos_told_ok(device: Device
                                                                          ) -> None:
    for verb, rid, who, signed in (("prepaid.pay", "p-d1", {"contact_uuid": JANE}, -400),
                                   ("prepaid.topup", "p-d2", {"identifier": JANE_CARD}, 400)):
        device.sandbox.faults.set(drop_after_receive=True,
                                  only_paths=("/prepaid-transactions",), times=1)
        reply = device.send(verb, **prepaid(rid, 400, **who))
        assert reply["status"] == "ok", reply
        assert reply["data"]["balance_in_cents"] == (1600 if signed < 0 else 2000)
        assert reply["data"]["contact_uuid"] == JANE
    assert prepaid_txs(device) == [400, -400]
    assert posts(device, "/prepaid-transactions") == 2


def test_two_equal_prepaid_payments_with_lost_answers_are_cannot_tell_never_retried(
    device: Device,
) -> None:
    """Both payments happened, neither answer arrived, and the contact's list shows two
    equal transactions: neither request can claim one. Both end `unknown` / cannot_tell,
    final and published on events/command; Leat is asked to pay exactly twice."""
    device.sandbox.faults.set(drop_after_receive=True, only_paths=("/prepaid-transactions",))
    first = device.send("prepaid.pay", **prepaid("p-c1", 500))
    second = device.send("prepaid.pay", **prepaid("p-c2", 500))
    assert first["status"] == second["status"] == "unknown"
    assert first["error"]["code"] == "unknown"
    device.sandbox.faults.set()
    events = device.events.wait(2)
    for event in events:
        contract.validate("command_event", event)
        assert event["status"] == "unknown" and event["error"]["code"] == "cannot_tell"
        assert len(event["error"]["candidates"]) == 2
    assert {e["request_id"] for e in events} == {"p-c1", "p-c2"}
    recorded = device.send("prepaid.pay", **prepaid("p-c1", 500))
    assert recorded["status"] == "unknown" and recorded["error"]["code"] == "cannot_tell"
    assert set(recorded["error"]["candidates"]) == {
        t.uuid for t in device.client.list_prepaid_transactions(contact_uuid=JANE)}
    assert posts(device, "/prepaid-transactions") == 2
    assert prepaid_txs(device) == [-500, -500]
    assert len(device.events.sent) == 2  # final: nothing more is tried or published


def test_another_tills_equal_payment_makes_a_lost_answer_cannot_tell_at_once(
    sandbox: LeatSandbox, tmp_path: Path
) -> None:
    """Two tills (two ledgers) pay the same amount from one card within the clock skew;
    the second's answer is lost: it cannot tell which is its own and says so in the reply
    (and on events/command), never paying again."""
    till_a, till_b = Device(sandbox, tmp_path / "a"), Device(sandbox, tmp_path / "b")
    try:
        assert till_a.send("giftcard.pay", **pay("a-1", 400))["status"] == "ok"
        sandbox.faults.set(drop_after_receive=True, only_paths=("/giftcard-transactions",),
                           times=1)
        reply = till_b.send("giftcard.pay", **pay("b-1", 400))
        assert reply["status"] == "unknown" and reply["error"]["code"] == "cannot_tell", reply
        assert len(reply["error"]["candidates"]) == 2
        event = till_b.events.wait()[0]
        assert event["status"] == "unknown" and event["error"] == reply["error"]
        assert card_txs(till_b) == [-400, -400]
    finally:
        till_a.close()
        till_b.close()


# ----------------------------------------------------------------------- rules and input


def test_money_verbs_offline_are_named_within_the_deadline_and_may_be_sent_again(
    sandbox: LeatSandbox, tmp_path: Path
) -> None:
    dead = unreachable_url()  # Leat unreachable
    offline = Device(sandbox, tmp_path / "state", deadline_s=2.0, url=dead)
    bodies = {"giftcard.pay": pay("o-1"), "giftcard.load": pay("o-2", giftcard_uuid=EMPTY_CARD),
              "prepaid.pay": prepaid("o-3"), "prepaid.topup": prepaid("o-4")}
    try:
        for verb, body in bodies.items():
            started = time.monotonic()
            reply = offline.send(verb, **body)
            assert time.monotonic() - started < 2.5
            assert reply["error"]["code"] == "offline", (verb, reply)
    finally:
        offline.close()
    online = Device(sandbox, tmp_path / "state")  # the same ledger: nothing was recorded
    try:
        for verb, body in bodies.items():
            assert online.send(verb, **body)["status"] == "ok", verb
    finally:
        online.close()


def test_money_verbs_slower_than_the_deadline_are_unknown_then_settled_on_events(
    sandbox: LeatSandbox, tmp_path: Path
) -> None:
    dev = Device(sandbox, tmp_path / "state", deadline_s=0.3)
    try:
        sandbox.faults.set(latency_s=1.0, only_paths=("/prepaid-transactions",), times=1)
        reply = dev.send("prepaid.pay", **prepaid("p-slow", 300))
        assert reply["status"] == "unknown"
        event = dev.events.wait()[0]
        contract.validate("command_event", event)
        assert event["status"] == "ok" and event["data"]["balance_in_cents"] == 1700
        assert dev.send("prepaid.pay", **prepaid("p-slow", 300))["data"] == event["data"]
        assert posts(dev, "/prepaid-transactions") == 1
    finally:
        dev.close()


@pytest.mark.parametrize("body", [
    {"amount_in_cents": 0}, {"amount_in_cents": -100}, {"amount_in_cents": 10_000_001},
    {"amount_in_cents": 1.5}, {"amount_in_cents": "100"}, {"amount_in_cents": True},
    {"giftcard_uuid": GIFTCARD, "hash": GIFTCARD_HASH}, {"giftcard_uuid": None},
    {"hash": "has space"}, {"hash": "x" * 65}, {"contact_uuid": JANE},
])
def test_giftcard_pay_bounds_its_input(device: Device, body: dict[str, Any]) -> None:
    request = {**pay("bad"), **body}
    if body.get("giftcard_uuid") is None and "giftcard_uuid" in body:
        request.pop("giftcard_uuid")
    if "hash" in body and "giftcard_uuid" not in body:
        request.pop("giftcard_uuid")
    reply = device.send("giftcard.pay", bad=True, **request)
    if body == {"contact_uuid": JANE}:  # kept with the record, not sent to Leat
        assert reply["status"] == "ok"
        return
    assert reply["error"]["code"] == "invalid_request", (body, reply)
    assert card_txs(device) == []


def test_prepaid_needs_exactly_one_of_contact_and_card(device: Device) -> None:
    neither: dict[str, Any] = {}
    for who in (neither, {"contact_uuid": JANE, "identifier": JANE_CARD}):
        reply = device.send("prepaid.pay", bad=True, request_id="x", amount_in_cents=1, **who)
        assert reply["error"]["code"] == "invalid_request"
    assert prepaid_txs(device) == []



def test_money_calls_the_device_stopped_during_are_settled_at_the_next_start(
    sandbox: LeatSandbox, tmp_path: Path
) -> None:
    """The device died after recording two payments as running: Leat booked the giftcard
    one, never saw the prepaid one. At the next start both are settled from Leat's lists and
    published; neither is sent again."""
    first = Device(sandbox, tmp_path / "state")
    try:
        paid = first.client.create_giftcard_transaction(giftcard_uuid=GIFTCARD,
                                                        amount_in_cents=-900)
        ledger = Ledger(tmp_path / "state" / "commands.sqlite3")
        body = pay("g-crash", 900)
        ledger.begin("g-crash", "giftcard.pay", {k: v for k, v in body.items()
                                                 if k != "request_id"}, "tx-g-crash")
        ledger.begin("p-crash", "prepaid.pay", {"contact_uuid": JANE, "amount_in_cents": 300},
                     None)
        ledger.close()
    finally:
        first.close()
    second = Device(sandbox, tmp_path / "state")
    try:
        second.intake.start()  # resumes what the ledger left unsettled
        events = {e["request_id"]: e for e in second.events.wait(2)}
        assert events["g-crash"]["status"] == "ok"
        assert events["g-crash"]["data"]["uuid"] == paid.uuid
        assert events["g-crash"]["data"]["balance_in_cents"] == 1600
        assert events["p-crash"]["status"] == "failed"
        assert events["p-crash"]["error"]["code"] == "not_applied"
        for event in events.values():
            contract.validate("command_event", event)
        assert card_txs(second) == [-900] and prepaid_txs(second) == []
        assert posts(second, "/giftcard-transactions") == 1  # the one made before the crash
    finally:
        second.intake.stop()
        second.close()


def test_a_listed_transaction_without_uuid_is_never_taken_for_not_applied(
    sandbox: LeatSandbox, tmp_path: Path
) -> None:
    """Leat's list example shows items with `uuid: null`: such a match is a transaction that
    happened, so the reconciler says cannot_tell (never not_applied, never a guess)."""
    dev = Device(sandbox, tmp_path / "state")
    try:
        item: dict[str, Any] = {"id": 7, "uuid": None, "amount_in_cents": -800, "type": "STANDARD",
                "settled": False, "card": {"id": 41651, "uuid": None},
                "shop": {"id": 1, "uuid": SHOP, "name": "Demo Coffee Bar"},
                "settlements": [], "created_at": datetime.now(UTC).isoformat()}
        sandbox.faults.set(status=200, body={"data": [item], "meta": {
            "page": 1, "limit": 100, "viewing_from": 1, "viewing_to": 1, "last_page": 1,
            "total": 1}}, only_paths=("/giftcard-transactions",))
        ctx = Context(dev.client, Resolver(dev.client, shop_uuid=SHOP),
                      Ledger(tmp_path / "state" / "commands.sqlite3"), _no_outbox,
                      datetime.now(UTC))
        with pytest.raises(CannotTell) as unsure:
            money.reconcile_giftcard_pay(ctx, {"giftcard_uuid": GIFTCARD,
                                               "amount_in_cents": 800})
        assert unsure.value.candidates == [] and unsure.value.unnamed == 1
        sandbox.faults.set(status=200, body={"data": [], "meta": {}},
                           only_paths=("/giftcard-transactions",))
        with pytest.raises(NotApplied):
            money.reconcile_giftcard_pay(ctx, {"giftcard_uuid": GIFTCARD,
                                               "amount_in_cents": 800})
        ctx.ledger.close()
    finally:
        dev.close()


def _no_outbox() -> Outbox:
    raise AssertionError("the money reconcilers use no outbox")
