"""Give-back commands through the durable outbox: each run once against the real sandbox over
HTTP, with real SQLite files, through outages, lost answers and `kill -9`.

Tests named `..._assumption` rely on sandbox answers the Leat sources leave open
(docs/sandbox.md: a repeated reversal is 1003 "already reversed"; a reversed collection 80300).
"""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path
from typing import Any

import pytest
from broker import Mosquitto, Subscriber
from fakes import SHOP, Clock
from test_forwarder import calls, drain_all, finish_without_faults, kill_9_while_working

from appliance import commands_durable, contract
from appliance.bus import MqttBus
from appliance.commands_durable import GIVE_BACK_VERBS, validate_args
from appliance.config import MqttConfig
from appliance.forwarder import Forwarder
from appliance.leat.client import LeatClient
from appliance.leat.payments import Voucher, VoucherLock
from appliance.outbox import Outbox
from appliance.outbox_items import Item, Kind, State
from appliance.sandbox.server import LeatSandbox

JANE = "c0a80101-1a2b-4c3d-8e4f-000000000001"
COFFEE_CREDITS = 50
CROISSANT_WAITING = "a5b6c7d8-0000-4b00-8000-000000000001"  # Jane's collectable in the seed
UNKNOWN = "00000000-0000-4000-8000-000000000000"
REVERSE_RECEPTION = "/reward-receptions"


class Events:
    """Published command events, each checked against its schema; tests wait on them."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.changed = threading.Condition()

    def __call__(self, name: str, payload: dict[str, Any]) -> None:
        assert name == "command"
        contract.validate("command_event", payload)
        with self.changed:
            self.items.append(payload)
            self.changed.notify_all()


@pytest.fixture
def events() -> Events:
    return Events()


def command(outbox: Outbox, request_id: str, verb: str, **args: str) -> Item:
    """What the POS command layer stores for a give-back verb."""
    validate_args(verb, args)
    return outbox.enqueue(
        Kind.COMMAND, request_id, {"verb": verb, "args": args}, transaction=f"tx-{request_id}"
    ).item


def locked_then_released(
    client: LeatClient, outbox: Outbox, request_id: str
) -> tuple[Voucher, VoucherLock, Item]:
    """The flyer voucher locked at Leat, and its release queued as the POS layer stores it."""
    voucher = client.find_voucher("SPRING-2X7Q")
    lock = client.lock_voucher(voucher.uuid)
    assert lock.release_key and client.find_voucher("SPRING-2X7Q").status == "LOCKED"
    stored = command(outbox, request_id, "voucher.release", voucher_uuid=voucher.uuid,
                     release_key=lock.release_key, code="SPRING-2X7Q")
    return voucher, lock, stored


def item(outbox: Outbox, item_id: int) -> Item:
    found = outbox.get(item_id)
    assert found is not None
    return found


def redeem_coffee(client: LeatClient) -> str:
    """Jane spends 50 points on a coffee; the reception's uuid."""
    coffee = next(r for r in client.list_rewards() if r.required_credits == COFFEE_CREDITS)
    return client.create_reward_reception(contact_uuid=JANE, reward_uuid=coffee.uuid).uuid


def collected(client: LeatClient) -> bool:
    [croissant] = [c for c in client.list_collectable_rewards(JANE) if c.uuid == CROISSANT_WAITING]
    return croissant.has_been_collected


def one_event(events: Events, status: str) -> dict[str, Any]:
    [payload] = events.items
    assert payload["status"] == status
    return payload


# ------------------------------------------------------------------------ each verb, once


