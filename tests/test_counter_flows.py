"""Every POS command verb through the whole device (`assembly.build`: bus, request worker, command
runner, ledger, outbox, forwarder) over a real Mosquitto, against the Leat sandbox over HTTP:
the counter flows of Leat's kiosk and POS guides, each reply and event checked against its
schema and against what the sandbox then holds."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from broker import Mosquitto, Subscriber
from test_daemon import BASE, RecordingFeedback, leat_config
from test_orders import order_body

from appliance import contract
from appliance.assembly import build
from appliance.daemon import ScanService
from appliance.markfile import MarkFile
from appliance.outbox_guard import mark_path
from appliance.pos.ledger import Ledger, LedgerDamaged, identity_path
from appliance.samples import write_demo_frames
from appliance.sandbox.server import LeatSandbox

JANE = "c0a80101-1a2b-4c3d-8e4f-000000000001"
COFFEE = "e1d2c3b4-0000-4a00-9000-000000000011"  # 50 points, redeemed at once
CROISSANT = "e1d2c3b4-0000-4a00-9000-000000000012"  # 30 points, pre-redeemable
CROISSANT_WAITING = "a5b6c7d8-0000-4b00-8000-000000000001"  # Jane's collectable reward
JANE_POINTS = 1250


class Pos:
    """A POS over MQTT: sends `request/<verb>` and waits for its reply (and final event)."""

    def __init__(self, sub: Subscriber) -> None:
        self._sub = sub
        self._ids = itertools.count(1)

    def send(self, verb: str, **body: Any) -> dict[str, Any]:
        request_id = body.setdefault("request_id", f"flow-{next(self._ids)}")
        body.setdefault("transaction", f"till-1/{request_id}")
        before = len(self._replies(self._sub.on(f"{BASE}/response/{verb}"), request_id))
        self._sub.publish(f"{BASE}/request/{verb}", json.dumps(body).encode())
        messages = self._sub.wait_for(
            lambda ms: len(self._replies(ms, request_id)) > before, timeout=20
        )
        reply = self._replies([m for m in messages if m.topic == f"{BASE}/response/{verb}"],
                              request_id)[-1]
        contract.validate_reply(verb, reply)
        return reply

    @staticmethod
    def _replies(messages: Sequence[Any], request_id: str) -> list[dict[str, Any]]:
        return [p for p in (json.loads(m.payload) for m in messages
                            if m.topic.startswith(f"{BASE}/response/"))
                if p.get("request_id") == request_id]

    def states(self, until: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """The retained `state` payloads seen, once one of them satisfies `until`."""
        def seen(ms: Sequence[Any]) -> list[dict[str, Any]]:
            return [json.loads(m.payload) for m in ms if m.topic == f"{BASE}/state"]

        return seen(self._sub.wait_for(lambda ms: any(until(p) for p in seen(ms)), timeout=20))

    def outcome(self, request_id: str) -> dict[str, Any]:
        """The final outcome of an accepted command on `events/command`."""
        def mine(ms: list[Any]) -> list[dict[str, Any]]:
            return [p for p in (json.loads(m.payload) for m in ms
                                if m.topic == f"{BASE}/events/command")
                    if p["request_id"] == request_id]

        [event] = mine(self._sub.wait_for(lambda ms: bool(mine(list(ms))), timeout=30))
        contract.validate("command_event", event)
        return event


@contextlib.contextmanager
def running_device(broker: Mosquitto, tmp_path: Path) -> Iterator[tuple[Pos, LeatSandbox]]:
    """A device with Leat configured (state in `tmp_path/state`), running until the block
    ends, and a POS subscribed to everything under its base topic."""
    frames = tmp_path / "frames"
    write_demo_frames(frames)
    with LeatSandbox() as sandbox, Subscriber(broker, f"{BASE}/#") as sub:
        sub.wait_subscribed()
        service: ScanService = build(
            leat_config(broker, frames, sandbox, tmp_path),
            feedback=RecordingFeedback(), stop_when_source_ends=False,
        )
        stop = threading.Event()
        runner = threading.Thread(target=service.run, args=(stop,), name="device")
        runner.start()
        try:
            sub.wait_message(f"{BASE}/availability", b"online", timeout=20)
            yield Pos(sub), sandbox
        finally:
            stop.set()
            runner.join(timeout=30)
    assert not runner.is_alive()


@pytest.fixture
def counter(broker: Mosquitto, tmp_path: Path) -> Iterator[tuple[Pos, LeatSandbox]]:
    """A running device with Leat configured, and a POS subscribed to its replies."""
    with running_device(broker, tmp_path) as device:
        yield device


def test_rewards_flow_redeem_and_reverse_collect_and_undo(
    counter: tuple[Pos, LeatSandbox],
) -> None:
    pos, _ = counter
    lookup = pos.send("contact.lookup", identifier="LC-7F3K9Q2M")
    assert lookup["status"] == "ok"
    assert lookup["data"]["contact"]["uuid"] == JANE
    assert lookup["data"]["contact"]["points"] == JANE_POINTS
    preview = pos.send("points.preview", unit_value=10, contact_uuid=JANE)
    assert preview["status"] == "ok" and isinstance(preview["data"]["points"], int)

    # Option 1 of the guides: redeem at once, reverse when the sale fails
    redeemed = pos.send("reward.redeem", contact_uuid=JANE, reward_uuid=COFFEE)
    assert redeemed["status"] == "ok"
    assert redeemed["data"]["points"] == JANE_POINTS - 50
    again = pos.send("reward.redeem", request_id=redeemed["request_id"], contact_uuid=JANE,
                     reward_uuid=COFFEE)
    assert again["data"] == redeemed["data"]  # recorded outcome, no second reception
    reverse = pos.send("reward.reverse", reception_uuid=redeemed["data"]["uuid"])
    assert reverse["status"] == "accepted"
    event = pos.outcome(reverse["request_id"])
    assert event["status"] == "ok"
    assert event["data"]["new_balance"] == JANE_POINTS  # given back once

    # Option 2: pre-redeem (points spent, a reward to collect), collect on success ...
    pre = pos.send("reward.redeem", contact_uuid=JANE, reward_uuid=CROISSANT)
    assert pre["status"] == "ok" and pre["data"]["points"] == JANE_POINTS - 30
    offers = pos.send("contact.lookup", contact_uuid=JANE)["data"]["contact"]["offers"]
    waiting = {o["uuid"] for o in offers if o["type"] == "collectable_reward"}
    [new] = waiting - {CROISSANT_WAITING}
    done = pos.send("reward.collect", contact_uuid=JANE, collectable_uuid=new)
    assert done["status"] == "ok" and done["data"]["status"] == "COLLECTED"
    after = pos.send("contact.lookup", contact_uuid=JANE)["data"]["contact"]
    assert after["points"] == JANE_POINTS - 30  # collecting moves no points
    assert new not in {o["uuid"] for o in after["offers"]}

    # ... or a collection undone (the reward waits for a later visit)
    collected = pos.send("reward.collect", contact_uuid=JANE, collectable_uuid=CROISSANT_WAITING)
    assert collected["status"] == "ok" and collected["data"]["status"] == "COLLECTED"
    undo = pos.send("reward.collect_reverse", redemption_uuid=collected["data"]["uuid"])
    assert undo["status"] == "accepted"
    assert pos.outcome(undo["request_id"])["status"] == "ok"
    refreshed = pos.send("contact.lookup", contact_uuid=JANE)
    assert refreshed["data"]["contact"]["points"] == JANE_POINTS - 30
    assert CROISSANT_WAITING in {
        o["uuid"] for o in refreshed["data"]["contact"]["offers"]
        if o["type"] == "collectable_reward"
    }


def test_vouchers_flow_validate_lock_release_redeem_reverse_and_the_order(
    counter: tuple[Pos, LeatSandbox],
) -> None:
    pos, sandbox = counter
    valid = pos.send("voucher.validate", code="WELCOME-JANE")
    assert valid["status"] == "ok"
    assert valid["data"]["voucher"]["contact_uuid"] == JANE  # the voucher's own contact

    locked = pos.send("voucher.lock", code="WELCOME-JANE")
    assert locked["status"] == "ok" and locked["data"]["status"] == "LOCKED"
    voucher_uuid = locked["data"]["voucher_uuid"]
    release = pos.send("voucher.release", voucher_uuid=voucher_uuid)  # key remembered
    assert release["status"] == "accepted"
    assert pos.outcome(release["request_id"])["status"] == "ok"

    redeemed = pos.send("voucher.redeem", code="WELCOME-JANE", contact_uuid=JANE)
    assert redeemed["status"] == "ok"
    assert redeemed["data"]["voucher"]["status"] == "REDEEMED"
    reverse = pos.send("voucher.reverse", redemption_uuid=redeemed["data"]["redemption_uuid"])
    assert reverse["status"] == "accepted"
    assert pos.outcome(reverse["request_id"])["status"] == "ok"
    assert pos.send("voucher.validate", code="WELCOME-JANE")["data"]["voucher"]["valid"] is True

    order = pos.send("order.create", customer={"contact_uuid": JANE},
                     order=order_body("flow-order-1"))
    assert order["status"] == "ok"
    state = pos.send("order.get", external_identifier="flow-order-1")
    assert state["status"] == "ok"
    assert state["data"]["state"] in ("queued", "delivered")
    assert [o["external_identifier"] for o in sandbox.orders()] in ([], ["flow-order-1"])


# -- a damaged command ledger: never recreated, commands refused, orders go on ---------------


def _record_one_redeem(path: Path) -> None:
    """A ledger that holds a spend (what stops a retried request_id from spending twice)."""
    Ledger.prepare(path)
    ledger = Ledger(path)
    try:
        assert ledger.begin("spent-1", "reward.redeem", {"reward_uuid": COFFEE}, None) is None
        ledger.finish("spent-1", {"status": "ok", "data": {"uuid": "r-1"}})
    finally:
        ledger.close()


@pytest.mark.parametrize("damage", ["zero-bytes", "deleted", "garbage", "swapped"])
def test_a_damaged_ledger_is_refused_never_recreated(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "commands.sqlite3"
    _record_one_redeem(path)
    if damage == "zero-bytes":
        os.truncate(path, 0)
    elif damage == "deleted":
        for file in tmp_path.glob("commands.sqlite3*"):
            if not file.name.endswith(".id"):
                file.unlink()
    elif damage == "garbage":
        path.write_bytes(b"\x00not a database" * 512)
    else:  # another device's ledger copied in
        other = tmp_path / "other" / "commands.sqlite3"
        _record_one_redeem(other)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        shutil.copy(other, path)
    size = path.stat().st_size if path.exists() else None
    with pytest.raises(LedgerDamaged) as caught:
        Ledger.prepare(path)
    assert "commands.sqlite3" in caught.value.reason
    assert (path.stat().st_size if path.exists() else None) == size  # left as found


def test_an_older_copy_of_the_ledger_put_back_is_refused_as_rolled_back(tmp_path: Path) -> None:
    path = tmp_path / "commands.sqlite3"
    _record_one_redeem(path)
    backup = tmp_path / "backup"
    backup.mkdir()
    for file in tmp_path.glob("commands.sqlite3*"):  # a backup of the ledger alone
        if file.name in ("commands.sqlite3", "commands.sqlite3-wal"):
            shutil.copy(file, backup / file.name)
    ledger = Ledger(path)
    try:  # a second spend, after the backup
        assert ledger.begin("spent-2", "reward.redeem", {"reward_uuid": COFFEE}, None) is None
        ledger.finish("spent-2", {"status": "ok", "data": {"uuid": "r-2"}})
    finally:
        ledger.close()
    Ledger.prepare(path)  # as it is: the mark agrees
    for file in backup.iterdir():  # the backup put back: spent-2 would be spent again
        shutil.copy(file, path.with_name(file.name))
    size = path.stat().st_size
    with pytest.raises(LedgerDamaged) as caught:
        Ledger.prepare(path)
    assert "rolled back" in caught.value.reason
    assert "counts 2 write(s), its mark commands.sqlite3.mark 4" in caught.value.reason
    assert path.stat().st_size == size  # left as found


def test_a_ledger_ahead_of_its_mark_catches_the_mark_up(tmp_path: Path) -> None:
    """A stop between a write's commit and its mark leaves the mark one behind."""
    path = tmp_path / "commands.sqlite3"
    _record_one_redeem(path)
    marks = MarkFile(mark_path(path))
    mark = marks.read()
    assert mark is not None and mark.stored == 2  # the running row, then its outcome
    marks.create(replace(mark, stored=1))
    Ledger.prepare(path)
    assert marks.read() == mark
    mark_path(path).unlink()  # a ledger older than marks: adopted as it is
    Ledger.prepare(path)
    assert marks.read() == mark


