"""POS commands against the Leat sandbox over HTTP: each verb, Leat's rejections, offline
within the deadline, request_id idempotency, expiry, and ambiguous outcomes reconciled,
never applied twice. Every reply is validated against the response schema, every request
against its own."""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fakes import SHOP, Clock, unreachable_url
from test_forwarder import drain_all
from test_orders import Replies, order_body

from appliance import contract
from appliance.bus import Message
from appliance.forwarder import Forwarder
from appliance.leat.client import LeatClient
from appliance.outbox import Outbox
from appliance.outbox_items import Kind, State
from appliance.pos import runner as runner_module
from appliance.pos.commands import VERBS, rules_table
from appliance.pos.intake import OrderRequests
from appliance.pos.ledger import Conflict, Ledger
from appliance.pos.runner import Commands
from appliance.sandbox.server import LeatSandbox

BASE = "leat-scanner/till-9"
JANE = "c0a80101-1a2b-4c3d-8e4f-000000000001"  # 1250 points
SAM = "c0a80101-1a2b-4c3d-8e4f-000000000002"  # 40 points
COFFEE = "e1d2c3b4-0000-4a00-9000-000000000011"  # 50 points
LUNCH = "e1d2c3b4-0000-4a00-9000-000000000013"  # 2000 points
JANE_COLLECTABLE = "a5b6c7d8-0000-4b00-8000-000000000001"
ROOT = Path(__file__).resolve().parent.parent


class Events:
    """Collects events/command as the bus would publish them."""

    def __init__(self) -> None:
        self.sent: list[Mapping[str, Any]] = []
        self.arrived = threading.Condition()

    def __call__(self, name: str, payload: Mapping[str, Any]) -> None:
        assert name == "command"
        with self.arrived:
            self.sent.append(payload)
            self.arrived.notify_all()

    def wait(self, count: int = 1, timeout: float = 10.0) -> list[Mapping[str, Any]]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.sent) >= count, timeout)
            return list(self.sent)


class Device:
    """The request intake with commands, over one LeatClient to the sandbox."""

    def __init__(self, sandbox: LeatSandbox, state: Path, deadline_s: float = 5.0,
                 url: str | None = None) -> None:
        self.sandbox = sandbox
        self.outbox = state / "outbox.sqlite3"
        Outbox.prepare(self.outbox)
        Ledger.prepare(state / "commands.sqlite3")
        self.client = LeatClient(url or sandbox.url, token=sandbox.personal_access_token,
                                 shop_uuid=SHOP, timeout_s=2.0)
        self.events = Events()
        self.commands = Commands(
            self.client, state / "commands.sqlite3", self.outbox, self.events,
            device_id="till-9", deadline_s=deadline_s, reconcile_delays_s=(0.2, 0.5, 1.0),
        )
        self.intake = OrderRequests(self.outbox, Replies(), base_topic=BASE, shop_uuid=SHOP,
                                    commands=self.commands)

    def send(self, verb: str, message: Message | None = None, *, bad: bool = False,
             **fields: Any) -> dict[str, Any]:
        """One command; the request (unless `bad`) and the reply are checked against their
        schemas."""
        if not bad:
            contract.validate(VERBS[verb].schema, fields)
        reply = self.intake.handle(verb, json.dumps(fields).encode(), message)
        contract.validate_reply(verb, reply)
        return reply

    def calls(self, method: str, path: str) -> int:
        """How many times the sandbox was asked `method path` (path after the API prefix)."""
        return sum(1 for m, p in self.sandbox.requests()
                   if m == method and p.split("?")[0].endswith(path))

    def balance(self, contact: str) -> int:
        return self.client.get_credit_balance(contact)

    def close(self) -> None:
        self.commands.close()
        self.client.close()


@pytest.fixture
def device(sandbox: LeatSandbox, tmp_path: Path) -> Iterator[Device]:
    dev = Device(sandbox, tmp_path / "state")
    try:
        yield dev
    finally:
        dev.close()


def redeem(rid: str, contact: str = JANE, reward: str = COFFEE) -> dict[str, Any]:
    return {"request_id": rid, "transaction": f"tx-{rid}", "contact_uuid": contact,
            "reward_uuid": reward}


# ------------------------------------------------------------------------------ reads


def test_contact_lookup_by_card_email_and_uuid_answers_the_identification_blocks(
    device: Device,
) -> None:
    by_card = device.send("contact.lookup", request_id="l-1", identifier="LC-7F3K9Q2M")
    assert by_card["status"] == "ok" and by_card["request_id"] == "l-1"
    contact = by_card["data"]["contact"]
    assert contact["uuid"] == JANE and contact["points"] == 1250
    assert any(r["uuid"] == COFFEE and r["affordable"] for r in contact["rewards"])
    by_mail = device.send("contact.lookup", request_id="l-2", email="jane.doe@example.com")
    assert by_mail["data"]["contact"] == contact
    by_uuid = device.send("contact.lookup", request_id="l-3", contact_uuid=JANE)
    assert by_uuid["data"]["contact"] == contact
    unknown = device.send("contact.lookup", request_id="l-4", identifier="LC-NOBODY999")
    assert unknown["status"] == "ok" and unknown["data"]["status"] == "unknown"
    assert unknown["data"]["reason"]["code"] == 60003