def test_reward_reverse_gives_the_points_back_once(
    forwarder: Forwarder, outbox: Outbox, client: LeatClient, sandbox: LeatSandbox,
    events: Events,
) -> None:
    reception = redeem_coffee(client)
    assert client.get_credit_balance(JANE) == 1200
    stored = command(outbox, "R-1", "reward.reverse", reception_uuid=reception, contact_uuid=JANE)
    assert forwarder.drain_once() == 1
    assert item(outbox, stored.id).state is State.DELIVERED
    assert client.get_credit_balance(JANE) == 1250
    assert calls(sandbox, f"/{reception}/reverse") == 1
    payload = one_event(events, "ok")
    assert (payload["request_id"], payload["verb"], payload["transaction"]) == (
        "R-1", "reward.reverse", "tx-R-1")
    assert payload["data"]["credits"] == COFFEE_CREDITS
    assert payload["data"]["new_balance"] == 1250
    assert payload["data"]["already"] is False
    assert payload["error"] is None
    assert forwarder.drain_once() == 0  # delivered is final


def test_collect_reverse_makes_the_reward_collectable_again(
    forwarder: Forwarder, outbox: Outbox, client: LeatClient, events: Events
) -> None:
    redemption = client.collect_reward(CROISSANT_WAITING).uuid
    assert collected(client)
    command(outbox, "C-1", "reward.collect_reverse", redemption_uuid=redemption,
            collectable_uuid=CROISSANT_WAITING, contact_uuid=JANE)
    assert forwarder.drain_once() == 1
    assert not collected(client)
    assert client.get_credit_balance(JANE) == 1250  # a collection never moves points
    assert one_event(events, "ok")["data"] == {
        "redemption_uuid": redemption, "status": "REVERSED", "already": False}


def test_voucher_release_frees_the_lock(
    forwarder: Forwarder, outbox: Outbox, client: LeatClient, events: Events
) -> None:
    locked_then_released(client, outbox, "V-1")
    assert forwarder.drain_once() == 1
    assert client.find_voucher("SPRING-2X7Q").status == "ACTIVE"
    assert one_event(events, "ok")["data"]["status"] == "ACTIVE"


def test_voucher_reverse_makes_it_usable_again(
    forwarder: Forwarder, outbox: Outbox, client: LeatClient, events: Events
) -> None:
    redeemed = client.redeem_voucher(code="WELCOME-JANE")
    assert redeemed.redemption_uuid and redeemed.voucher.status == "REDEEMED"
    command(outbox, "V-2", "voucher.reverse", redemption_uuid=redeemed.redemption_uuid,
            voucher_uuid=redeemed.voucher.uuid, code="WELCOME-JANE")
    assert forwarder.drain_once() == 1
    assert client.find_voucher("WELCOME-JANE").status == "ACTIVE"
    data = one_event(events, "ok")["data"]
    assert (data["reversed_uuid"], data["status"]) == (redeemed.redemption_uuid, "ACTIVE")


def test_undo_collect_then_reception_reaches_leat_in_that_order(
    forwarder: Forwarder, outbox: Outbox, client: LeatClient, sandbox: LeatSandbox,
    events: Events,
) -> None:
    croissant = next(r for r in client.list_rewards() if r.pre_redeemable)
    reception = client.create_reward_reception(contact_uuid=JANE, reward_uuid=croissant.uuid)
    redemption = client.collect_reward(reception.uuid).uuid
    assert client.get_credit_balance(JANE) == 1250 - croissant.required_credits
    # The seeds' "Option 2" undone after a failed payment: the collection, then the points.
    command(outbox, "U-1", "reward.collect_reverse", redemption_uuid=redemption,
            collectable_uuid=reception.uuid, contact_uuid=JANE)
    command(outbox, "U-2", "reward.reverse", reception_uuid=reception.uuid, contact_uuid=JANE)
    sandbox.faults.set(latency_s=0.2, only_paths=("/collectable-rewards",))  # the slower one
    assert forwarder.drain_once() == 2
    assert [e["status"] for e in events.items] == ["ok", "ok"]
    assert [e["request_id"] for e in events.items] == ["U-1", "U-2"]
    assert client.get_credit_balance(JANE) == 1250


# ------------------------------------------------------------------- final refusals: DEAD