def test_a_fresh_or_older_ledger_is_adopted_and_checked_again(tmp_path: Path) -> None:
    path = tmp_path / "commands.sqlite3"
    _record_one_redeem(path)
    identity_path(path).unlink()  # as a ledger made before identities
    Ledger.prepare(path)  # adopted: the identity file is written
    Ledger.prepare(path)  # and agrees from now on
    assert identity_path(path).read_text(encoding="ascii")


def test_device_with_a_damaged_ledger_refuses_commands_and_takes_orders(
    broker: Mosquitto, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    _record_one_redeem(state / "commands.sqlite3")
    os.truncate(state / "commands.sqlite3", 0)
    with running_device(broker, tmp_path) as (pos, _):
        refused = pos.send("reward.redeem", contact_uuid=JANE, reward_uuid=COFFEE)
        order = pos.send("order.create", customer={"contact_uuid": JANE},
                         order=order_body("after-ledger-damage"))
        states = pos.states(lambda state: "commands" in state)
    assert refused["status"] == "error"
    assert refused["error"]["code"] == "storage_damaged"
    assert order["status"] == "ok"
    assert (state / "commands.sqlite3").stat().st_size == 0  # never silently recreated
    last = states[-1]
    contract.validate("state", last)
    assert "empty (0 bytes)" in last["commands"]["damaged"]