def test_a_read_repeated_gets_its_recorded_reply_also_after_a_restart(
    sandbox: LeatSandbox, tmp_path: Path,
) -> None:
    dev = Device(sandbox, tmp_path / "state")
    try:
        first = dev.send("contact.lookup", request_id="l-r", contact_uuid=JANE)
        again = dev.send("contact.lookup", request_id="l-r", contact_uuid=JANE)
        assert again == first and dev.calls("GET", f"/contacts/{JANE}") == 1
        other = dev.send("contact.lookup", request_id="l-r", contact_uuid=SAM)
        assert other["error"]["code"] == "conflict"
    finally:
        dev.close()  # the reads' outcomes held are written by now
    dev = Device(sandbox, tmp_path / "state")
    try:
        assert dev.send("contact.lookup", request_id="l-r", contact_uuid=JANE) == first
        assert dev.calls("GET", f"/contacts/{JANE}") == 1
    finally:
        dev.close()


def test_a_read_writes_nothing_before_its_call_yet_a_duplicate_is_busy(tmp_path: Path) -> None:
    path = tmp_path / "commands.sqlite3"
    Ledger.prepare(path)
    ledger = Ledger(path)
    disk = sqlite3.connect(path)
    try:
        assert ledger.begin("q-1", "order.get", {"external_identifier": "A"}, None,
                            durable=False) is None
        assert disk.execute("SELECT count(*) FROM commands").fetchone() == (0,)
        running = ledger.begin("q-1", "order.get", {"external_identifier": "A"}, None,
                               durable=False)
        assert running is not None and running.response is None  # -> busy
        with pytest.raises(Conflict):
            ledger.begin("q-1", "order.get", {"external_identifier": "B"}, None, durable=False)
        with pytest.raises(Conflict):  # a value-taking command may not take its request_id
            ledger.begin("q-1", "voucher.lock", {"code": "X"}, None)
        ledger.finish("q-1", {"status": "ok", "data": {"state": "queued"}})
        held = ledger.begin("q-1", "order.get", {"external_identifier": "A"}, None,
                            durable=False)
        assert held is not None and held.response == {"status": "ok",
                                                      "data": {"state": "queued"}}
    finally:
        ledger.close()
    assert disk.execute("SELECT state FROM commands WHERE request_id = 'q-1'"
                        ).fetchone() == ("done",)
    disk.close()


def test_contact_lookup_create_finds_or_creates_by_email(device: Device) -> None:
    missing = device.send("contact.lookup", request_id="c-1", email="new@example.com")
    assert missing["data"]["status"] == "unknown"
    created = device.send("contact.lookup", request_id="c-2", email="new@example.com",
                          create=True)
    assert created["data"]["status"] == "ok"
    assert created["data"]["contact"]["points"] == 0
    refused = device.send("contact.lookup", bad=True, request_id="c-3", contact_uuid=JANE,
                          create=True)
    assert refused["error"]["code"] == "invalid_request"


def test_voucher_validate_names_the_voucher_and_its_own_contact(device: Device) -> None:
    reply = device.send("voucher.validate", request_id="v-1", code="WELCOME-JANE")
    assert reply["data"]["status"] == "ok" and reply["data"]["voucher"]["valid"] is True
    assert reply["data"]["voucher"]["contact_uuid"] == JANE
    assert device.calls("GET", "/vouchers/find") == 1
    used = device.send("voucher.validate", request_id="v-2", code="USED-2025")
    assert used["data"]["status"] == "redeemed" and used["data"]["voucher"]["valid"] is False


def test_order_get_reports_the_outbox_state_then_leat(device: Device) -> None:
    nowhere = device.send("order.get", request_id="o-1", external_identifier="pos-77")
    assert nowhere["data"]["source"] == "leat" and nowhere["data"]["state"] == "unknown"
    stored = device.intake.handle("order.create", json.dumps(
        {"customer": {"contact_uuid": JANE}, "order": order_body("pos-77")}).encode())
    assert stored["status"] == "ok"
    queued = device.send("order.get", request_id="o-2", external_identifier="pos-77")
    assert queued["data"]["source"] == "device" and queued["data"]["state"] == "queued"


def test_points_preview_by_amount_and_by_basket(device: Device) -> None:
    by_amount = device.send("points.preview", request_id="p-1", unit_value=12.5)
    assert by_amount["status"] == "ok" and by_amount["data"]["points"] > 0
    basket = device.send("points.preview", request_id="p-2", order=order_body("sim-1"),
                         contact_uuid=JANE)
    assert basket["status"] == "ok" and isinstance(basket["data"]["points"], int)
    assert device.sandbox.orders() == []  # a preview stores nothing