@pytest.mark.parametrize(
    ("verb", "args", "leat_code"),
    [
        ("reward.reverse", {"reception_uuid": UNKNOWN}, 1003),
        ("reward.collect_reverse", {"redemption_uuid": UNKNOWN}, 80300),
        ("voucher.reverse", {"voucher_uuid": UNKNOWN}, 80004),
    ],
)
def test_a_refusal_of_a_first_attempt_is_final_with_leats_code(
    forwarder: Forwarder, outbox: Outbox, events: Events, verb: str, args: dict[str, str],
    leat_code: int,
) -> None:
    stored = command(outbox, "D-1", verb, **args)
    assert forwarder.drain_once() == 1
    dead = item(outbox, stored.id)
    assert (dead.state, dead.error_code) == (State.DEAD, leat_code)
    payload = one_event(events, "failed")
    assert payload["data"] is None
    assert payload["error"]["code"] == "leat_rejected"
    assert payload["error"]["leat_code"] == leat_code


def test_release_with_a_wrong_key_is_dead_and_the_voucher_stays_locked(
    forwarder: Forwarder, outbox: Outbox, client: LeatClient, events: Events
) -> None:
    voucher = client.find_voucher("SPRING-2X7Q")
    client.lock_voucher(voucher.uuid)
    stored = command(outbox, "V-3", "voucher.release", voucher_uuid=voucher.uuid,
                     release_key="not-the-key", code="SPRING-2X7Q")
    assert forwarder.drain_once() == 1
    assert item(outbox, stored.id).state is State.DEAD
    assert client.find_voucher("SPRING-2X7Q").status == "LOCKED"
    assert one_event(events, "failed")["error"]["leat_code"] == 1003


def test_release_after_the_lock_lapsed_in_an_outage_is_done_not_failed(
    forwarder: Forwarder, outbox: Outbox, client: LeatClient, sandbox: LeatSandbox,
    events: Events, clock: Clock,
) -> None:
    voucher, _, stored = locked_then_released(client, outbox, "V-7")
    sandbox.advance_clock(3601)  # Leat was away for over an hour: the lock lapsed
    assert forwarder.drain_once() == 1
    assert calls(sandbox, f"/{voucher.uuid}/release") == 1  # refused: not locked (1003)
    assert item(outbox, stored.id).state is State.DELIVERED
    data = one_event(events, "ok")["data"]
    assert (data["already"], data["status"]) == (True, "ACTIVE")


def test_stored_command_with_bad_args_is_dead_without_calling_leat(
    forwarder: Forwarder, outbox: Outbox, sandbox: LeatSandbox, events: Events
) -> None:
    stored = outbox.enqueue(Kind.COMMAND, "B-1", {"verb": "voucher.release", "args": {}}).item
    before = len(sandbox.requests())
    assert forwarder.drain_once() == 1
    assert item(outbox, stored.id).state is State.DEAD
    assert len(sandbox.requests()) == before
    error = one_event(events, "failed")["error"]
    assert error["code"] == "invalid_request" and "release_key" in error["message"]
    assert "leat_code" not in error


def test_validate_args_names_the_problem() -> None:
    verbs = {"reward.reverse", "reward.collect_reverse", "voucher.release", "voucher.reverse",
             "giftcard.reverse", "prepaid.reverse"}
    assert verbs == GIVE_BACK_VERBS
    with pytest.raises(ValueError, match="not a give-back verb"):
        validate_args("reward.redeem", {})
    with pytest.raises(ValueError, match="unknown args extra"):
        validate_args("reward.reverse", {"reception_uuid": "u", "extra": "x"})
    with pytest.raises(ValueError, match="missing args reception_uuid"):
        validate_args("reward.reverse", {})
    with pytest.raises(ValueError, match="needs redemption_uuid or voucher_uuid"):
        validate_args("voucher.reverse", {"code": "X"})
    with pytest.raises(ValueError, match="non-empty string"):
        validate_args("voucher.release", {"voucher_uuid": "u", "release_key": ""})
    with pytest.raises(ValueError, match="non-empty string"):
        validate_args("voucher.release", {"voucher_uuid": "u", "release_key": "k" * 256})