# ------------------------------------------------------------------------ value-taking


def test_reward_redeem_spends_points_once_per_request_id(device: Device) -> None:
    first = device.send("reward.redeem", **redeem("r-1"))
    assert first["status"] == "ok", first
    assert first["data"]["points"] == 1200 and first["data"]["credits"] == -50
    again = device.send("reward.redeem", **redeem("r-1"))
    assert again["data"] == first["data"] and again["status"] == "ok"
    assert device.calls("POST", "/reward-receptions") == 1
    assert device.balance(JANE) == 1200
    other = device.send("reward.redeem", **redeem("r-1", reward=LUNCH))
    assert other["error"]["code"] == "conflict"
    assert device.calls("POST", "/reward-receptions") == 1


@pytest.mark.parametrize(
    ("contact", "reward", "leat_code"),
    [(SAM, COFFEE, 1017), (JANE, LUNCH, 1017)],
)
def test_reward_redeem_names_leats_rejection(
    device: Device, contact: str, reward: str, leat_code: int
) -> None:
    reply = device.send("reward.redeem", **redeem("r-x", contact, reward))
    assert reply["status"] == "error"
    assert reply["error"]["code"] == "leat_rejected"
    assert reply["error"]["leat_code"] == leat_code


def test_reward_redeem_names_no_stock_and_the_claim_limit(tmp_path: Path) -> None:
    seed = json.loads((ROOT / "appliance" / "sandbox" / "seed.json").read_text("utf-8"))
    for reward in seed["rewards"]:
        if reward["uuid"] == LUNCH:
            reward.update(required_credits=10, stock=0)
        if reward["uuid"] == COFFEE:
            reward["claim_limit"] = 1
    with LeatSandbox(seed) as server:
        dev = Device(server, tmp_path / "state")
        try:
            empty = dev.send("reward.redeem", **redeem("s-1", reward=LUNCH))
            assert empty["error"]["leat_code"] == 1018
            assert dev.send("reward.redeem", **redeem("s-2"))["status"] == "ok"
            limit = dev.send("reward.redeem", **redeem("s-3"))
            assert limit["error"]["code"] == "leat_rejected"
            assert limit["error"]["leat_code"] == 1019
            assert dev.balance(JANE) == 1200
        finally:
            dev.close()


def test_reward_redeem_offline_is_named_within_the_deadline_and_may_be_sent_again(
    sandbox: LeatSandbox, tmp_path: Path
) -> None:
    dead = unreachable_url()  # Leat unreachable
    offline = Device(sandbox, tmp_path / "state", url=dead)
    try:
        started = time.monotonic()
        reply = offline.send("reward.redeem", **redeem("r-off"))
        assert time.monotonic() - started < 5.0
        assert reply["error"]["code"] == "offline"
    finally:
        offline.close()
    online = Device(sandbox, tmp_path / "state")  # the same ledger: nothing was recorded
    try:
        assert online.send("reward.redeem", **redeem("r-off"))["status"] == "ok"
        assert online.balance(JANE) == 1200
    finally:
        online.close()


def test_reward_redeem_when_leat_resets_every_connection_is_unknown_then_not_applied(
    device: Device,
) -> None:
    device.sandbox.faults.set(outage=True)  # reset before reading: ambiguous to a client
    reply = device.send("reward.redeem", **redeem("r-reset"))
    assert reply["status"] == "unknown"
    device.sandbox.faults.set()
    event = device.events.wait()[0]
    assert event["status"] == "failed" and event["error"]["code"] == "not_applied"
    assert device.balance(JANE) == 1250


def test_value_taking_calls_are_refused_offline_while_too_many_are_being_reconciled(
    device: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Leat losing every answer: each call becomes a reconciliation of its own (a thread,
    # minutes long); past the limit nothing more is sent, so they stay bounded
    monkeypatch.setattr(runner_module, "MAX_UNSETTLED", 2)
    device.sandbox.faults.set(outage=True)
    for n in range(2):
        assert device.send("reward.redeem", **redeem(f"r-lost-{n}"))["status"] == "unknown"
    refused = device.send("reward.redeem", **redeem("r-lost-2"))
    assert refused["error"]["code"] == "offline" and "reconciled" in refused["error"]["message"]
    again = device.send("reward.redeem", **redeem("r-lost-0"))  # one of them: its answer
    assert again["status"] == "unknown" or again["error"]["code"] == "busy", again
    read = device.send("contact.lookup", request_id="c-still", contact_uuid=JANE)
    assert read["error"]["code"] == "offline"  # reads are not held back (Leat is down here)
    device.sandbox.faults.set()
    assert len(device.events.wait(2)) == 2  # both settle (not applied); then it takes again
    assert device.send("reward.redeem", **redeem("r-lost-2"))["status"] == "ok"
    assert device.balance(JANE) == 1200


def test_reward_redeem_slower_than_the_deadline_is_unknown_then_settled_on_events(
    sandbox: LeatSandbox, tmp_path: Path
) -> None:
    dev = Device(sandbox, tmp_path / "state", deadline_s=0.3)
    try:
        sandbox.faults.set(latency_s=1.0, only_paths=("/reward-receptions",), times=1)
        reply = dev.send("reward.redeem", **redeem("r-slow"))
        assert reply["status"] == "unknown" and reply["error"]["code"] == "unknown"
        event = dev.events.wait()[0]
        assert event["status"] == "ok" and event["request_id"] == "r-slow"
        assert event["transaction"] == "tx-r-slow" and event["data"]["points"] == 1200
        if "command_event" in contract.names():
            contract.validate("command_event", event)
        settled = dev.send("reward.redeem", **redeem("r-slow"))
        assert settled["status"] == "ok" and settled["data"] == event["data"]
        assert dev.calls("POST", "/reward-receptions") == 1
    finally:
        dev.close()


def test_reward_redeem_answer_lost_is_reconciled_never_applied_twice(device: Device) -> None:
    device.sandbox.faults.set(drop_after_receive=True, only_paths=("/reward-receptions",),
                              times=1)
    reply = device.send("reward.redeem", **redeem("r-drop"))
    assert reply["status"] == "ok", reply
    assert reply["data"]["points"] == 1200
    assert device.calls("POST", "/reward-receptions") == 1
    assert device.calls("GET", "/loyalty-transactions") >= 1
    again = device.send("reward.redeem", **redeem("r-drop"))
    assert again["data"] == reply["data"]
    assert device.balance(JANE) == 1200


def test_reward_redeem_lost_answer_of_a_call_leat_never_acted_on_is_not_applied(
    device: Device,
) -> None:
    device.sandbox.faults.set(status=502, only_paths=("/reward-receptions",), times=1)
    reply = device.send("reward.redeem", **redeem("r-502"))
    assert reply["error"]["code"] == "not_applied"
    assert device.balance(JANE) == 1250


def test_value_taking_command_past_its_expiry_is_refused_unsent(device: Device) -> None:
    late = Message(topic=f"{BASE}/request/reward.redeem", payload=b"", expiry_s=1,
                   received_at=time.monotonic() - 2)
    assert device.send("reward.redeem", late, **redeem("r-late"))["error"]["code"] == "expired"
    queued = Message(topic="t", payload=b"", received_at=time.monotonic() - 6)  # > deadline
    assert device.send("reward.redeem", queued, **redeem("r-q"))["error"]["code"] == "expired"
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    body = {**redeem("r-past"), "expires_at": past}
    assert device.send("reward.redeem", **body)["error"]["code"] == "expired"
    nanos = {**redeem("r-nanos"), "expires_at": "2020-01-01T00:00:00.123456789z"}
    assert device.send("reward.redeem", **nanos)["error"]["code"] == "expired"
    assert device.calls("POST", "/reward-receptions") == 0
    fresh = Message(topic="t", payload=b"", expiry_s=30, received_at=time.monotonic() - 6)
    assert device.send("reward.redeem", fresh, **redeem("r-ok"))["status"] == "ok"


def test_a_held_value_taking_command_without_expiry_is_refused_unsent(device: Device) -> None:
    # the broker held it while the device was away: it may be hours late, and nothing says
    held = Message(topic=f"{BASE}/request/reward.redeem", payload=b"", resumed=True)
    reply = device.send("reward.redeem", held, **redeem("r-held"))
    assert reply["error"]["code"] == "expired" and "held" in reply["error"]["message"]
    assert device.calls("POST", "/reward-receptions") == 0
    # with an expiry it is timed by it; a read is never refused; live, it runs
    timed = Message(topic="t", payload=b"", resumed=True, expiry_s=30)
    assert device.send("reward.redeem", timed, **redeem("r-timed"))["status"] == "ok"
    soon = (datetime.now(UTC) + timedelta(seconds=30)).isoformat()
    body = {**redeem("r-soon"), "expires_at": soon}
    assert device.send("reward.redeem", held, **body)["status"] == "ok"
    read = device.send("contact.lookup", held, request_id="c-held", contact_uuid=JANE)
    assert read["status"] == "ok", read
    live = Message(topic="t", payload=b"")
    assert device.send("reward.redeem", live, **redeem("r-live"))["status"] == "ok"
    # refused unsent, so not recorded: the same request_id may be sent again
    done = device.send("reward.redeem", live, **redeem("r-held"))
    assert done["status"] == "ok"
    # a repeat of a recorded one (its reply was lost, the device restarted) gets that reply,
    # held or late: nothing is run again
    assert device.send("reward.redeem", held, **redeem("r-held")) == done
    late = Message(topic="t", payload=b"", expiry_s=1, received_at=time.monotonic() - 2)
    assert device.send("reward.redeem", late, **redeem("r-held")) == done
    assert device.calls("POST", "/reward-receptions") == 4


def test_reward_collect_once_then_leat_refuses_and_a_lost_answer_reconciles(
    device: Device,
) -> None:
    body = {"request_id": "k-1", "contact_uuid": JANE, "collectable_uuid": JANE_COLLECTABLE}
    first = device.send("reward.collect", **body)
    assert first["status"] == "ok" and first["data"]["status"] == "COLLECTED"
    again = device.send("reward.collect", **{**body, "request_id": "k-2"})
    assert again["error"]["code"] == "leat_rejected"
    gone = device.send("reward.collect", **{**body, "request_id": "k-3",
                                            "collectable_uuid": COFFEE})
    assert gone["error"]["leat_code"] == 80300


def test_reward_collect_answer_lost_is_reconciled(device: Device) -> None:
    device.sandbox.faults.set(drop_after_receive=True, only_paths=("/collectable-rewards/c",),
                              times=1)
    body = {"request_id": "k-d", "contact_uuid": JANE, "collectable_uuid": JANE_COLLECTABLE}
    reply = device.send("reward.collect", **body)
    assert reply["status"] == "ok", reply
    assert device.calls("PUT", f"/collect/{JANE_COLLECTABLE}") == 1


def test_voucher_lock_then_redeem_with_the_remembered_release_key(device: Device) -> None:
    lock = device.send("voucher.lock", request_id="vl-1", code="SPRING-2X7Q")
    assert lock["status"] == "ok" and lock["data"]["release_key"]
    assert lock["data"]["status"] == "LOCKED"
    locked = device.send("voucher.lock", request_id="vl-2", code="SPRING-2X7Q")
    assert locked["error"]["leat_code"] == 80017
    redeemed = device.send("voucher.redeem", request_id="vr-1", code="SPRING-2X7Q",
                           contact_uuid=JANE)
    assert redeemed["status"] == "ok", redeemed
    assert redeemed["data"]["voucher"]["status"] == "REDEEMED"
    twice = device.send("voucher.redeem", request_id="vr-2", code="SPRING-2X7Q",
                        contact_uuid=JANE)
    assert twice["error"]["leat_code"] == 80005


def test_voucher_redeem_of_a_voucher_locked_elsewhere_is_refused(device: Device) -> None:
    other = device.client.lock_voucher("d0d0d0d0-0000-4d00-8000-000000000001")  # another till
    assert other.release_key
    wrong = device.send("voucher.redeem", request_id="vw-1", code="SPRING-2X7Q",
                        contact_uuid=JANE, release_key="not-the-key")
    assert wrong["error"]["code"] == "leat_rejected" and wrong["error"]["leat_code"] == 80017
    right = device.send("voucher.redeem", request_id="vw-2", code="SPRING-2X7Q",
                        contact_uuid=JANE, release_key=other.release_key)
    assert right["status"] == "ok"


def test_voucher_redeem_for_another_contact_than_the_vouchers_own_is_refused(
    device: Device,
) -> None:
    # Leat documents contact_uuid for unlinked vouchers only: Jane's voucher is not Sam's
    wrong = device.send("voucher.redeem", request_id="vc-1", code="WELCOME-JANE",
                        contact_uuid=SAM)
    assert wrong["error"]["code"] == "wrong_contact", wrong
    assert device.calls("POST", "/vouchers/redeem") == 0
    assert device.client.find_voucher("WELCOME-JANE").status == "ACTIVE"
    upper = device.send("voucher.redeem", request_id="vc-1u", code="WELCOME-JANE",
                        contact_uuid=JANE.upper())  # the same uuid: Leat is asked (and says)
    assert upper["status"] == "ok" or upper["error"]["code"] != "wrong_contact", upper
    assert device.calls("POST", "/vouchers/redeem") == 1
    own = device.send("voucher.redeem", request_id="vc-2", code="WELCOME-JANE",
                      contact_uuid=JANE)
    assert own["status"] == "ok" and own["data"]["voucher"]["status"] == "REDEEMED"
    flyer = device.send("voucher.redeem", request_id="vc-3", code="SPRING-2X7Q",
                        contact_uuid=SAM)  # linked to no contact: anyone's
    assert flyer["status"] == "ok", flyer


@pytest.mark.parametrize(("code", "leat_code"), [("USED-2025", 80005), ("OLD-2024", 80006)])
def test_voucher_redeem_names_leats_rejection(device: Device, code: str, leat_code: int
                                              ) -> None:
    reply = device.send("voucher.redeem", request_id="vr-x", code=code, contact_uuid=SAM)
    assert reply["error"]["code"] == "leat_rejected" and reply["error"]["leat_code"] == leat_code


def test_voucher_lock_answer_lost_says_the_release_key_is_lost(device: Device) -> None:
    device.sandbox.faults.set(drop_after_receive=True, only_paths=("/vouchers/d0d0",),
                              times=1)
    reply = device.send("voucher.lock", request_id="vl-d", code="SPRING-2X7Q",
                        voucher_uuid="d0d0d0d0-0000-4d00-8000-000000000001")
    assert reply["error"]["code"] == "release_key_lost"
    assert device.calls("POST", "/lock") == 1


def test_voucher_redeem_answer_lost_is_reconciled(device: Device) -> None:
    device.sandbox.faults.set(drop_after_receive=True, only_paths=("/vouchers/redeem",),
                              times=1)
    reply = device.send("voucher.redeem", request_id="vr-d", code="SPRING-2X7Q",
                        contact_uuid=JANE)
    assert reply["status"] == "ok", reply
    assert reply["data"]["voucher"]["status"] == "REDEEMED"
    assert device.calls("POST", "/vouchers/redeem") == 1


# --------------------------------------------------------------------------- give back


def test_give_back_command_is_stored_in_the_outbox_and_accepted(device: Device) -> None:
    if "COMMAND" not in Kind.__members__:
        reply = device.send("reward.reverse", request_id="g-1",
                            reception_uuid="d0d0d0d0-0000-4d00-8000-0000000000aa")
        assert reply["error"]["code"] == "not_configured"  # until the durable outbox lands
        return
    reply = device.send("reward.reverse", request_id="g-1",
                        reception_uuid="d0d0d0d0-0000-4d00-8000-0000000000aa")
    assert reply["status"] == "accepted" and reply["data"]["duplicate"] is False
    again = device.send("reward.reverse", request_id="g-1",
                        reception_uuid="d0d0d0d0-0000-4d00-8000-0000000000aa")
    assert again["data"]["duplicate"] is True
    assert again["data"]["outbox_id"] == reply["data"]["outbox_id"]


def test_voucher_release_without_a_key_needs_a_lock_of_this_device(device: Device) -> None:
    reply = device.send("voucher.release", request_id="g-2",
                        voucher_uuid="d0d0d0d0-0000-4d00-8000-000000000001")
    assert reply["status"] == "error"
    if "COMMAND" in Kind.__members__:
        assert reply["error"]["code"] == "invalid_request"


def forwarder_of(device: Device) -> tuple[Forwarder, Clock]:
    """The durable executor over the device's outbox (its clock moves when a test says)."""
    clock = Clock()
    clock.now = time.time()
    return Forwarder(device.outbox, device.client, device.events, device_id="till-9",
                     shop_uuid=SHOP, clock=clock, rng=random.Random(8)), clock


def settled_command(device: Device, request_id: str) -> Mapping[str, Any]:
    """The one events/command of a give-back command, delivered from the outbox."""
    with Outbox(device.outbox) as box:
        stored = box.find(Kind.COMMAND, request_id)
    assert stored is not None and stored.state is State.DELIVERED
    [event] = [e for e in device.events.wait() if e["request_id"] == request_id]
    contract.validate("command_event", event)
    return event


def test_reward_reverse_by_its_reception_alone_settles_a_lost_answer_with_the_balance(
    device: Device,
) -> None:
    redeemed = device.send("reward.redeem", **redeem("r-rv"))
    assert device.balance(JANE) == 1200
    reply = device.send("reward.reverse", request_id="g-rv",
                        reception_uuid=redeemed["data"]["uuid"])  # only the required uuid
    assert reply["status"] == "accepted", reply
    forwarder, clock = forwarder_of(device)
    device.sandbox.faults.set(drop_after_receive=True, only_paths=("/reward-receptions",),
                              times=1)
    assert forwarder.drain_once() == 1
    assert device.balance(JANE) == 1250  # Leat gave the points back; its answer was lost
    drain_all(forwarder, clock)
    event = settled_command(device, "g-rv")
    assert event["status"] == "ok" and event["data"]["already"] is True
    assert event["data"]["new_balance"] == 1250  # the contact the device redeemed for
    assert device.balance(JANE) == 1250  # given back once


def test_collect_reverse_by_its_collection_alone_settles_a_lost_answer(device: Device) -> None:
    collected = device.send("reward.collect", request_id="k-rv", contact_uuid=JANE,
                            collectable_uuid=JANE_COLLECTABLE)
    redemption = collected["data"]["uuid"]
    reply = device.send("reward.collect_reverse", request_id="g-crv",
                        redemption_uuid=redemption)
    assert reply["status"] == "accepted", reply
    forwarder, clock = forwarder_of(device)
    device.sandbox.faults.set(drop_after_receive=True, only_paths=("/collectable-rewards",),
                              times=1)
    assert forwarder.drain_once() == 1
    drain_all(forwarder, clock)
    event = settled_command(device, "g-crv")
    assert event["status"] == "ok" and event["data"]["already"] is True
    assert device.calls("POST", f"/{redemption}/reverse") == 1  # the list told: not resent


def test_voucher_reverse_by_its_redemption_alone_settles_a_lost_answer(device: Device) -> None:
    redeemed = device.send("voucher.redeem", request_id="vr-rv", code="SPRING-2X7Q",
                           contact_uuid=JANE)
    redemption = redeemed["data"]["redemption_uuid"]
    reply = device.send("voucher.reverse", request_id="g-vrv", redemption_uuid=redemption)
    assert reply["status"] == "accepted", reply
    forwarder, clock = forwarder_of(device)
    device.sandbox.faults.set(drop_after_receive=True, only_paths=(f"/vouchers/{redemption}",),
                              times=1)
    assert forwarder.drain_once() == 1
    drain_all(forwarder, clock)
    event = settled_command(device, "g-vrv")
    assert event["status"] == "ok" and event["data"]["already"] is True
    assert event["data"]["status"] == "ACTIVE"  # read back by the code the device knew
    assert device.calls("POST", f"/{redemption}/reverse") == 1


def test_voucher_release_of_a_lock_of_this_device_needs_only_the_voucher_uuid(
    device: Device,
) -> None:
    lock = device.send("voucher.lock", request_id="vl-rl", code="SPRING-2X7Q")
    uuid, key = lock["data"]["voucher_uuid"], lock["data"]["release_key"]
    reply = device.send("voucher.release", request_id="g-rl", voucher_uuid=uuid)
    assert reply["status"] == "accepted", reply
    with Outbox(device.outbox) as box:
        stored = box.find(Kind.COMMAND, "g-rl")
    assert stored is not None
    assert stored.body["args"] == {"voucher_uuid": uuid, "release_key": key,
                                   "code": "SPRING-2X7Q"}
    forwarder, clock = forwarder_of(device)
    drain_all(forwarder, clock)
    assert settled_command(device, "g-rl")["data"]["status"] == "ACTIVE"
    assert device.client.find_voucher("SPRING-2X7Q").status == "ACTIVE"


def test_option_2_undone_by_the_required_uuids_alone_reaches_leat_in_order(
    device: Device,
) -> None:
    """The guides' "Option 2" after a failed payment: reverse the collection, then the
    reception. With the collectable filled in (the reception's uuid), the outbox holds the
    reception's reversal until the collection's is done, as Leat requires."""
    croissant = next(r for r in device.client.list_rewards() if r.pre_redeemable)
    redeemed = device.send("reward.redeem", **redeem("r-o2", reward=croissant.uuid))
    reception = redeemed["data"]["uuid"]
    collected = device.send("reward.collect", request_id="k-o2", contact_uuid=JANE,
                            collectable_uuid=reception)
    assert collected["status"] == "ok", collected
    device.send("reward.collect_reverse", request_id="g-o2a",
                redemption_uuid=collected["data"]["uuid"])
    device.send("reward.reverse", request_id="g-o2b", reception_uuid=reception)
    device.sandbox.faults.set(latency_s=0.2, only_paths=("/collectable-rewards",))
    forwarder, clock = forwarder_of(device)
    drain_all(forwarder, clock)
    events = device.events.wait(2)
    assert [(e["request_id"], e["status"]) for e in events] == [("g-o2a", "ok"),
                                                                ("g-o2b", "ok")]
    assert events[1]["data"]["new_balance"] == 1250
    assert device.balance(JANE) == 1250


def test_give_back_args_the_pos_sent_are_kept_and_unknown_uuids_get_nothing(
    device: Device,
) -> None:
    redeemed = device.send("reward.redeem", **redeem("r-kp"))
    device.send("reward.reverse", request_id="g-kp", reception_uuid=redeemed["data"]["uuid"],
                contact_uuid=SAM)
    device.send("reward.reverse", request_id="g-un",
                reception_uuid="d0d0d0d0-0000-4d00-8000-0000000000aa")
    with Outbox(device.outbox) as box:
        kept, unknown = box.find(Kind.COMMAND, "g-kp"), box.find(Kind.COMMAND, "g-un")
    assert kept is not None and kept.body["args"]["contact_uuid"] == SAM
    assert unknown is not None and "contact_uuid" not in unknown.body["args"]


def test_a_ledger_made_before_the_taken_index_is_migrated_keeping_every_row(
    tmp_path: Path,
) -> None:
    path = tmp_path / "commands.sqlite3"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE commands (request_id TEXT PRIMARY KEY, verb TEXT NOT NULL,
            body_hash TEXT NOT NULL, args TEXT NOT NULL, transaction_id TEXT,
            state TEXT NOT NULL CHECK (state IN ('running', 'unknown', 'done')),
            response TEXT, started_at REAL NOT NULL, updated_at REAL NOT NULL);
        CREATE TABLE voucher_locks (voucher TEXT PRIMARY KEY, release_key TEXT NOT NULL,
            locked_at REAL NOT NULL);
    """)
    now = time.time()
    ok = {"status": "ok", "data": {"uuid": "rec-1", "points": 1200}}
    rows = [("r-1", "reward.redeem", {"contact_uuid": JANE, "reward_uuid": COFFEE}, "done", ok),
            ("r-2", "reward.redeem", {"contact_uuid": SAM, "reward_uuid": COFFEE}, "running",
             None)]
    old.executemany("INSERT INTO commands VALUES (?, ?, 'h', ?, NULL, ?, ?, ?, ?)",
                    [(rid, verb, json.dumps(args), state,
                      None if out is None else json.dumps(out), now, now)
                     for rid, verb, args, state, out in rows])
    old.execute("INSERT INTO voucher_locks VALUES ('v-1', 'key-1', ?)", (now,))
    old.commit()
    old.close()
    Ledger.prepare(path)
    Ledger.prepare(path)  # idempotent
    ledger = Ledger(path)
    try:
        taken = ledger.taken("rec-1")
        assert taken is not None and taken.contact_uuid == JANE
        assert [e.request_id for e in ledger.unsettled()] == ["r-2"]
        assert ledger.results("reward.redeem") == {"rec-1"}
        assert ledger.release_key("v-1") == "key-1"
    finally:
        ledger.close()


# ---------------------------------------------------------------------------- contract


def test_every_command_needs_a_request_id(device: Device) -> None:
    for verb in VERBS:
        reply = device.send(verb, bad=True, transaction="t")
        assert reply["error"]["code"] == "invalid_request", verb
        assert "request_id" in reply["error"]["message"]


def test_readme_rules_table_is_the_one_in_pos_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("<!-- rules-table -->\n", 1)[1].split("\n<!-- /rules-table -->", 1)[0]
    assert table == rules_table()
    for verb in VERBS:
        assert f"| `{verb}` |" in table


TEMPLATES: dict[str, dict[str, Any]] = {
    "contact.lookup": {"identifier": "LC-7F3K9Q2M"},
    "order.get": {"external_identifier": "pos-1"},
    "points.preview": {"unit_value": 10},
    "voucher.validate": {"code": "SPRING-2X7Q"},
    "reward.redeem": {"contact_uuid": JANE, "reward_uuid": COFFEE},
    "reward.collect": {"contact_uuid": JANE, "collectable_uuid": JANE_COLLECTABLE},
    "voucher.lock": {"code": "SPRING-2X7Q"},
    "voucher.redeem": {"code": "WELCOME-JANE", "contact_uuid": JANE},
    "giftcard.pay": {"giftcard_uuid": "9c9c9c9c-0000-4f00-8000-000000000001",
                     "amount_in_cents": 1},
    "giftcard.load": {"hash": "GC-EMPTY0000", "amount_in_cents": 1},
    "prepaid.pay": {"contact_uuid": JANE, "amount_in_cents": 1},
    "prepaid.topup": {"identifier": "LC-7F3K9Q2M", "amount_in_cents": 1},
    "reward.reverse": {"reception_uuid": COFFEE},
    "reward.collect_reverse": {"redemption_uuid": COFFEE},
    "voucher.release": {"voucher_uuid": COFFEE, "release_key": "k"},
    "voucher.reverse": {"voucher_uuid": COFFEE},
    "giftcard.reverse": {"transaction_uuid": COFFEE},
    "prepaid.reverse": {"transaction_uuid": COFFEE},
}


def test_hostile_commands_get_one_named_reply_never_internal(device: Device) -> None:
    rng = random.Random(20261202)
    junk: list[Any] = [None, True, -1, 1.5, 10**30, "", "x" * 3000, [], {}, "\u202e", "\u0000",
                       "not-a-uuid", "2026-13-01T00:00:00Z", "../../x", "a@b"]
    assert set(TEMPLATES) == set(VERBS)
    codes: dict[str, int] = {}
    for n in range(300):
        verb = rng.choice(list(TEMPLATES))
        body: dict[str, Any] = {"request_id": f"fz-{n}", **TEMPLATES[verb]}
        mutation = rng.randrange(6)
        if mutation == 0:
            body[rng.choice(list(body))] = rng.choice(junk)
        elif mutation == 1:
            del body[rng.choice(list(body))]
        elif mutation == 2:
            body[rng.choice(["extra", "expires_at", "transaction", "create", "order"])] = (
                rng.choice(junk))
        elif mutation == 3:
            body["request_id"] = rng.choice(["", "x" * 129, "a b", "\u00e9", "ok-id"])
        reply = device.send(verb, bad=True, **body)
        code = reply["status"] if reply["error"] is None else reply["error"]["code"]
        codes[code] = codes.get(code, 0) + 1
        assert code != "internal", (verb, body, reply)
    assert codes.get("invalid_request", 0) > 20 and codes.get("ok", 0) > 20, codes


def test_command_deadline_is_configurable_and_five_seconds_by_default() -> None:
    from appliance.config import LeatConfig

    assert LeatConfig().command_deadline_s == 5.0
    assert LeatConfig(command_deadline_s=1.5).command_deadline_s == 1.5
    with pytest.raises(ValueError, match="command_deadline_s"):
        LeatConfig(command_deadline_s=0)
    example = (ROOT / "appliance" / "examples" / "config.toml").read_text(encoding="utf-8")
    assert "command_deadline_s = 5.0" in example