# --------------------------------------------------------------------- Leat down, then back


def test_leat_down_holds_the_command_then_sends_it_once(
    forwarder: Forwarder, outbox: Outbox, client: LeatClient, sandbox: LeatSandbox,
    events: Events, clock: Clock,
) -> None:
    reception = redeem_coffee(client)
    stored = command(outbox, "R-2", "reward.reverse", reception_uuid=reception, contact_uuid=JANE)
    sandbox.faults.set(outage=True)
    for _ in range(3):
        clock.advance(400)
        assert forwarder.drain_once() == 1
        assert item(outbox, stored.id).state is State.PENDING  # a reset: maybe sent, kept
    assert events.items == []
    assert forwarder.probing
    sandbox.faults.clear()
    assert client.get_credit_balance(JANE) == 1200  # nothing reached Leat
    drain_all(forwarder, clock)
    assert item(outbox, stored.id).state is State.DELIVERED
    assert client.get_credit_balance(JANE) == 1250
    assert calls(sandbox, f"/{reception}/reverse") == 1
    data = one_event(events, "ok")["data"]
    assert (data["new_balance"], data["already"]) == (1250, False)


# --------------------------------------------------------- ambiguous: never applied twice


def test_lost_answer_of_reward_reverse_is_not_applied_twice_assumption(
    forwarder: Forwarder, outbox: Outbox, client: LeatClient, sandbox: LeatSandbox,
    events: Events, clock: Clock,
) -> None:
    reception = redeem_coffee(client)
    stored = command(outbox, "R-3", "reward.reverse", reception_uuid=reception, contact_uuid=JANE)
    sandbox.faults.set(drop_after_receive=True, only_paths=(REVERSE_RECEPTION,), times=1)
    assert forwarder.drain_once() == 1
    lost = item(outbox, stored.id)
    assert (lost.state, lost.ambiguous) == (State.PENDING, True)
    assert client.get_credit_balance(JANE) == 1250  # Leat did it; the answer was lost
    drain_all(forwarder, clock)
    assert item(outbox, stored.id).state is State.DELIVERED
    assert client.get_credit_balance(JANE) == 1250  # not 1300: given back once
    assert calls(sandbox, f"/{reception}/reverse") == 2  # the repeat was refused "already"
    data = one_event(events, "ok")["data"]
    assert data["already"] is True and data["new_balance"] == 1250
    assert forwarder.alert is None


def test_lost_answer_of_collect_reverse_is_settled_by_the_list(
    forwarder: Forwarder, outbox: Outbox, client: LeatClient, sandbox: LeatSandbox,
    events: Events, clock: Clock,
) -> None:
    redemption = client.collect_reward(CROISSANT_WAITING).uuid
    command(outbox, "C-2", "reward.collect_reverse", redemption_uuid=redemption,
            collectable_uuid=CROISSANT_WAITING, contact_uuid=JANE)
    sandbox.faults.set(drop_after_receive=True, only_paths=("/collectable-rewards",), times=1)
    assert forwarder.drain_once() == 1
    assert not collected(client)
    drain_all(forwarder, clock)
    assert calls(sandbox, f"/{redemption}/reverse") == 1  # the list said done: not sent again
    assert one_event(events, "ok")["data"]["already"] is True


def test_lost_answer_of_release_is_settled_by_the_voucher_status(
    forwarder: Forwarder, outbox: Outbox, client: LeatClient, sandbox: LeatSandbox,
    events: Events, clock: Clock,
) -> None:
    voucher, _, _ = locked_then_released(client, outbox, "V-4")
    sandbox.faults.set(drop_after_receive=True, only_paths=(f"/vouchers/{voucher.uuid}",),
                       times=1)
    assert forwarder.drain_once() == 1
    drain_all(forwarder, clock)
    assert calls(sandbox, f"/{voucher.uuid}/release") == 1
    assert client.find_voucher("SPRING-2X7Q").status == "ACTIVE"
    data = one_event(events, "ok")["data"]
    assert (data["already"], data["status"]) == (True, "ACTIVE")


def test_lost_answer_of_voucher_reverse_is_settled_by_the_voucher_status(
    forwarder: Forwarder, outbox: Outbox, client: LeatClient, sandbox: LeatSandbox,
    events: Events, clock: Clock,
) -> None:
    redeemed = client.redeem_voucher(code="WELCOME-JANE")
    assert redeemed.redemption_uuid
    command(outbox, "V-5", "voucher.reverse", redemption_uuid=redeemed.redemption_uuid,
            code="WELCOME-JANE")
    sandbox.faults.set(drop_after_receive=True,
                       only_paths=(f"/vouchers/{redeemed.redemption_uuid}",), times=1)
    assert forwarder.drain_once() == 1
    assert client.find_voucher("WELCOME-JANE").status == "ACTIVE"
    client.redeem_voucher(code="WELCOME-JANE")  # the customer uses it again meanwhile...
    drain_all(forwarder, clock)
    # ...and the repeat, by the redemption uuid, cannot undo that second redemption.
    assert client.find_voucher("WELCOME-JANE").status == "REDEEMED"
    assert calls(sandbox, f"/{redeemed.redemption_uuid}/reverse") == 2
    assert one_event(events, "ok")["data"]["already"] is True


def test_lost_answer_that_leat_cannot_be_asked_about_is_held_never_dead_assumption(
    forwarder: Forwarder, outbox: Outbox, client: LeatClient, sandbox: LeatSandbox,
    events: Events, clock: Clock,
) -> None:
    redemption = client.collect_reward(CROISSANT_WAITING).uuid
    stored = command(outbox, "C-3", "reward.collect_reverse", redemption_uuid=redemption)
    sandbox.faults.set(drop_after_receive=True, only_paths=("/collectable-rewards",), times=1)
    assert forwarder.drain_once() == 1
    for _ in range(3):  # the repeat is 80300, as for an unknown one: it cannot tell
        clock.advance(400)
        assert forwarder.drain_once() == 1
        held = item(outbox, stored.id)
        assert (held.state, held.ambiguous) == (State.PENDING, True)
    assert forwarder.alert is not None and "held" in forwarder.alert
    assert events.items == []
    assert not collected(client)


def test_a_refused_check_decides_nothing(
    forwarder: Forwarder, outbox: Outbox, client: LeatClient, sandbox: LeatSandbox,
    events: Events, clock: Clock,
) -> None:
    redemption = client.collect_reward(CROISSANT_WAITING).uuid
    held = command(outbox, "C-4", "reward.collect_reverse", redemption_uuid=redemption,
                   collectable_uuid=CROISSANT_WAITING, contact_uuid=UNKNOWN)  # list: 55031
    reception = redeem_coffee(client)
    done = command(outbox, "R-5", "reward.reverse", reception_uuid=reception,
                   contact_uuid=UNKNOWN)  # its balance cannot be read: 55031
    sandbox.faults.set(drop_after_receive=True, only_paths=("/collectable-rewards",
                                                            REVERSE_RECEPTION), times=2)
    assert forwarder.drain_once() == 2
    for _ in range(3):
        clock.advance(400)
        forwarder.drain_once()
    assert (item(outbox, held.id).state, item(outbox, held.id).ambiguous) == (
        State.PENDING, True)  # never dead by a refused check
    assert item(outbox, done.id).state is State.DELIVERED
    assert one_event(events, "ok")["data"]["new_balance"] is None
    assert client.get_credit_balance(JANE) == 1250


def test_a_proxy_page_instead_of_leats_error_is_held_not_dead(
    forwarder: Forwarder, outbox: Outbox, client: LeatClient, sandbox: LeatSandbox,
    events: Events, clock: Clock,
) -> None:
    reception = redeem_coffee(client)
    stored = command(outbox, "R-4", "reward.reverse", reception_uuid=reception)
    sandbox.faults.set(status=404, body="<html>Not Found</html>", times=1)
    assert forwarder.drain_once() == 1
    assert item(outbox, stored.id).state is State.PENDING
    assert forwarder.alert is not None
    drain_all(forwarder, clock)
    assert item(outbox, stored.id).state is State.DELIVERED
    assert client.get_credit_balance(JANE) == 1250
    assert forwarder.alert is None
    assert one_event(events, "ok")["data"]["new_balance"] == 1250


def test_interrupted_while_sending_is_settled_before_sending_again(
    path: Path, outbox: Outbox, client: LeatClient, sandbox: LeatSandbox, events: Events,
    clock: Clock,
) -> None:
    voucher, lock, stored = locked_then_released(client, outbox, "V-6")
    assert outbox.claim(stored.id) is not None
    client.release_voucher(voucher.uuid, lock.release_key)  # it went out; then the crash
    assert outbox.recover() == 1
    forwarder = Forwarder(path, client, events, device_id="till-1", shop_uuid=SHOP, clock=clock)
    assert forwarder.drain_once() == 1
    assert calls(sandbox, f"/{voucher.uuid}/release") == 1
    assert item(outbox, stored.id).state is State.DELIVERED
    assert one_event(events, "ok")["data"]["already"] is True


# ------------------------------------------------------------------------------ kill -9

def test_kill_9_while_reversals_are_queued_gives_each_back_exactly_once(
    path: Path, outbox: Outbox, client: LeatClient, sandbox: LeatSandbox
) -> None:
    rng = random.Random(20261202)
    receptions = [redeem_coffee(client) for _ in range(8)]
    assert client.get_credit_balance(JANE) == 1250 - 8 * COFFEE_CREDITS
    stored = [
        command(outbox, f"K-{n}", "reward.reverse", reception_uuid=uuid, contact_uuid=JANE)
        for n, uuid in enumerate(receptions)
    ]
    # The sandbox acts first and then waits, so most kills land between Leat and SQLite.
    sandbox.faults.set(latency_s=0.1, only_paths=(REVERSE_RECEPTION,))
    progress = kill_9_while_working(path, sandbox, rng, 6,
                                    lambda: client.get_credit_balance(JANE))
    assert progress[0] < 1250  # killed while there was work to do
    finish_without_faults(path, sandbox)
    assert client.get_credit_balance(JANE) == 1250  # each given back once, none twice
    assert all(item(outbox, s.id).state is State.DELIVERED for s in stored)
    back = client.list_loyalty_transactions(contact_uuid=JANE, kind="credit_receptions")
    assert sorted(t.credits or 0 for t in back) == [COFFEE_CREDITS] * 8
    assert calls(sandbox, "/reverse") > 8  # some kills came after Leat acted: repeated, once


def test_module_schema_name_matches_the_contract() -> None:
    assert contract.schema("command_event")["properties"]["schema"]["const"] == (
        commands_durable.SCHEMA)


def test_the_outcome_reaches_the_pos_over_mqtt_qos_1(
    broker: Mosquitto, path: Path, client: LeatClient
) -> None:
    base = "leat-scanner/till-5"
    bus = MqttBus(MqttConfig(host=broker.host, port=broker.port), base, "till-5", None, {})
    reception = redeem_coffee(client)
    with Outbox(path) as box, Subscriber(broker, f"{base}/events/command") as pos:
        command(box, "M-1", "reward.reverse", reception_uuid=reception, contact_uuid=JANE)
        forwarder = Forwarder(path, client, bus.publish_event, device_id="till-5",
                              shop_uuid=SHOP)
        bus.start()
        try:
            assert bus.wait_serving(10)
            pos.wait_subscribed()
            assert forwarder.drain_once() == 1
            [message] = pos.wait_for(lambda ms: len(ms) == 1)
        finally:
            bus.stop()
    assert (message.qos, message.retain) == (1, False)
    payload = json.loads(message.payload)
    contract.validate("command_event", payload)
    assert (payload["request_id"], payload["status"], payload["transaction"]) == (
        "M-1", "ok", "tx-M-1")
    assert payload["data"]["new_balance"] == 1250
