"""Tests of the durable outbox and its technician CLI, on real SQLite files."""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance import outbox as outbox_module
from appliance import outbox_cli
from appliance.errors import OutboxError
from appliance.markfile import Mark, MarkFile
from appliance.outbox import ORDER_NOT_DELIVERED, Outbox
from appliance.outbox_guard import mark_path
from appliance.outbox_items import Kind, OutboxConflict, OutboxFull, State, backoff_delay

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_750_000_000.0


class Clock:
    """A clock the test advances by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def order_body(external_identifier: str, **extra: Any) -> dict[str, Any]:
    """A realistic create-and-process body."""
    return {
        "external_identifier": external_identifier,
        "status": "COMPLETED",
        "payment_status": "PAID",
        "total_order_amount": 1250,
        "business_profile": {"uuid": "shop-1"},
        "line_items": [
            {"external_identifier": "l1", "name": "Coffee", "quantity": 2, "price": 325,
             "total_amount": 650},
            {"external_identifier": "l2", "name": "Cake", "quantity": 1, "price": 600,
             "total_amount": 600},
        ],
        **extra,
    }


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "outbox.sqlite3"


@pytest.fixture
def box(path: Path, clock: Clock) -> Iterator[Outbox]:
    ob = Outbox(path, clock=clock, min_free_bytes=0)
    try:
        yield ob
    finally:
        ob.close()


def rows(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT id, kind, external_identifier, body, state FROM outbox ORDER BY id"
        ).fetchall()
    finally:
        conn.close()


# -- opening ------------------------------------------------------------------------------


def test_outbox_open_sets_wal_full_and_busy_timeout(box: Outbox, path: Path) -> None:
    conn = box.connection
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    assert path.parent.stat().st_mode & 0o777 == 0o700
    indexes = {r[1] for r in conn.execute("PRAGMA index_list(outbox)")}
    assert {"outbox_kind_external", "outbox_state_next"} <= indexes


def test_outbox_reopen_keeps_items(path: Path, clock: Clock) -> None:
    with Outbox(path, clock=clock, min_free_bytes=0) as first:
        first.enqueue(Kind.ORDER, "A-1", order_body("A-1"))
    with Outbox(path, clock=clock, min_free_bytes=0) as second:
        item = second.find(Kind.ORDER, "A-1")
        assert item is not None
        assert item.body == order_body("A-1")


# -- enqueue ------------------------------------------------------------------------------


def test_enqueue_stores_pending_item(box: Outbox, clock: Clock) -> None:
    result = box.enqueue(
        Kind.ORDER, "A-1", order_body("A-1"), customer_identifier="LC-1", transaction="t-9"
    )
    item = result.item
    assert result.created
    assert item.state is State.PENDING
    assert (item.kind, item.external_identifier, item.customer_identifier) == (
        Kind.ORDER, "A-1", "LC-1")
    assert item.transaction == "t-9"
    assert item.attempts == 0
    assert item.next_attempt_at == item.created_at == clock.now
    assert not item.ambiguous
    assert item.result is None
    assert box.get(item.id) == item


def test_enqueue_same_twice_is_one_row(box: Outbox, path: Path) -> None:
    first = box.enqueue(Kind.ORDER, "A-1", {"b": 1, "a": [1, 2]}, customer_identifier="LC-1")
    again = box.enqueue(Kind.ORDER, "A-1", {"a": [1, 2], "b": 1}, customer_identifier="LC-1",
                        transaction="another-transaction")
    assert first.created
    assert not again.created
    assert again.item == first.item
    assert len(rows(path)) == 1
    assert rows(path)[0][3] == '{"a":[1,2],"b":1}'  # canonical JSON text


def test_enqueue_conflicting_body_names_the_item(box: Outbox, path: Path) -> None:
    first = box.enqueue(Kind.ORDER, "A-1", order_body("A-1"))
    with pytest.raises(OutboxConflict, match=f"outbox item {first.item.id}"):
        box.enqueue(Kind.ORDER, "A-1", order_body("A-1", total_order_amount=1))
    with pytest.raises(OutboxConflict):
        box.enqueue(Kind.ORDER, "A-1", order_body("A-1"), customer_identifier="LC-2")
    assert len(rows(path)) == 1


def test_enqueue_same_identifier_different_kind_is_separate(box: Outbox) -> None:
    box.enqueue(Kind.ORDER, "X", order_body("X"))
    result = box.enqueue(Kind.RETURN, "X", {"order": {"external_identifier": "X"}},
                         order_external_identifier="X")
    assert result.created


def test_enqueue_refuses_bad_input(box: Outbox, path: Path) -> None:
    with pytest.raises(OutboxError, match="external_identifier"):
        box.enqueue(Kind.ORDER, "", {})
    with pytest.raises(OutboxError, match="JSON"):
        box.enqueue(Kind.ORDER, "A", {"amount": float("nan")})
    with pytest.raises(OutboxError, match="JSON"):
        box.enqueue(Kind.ORDER, "A", {"when": object()})
    with pytest.raises(OutboxError, match="only a return"):
        box.enqueue(Kind.ORDER, "A", {}, order_external_identifier="B")
    assert rows(path) == []


def test_enqueue_over_cap_is_outbox_full_with_numbers(path: Path, clock: Clock) -> None:
    with Outbox(path, clock=clock, max_items=3, min_free_bytes=0) as box:
        ids = [box.enqueue(Kind.ORDER, f"A-{i}", {"i": i}).item.id for i in range(3)]
        with pytest.raises(OutboxFull, match=r"outbox full: 3 orders waiting \(max 3\)"):
            box.enqueue(Kind.ORDER, "A-3", {"i": 3})
        assert not box.enqueue(Kind.ORDER, "A-0", {"i": 0}).created  # repeats still answer
        box.claim(ids[0])
        box.mark_delivered(ids[0], {"points": 1})
        assert box.enqueue(Kind.ORDER, "A-3", {"i": 3}).created  # delivered ones don't count
        assert box.depth() == 3


def test_enqueue_disk_nearly_full_is_outbox_full(
    box: Outbox, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box.min_free_bytes = 50 * 2**20

    def nearly_full(_path: object) -> Any:
        return outbox_module.shutil._ntuple_diskusage(2**30, 2**30 - 2**20, 2**20)  # type: ignore[attr-defined]

    monkeypatch.setattr(outbox_module.shutil, "disk_usage", nearly_full)
    with pytest.raises(OutboxFull, match="disk nearly full: 1 MiB free"):
        box.enqueue(Kind.ORDER, "A-1", order_body("A-1"))
    assert rows(path) == []


def test_enqueue_sqlite_full_is_outbox_full_and_stores_nothing(box: Outbox, path: Path) -> None:
    box.enqueue(Kind.ORDER, "A-0", order_body("A-0"))
    pages = box.connection.execute("PRAGMA page_count").fetchone()[0]
    box.connection.execute(f"PRAGMA max_page_count = {pages}")
    big = order_body("A-1", note="x" * 200_000)
    with pytest.raises(OutboxFull, match="disk full: database or disk is full"):
        box.enqueue(Kind.ORDER, "A-1", big)
    assert [r[2] for r in rows(path)] == ["A-0"]
    assert box.find(Kind.ORDER, "A-1") is None
    assert box.enqueue(Kind.ORDER, "A-2", {"small": True}).created  # connection still usable


# -- state machine ------------------------------------------------------------------------


def test_claim_deliver(box: Outbox, clock: Clock) -> None:
    item = box.enqueue(Kind.ORDER, "A-1", order_body("A-1")).item
    clock.now += 5
    claimed = box.claim(item.id)
    assert claimed is not None
    assert (claimed.state, claimed.attempts, claimed.updated_at) == (
        State.SENDING, 1, clock.now)
    assert box.claim(item.id) is None
    assert box.depth() == 1
    done = box.mark_delivered(item.id, {"leat_uuid": "u-1", "points": 12, "new_balance": 40})
    assert done.state is State.DELIVERED
    assert done.result == {"leat_uuid": "u-1", "points": 12, "new_balance": 40}
    assert box.depth() == 0


def test_retry_schedules_and_ambiguous_is_sticky(box: Outbox, clock: Clock) -> None:
    item = box.enqueue(Kind.ORDER, "A-1", order_body("A-1")).item
    box.claim(item.id)
    after = box.mark_retry(item.id, delay_s=30, error="timeout", ambiguous=True)
    assert after.state is State.PENDING
    assert after.next_attempt_at == clock.now + 30
    assert after.ambiguous
    assert after.error_message == "timeout"
    assert box.due(now=clock.now + 29) == []
    assert [i.id for i in box.due(now=clock.now + 30)] == [item.id]
    box.claim(item.id)
    again = box.mark_retry(item.id, delay_s=1, error="503", ambiguous=False)
    assert again.ambiguous  # sticky
    assert again.attempts == 2
    box.claim(item.id)
    assert not box.mark_delivered(item.id, {"points": 1}).ambiguous


def test_dead_then_retry_resets_attempts(box: Outbox, clock: Clock) -> None:
    item = box.enqueue(Kind.ORDER, "A-1", order_body("A-1")).item
    box.claim(item.id)
    dead = box.mark_dead(item.id, code=1003, message="invalid input")
    assert (dead.state, dead.error_code, dead.error_message) == (
        State.DEAD, 1003, "invalid input")
    assert box.depth() == 0
    clock.now += 100
    revived = box.retry(item.id)
    assert (revived.state, revived.attempts, revived.next_attempt_at) == (
        State.PENDING, 0, clock.now)
    assert revived.error_code is None


@pytest.mark.parametrize(
    ("setup", "action"),
    [
        ("pending", lambda b, i: b.mark_delivered(i, {})),
        ("pending", lambda b, i: b.mark_retry(i, delay_s=1, error="x", ambiguous=False)),
        ("pending", lambda b, i: b.retry(i)),
        ("sending", lambda b, i: b.retry(i)),
        ("sending", lambda b, i: b.drop(i)),
        ("delivered", lambda b, i: b.drop(i)),
        ("delivered", lambda b, i: b.mark_dead(i, code=None, message="x")),
        ("delivered", lambda b, i: b.mark_retry(i, delay_s=1, error="x", ambiguous=False)),
        ("dead", lambda b, i: b.mark_delivered(i, {})),
    ],
)
def test_illegal_transitions_raise_and_change_nothing(box: Outbox, setup: str, action: Any) -> None:
    item = box.enqueue(Kind.ORDER, "A-1", order_body("A-1")).item
    if setup != "pending":
        box.claim(item.id)
    if setup == "delivered":
        box.mark_delivered(item.id, {"points": 1})
    if setup == "dead":
        box.mark_dead(item.id, code=None, message="x")
    before = box.get(item.id)
    with pytest.raises(OutboxError, match=f"outbox item {item.id} is {setup}"):
        action(box, item.id)
    assert box.get(item.id) == before


def test_unknown_id_raises(box: Outbox) -> None:
    assert box.get(99) is None
    assert box.claim(99) is None
    for action in (lambda: box.retry(99), lambda: box.drop(99),
                   lambda: box.mark_delivered(99, {})):
        with pytest.raises(OutboxError, match="no outbox item 99"):
            action()


def test_drop_pending_and_dead(box: Outbox, path: Path) -> None:
    a = box.enqueue(Kind.ORDER, "A-1", order_body("A-1")).item
    b = box.enqueue(Kind.ORDER, "A-2", order_body("A-2")).item
    box.mark_dead(b.id, code=None, message="bad")
    assert box.drop(a.id) == a
    assert box.drop(b.id).state is State.DEAD
    assert rows(path) == []


# -- due ----------------------------------------------------------------------------------


def test_due_oldest_first_with_limit_and_schedule(box: Outbox, clock: Clock) -> None:
    ids = []
    for i in range(5):
        ids.append(box.enqueue(Kind.ORDER, f"A-{i}", {"i": i}).item.id)
        clock.now += 1
    assert [i.id for i in box.due(limit=3)] == ids[:3]
    box.claim(ids[0])
    box.mark_retry(ids[0], delay_s=60, error="x", ambiguous=False)
    assert [i.id for i in box.due()] == ids[1:]
    assert [i.id for i in box.due(now=T0 + 2.5)] == ids[1:3]
    assert [i.id for i in box.due(now=clock.now + 60)] == ids


def test_return_waits_for_its_order(box: Outbox) -> None:
    order = box.enqueue(Kind.ORDER, "A-1", order_body("A-1")).item
    ret = box.enqueue(Kind.RETURN, "R-1", {"order": {"external_identifier": "A-1"}},
                      order_external_identifier="A-1").item
    assert [i.id for i in box.due()] == [order.id]
    box.claim(order.id)
    assert box.due() == []
    box.mark_delivered(order.id, {"points": 5})
    assert [i.id for i in box.due()] == [ret.id]


def test_return_of_unknown_order_is_not_held_back(box: Outbox) -> None:
    ret = box.enqueue(Kind.RETURN, "R-1", {"order": {"external_identifier": "OLD"}},
                      order_external_identifier="OLD").item
    assert [i.id for i in box.due()] == [ret.id]


def test_return_of_dead_order_dies_and_revives_with_it(box: Outbox) -> None:
    order = box.enqueue(Kind.ORDER, "A-1", order_body("A-1")).item
    ret = box.enqueue(Kind.RETURN, "R-1", {"order": {"external_identifier": "A-1"}},
                      order_external_identifier="A-1").item
    box.mark_dead(order.id, code=1003, message="invalid")
    assert box.due() == []
    dead = box.get(ret.id)
    assert dead is not None
    assert (dead.state, dead.error_message) == (State.DEAD, ORDER_NOT_DELIVERED)
    box.retry(order.id)
    revived = box.get(ret.id)
    assert revived is not None
    assert revived.state is State.PENDING
    assert [i.id for i in box.due()] == [order.id]


def test_command_is_idempotent_on_its_request_id_and_never_held_back(box: Outbox) -> None:
    body = {"verb": "voucher.release", "args": {"voucher_uuid": "v-1", "release_key": "k"}}
    order = box.enqueue(Kind.ORDER, "A-1", order_body("A-1")).item
    box.enqueue(Kind.RETURN, "R-1", {}, order_external_identifier="A-1")
    box.mark_dead(order.id, code=1003, message="invalid")  # its return dies with it
    first = box.enqueue(Kind.COMMAND, "REQ-1", body, transaction="T-1")
    again = box.enqueue(Kind.COMMAND, "REQ-1", body, transaction="T-1")
    assert first.created and not again.created and again.item.id == first.item.id
    assert (first.item.kind, first.item.transaction) == (Kind.COMMAND, "T-1")
    with pytest.raises(OutboxConflict, match=f"item {first.item.id}"):
        box.enqueue(Kind.COMMAND, "REQ-1", {**body, "verb": "voucher.reverse"})
    with pytest.raises(OutboxError, match="only a return belongs to an order"):
        box.enqueue(Kind.COMMAND, "REQ-2", body, order_external_identifier="A-1")
    assert [i.id for i in box.due()] == [first.item.id]  # the dead order holds nothing back
    assert box.find(Kind.COMMAND, "REQ-1") == first.item


def test_command_waits_for_an_older_unfinished_command_on_the_same_object(box: Outbox) -> None:
    def add(request_id: str, verb: str, **args: str) -> int:
        return box.enqueue(Kind.COMMAND, request_id, {"verb": verb, "args": args}).item.id

    uncollect = add("Q-1", "reward.collect_reverse", redemption_uuid="red-1",
                    collectable_uuid="rec-1")
    reverse = add("Q-2", "reward.reverse", reception_uuid="rec-1")
    other = add("Q-3", "reward.reverse", reception_uuid="rec-2")
    release = add("Q-4", "voucher.release", voucher_uuid="v-1", release_key="k")
    unredeem = add("Q-5", "voucher.reverse", voucher_uuid="v-1")
    loose = add("Q-6", "reward.collect_reverse", redemption_uuid="red-9")  # no object known
    box.connection.execute("UPDATE outbox SET body = '{broken' WHERE id = ?", (loose,))
    box.connection.commit()
    assert [i.id for i in box.due()] == [uncollect, other, release]  # broken: made dead
    assert box.claim(uncollect) is not None
    assert [i.id for i in box.due()] == [other, release]  # still waits while it is sending
    box.mark_delivered(uncollect, {})
    box.claim(release)
    box.mark_dead(release, code=1003, message="wrong key")
    assert [i.id for i in box.due()] == [reverse, other, unredeem]


def test_corrupted_row_is_outbox_error_and_dead_in_due(box: Outbox, path: Path) -> None:
    good = box.enqueue(Kind.ORDER, "A-1", {"ok": 1}).item
    bad = box.enqueue(Kind.ORDER, "A-2", {"ok": 2}).item
    box.connection.execute("UPDATE outbox SET body = '{broken' WHERE id = ?", (bad.id,))
    box.connection.commit()
    with pytest.raises(OutboxError, match=f"outbox item {bad.id} is corrupted"):
        box.get(bad.id)
    assert [i.id for i in box.due()] == [good.id]
    assert box.connection.execute(
        "SELECT state FROM outbox WHERE id = ?", (bad.id,)).fetchone()[0] == "dead"


# -- concurrency, recovery, housekeeping --------------------------------------------------


def test_claim_is_exclusive_across_two_outboxes(path: Path) -> None:
    with Outbox(path, min_free_bytes=0) as setup:
        ids = [setup.enqueue(Kind.ORDER, f"A-{i}", {"i": i}).item.id for i in range(30)]
    wins: dict[str, list[int]] = {"a": [], "b": []}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def worker(name: str) -> None:
        try:
            with Outbox(path, min_free_bytes=0) as mine:
                for item_id in ids:
                    barrier.wait(timeout=10)
                    if mine.claim(item_id) is not None:
                        wins[name].append(item_id)
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(n,)) for n in wins]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert sorted(wins["a"] + wins["b"]) == ids  # every item claimed exactly once
    assert not set(wins["a"]) & set(wins["b"])


def test_recover_makes_sending_pending_and_ambiguous(box: Outbox) -> None:
    a = box.enqueue(Kind.ORDER, "A-1", {}).item
    b = box.enqueue(Kind.ORDER, "A-2", {}).item
    box.claim(a.id)
    assert box.recover() == 1
    recovered = box.get(a.id)
    assert recovered is not None
    assert (recovered.state, recovered.ambiguous, recovered.attempts) == (
        State.PENDING, True, 1)
    untouched = box.get(b.id)
    assert untouched is not None
    assert not untouched.ambiguous
    assert box.recover() == 0


def test_prune_deletes_old_delivered_only(path: Path, clock: Clock) -> None:
    with Outbox(path, clock=clock, retention_s=100, min_free_bytes=0) as box:
        old = box.enqueue(Kind.ORDER, "A-1", {}).item
        box.claim(old.id)
        box.mark_delivered(old.id, {})
        dead = box.enqueue(Kind.ORDER, "A-2", {}).item
        box.mark_dead(dead.id, code=None, message="x")
        pending = box.enqueue(Kind.ORDER, "A-3", {}).item
        clock.now += 50
        recent = box.enqueue(Kind.ORDER, "A-4", {}).item
        box.claim(recent.id)
        box.mark_delivered(recent.id, {})
        assert box.prune(now=clock.now + 60) == 1
        assert [i.id for i in box.items()] == [dead.id, pending.id, recent.id]


def test_depth_oldest_age_and_items_filter(box: Outbox, clock: Clock) -> None:
    assert box.oldest_pending_age() is None
    a = box.enqueue(Kind.ORDER, "A-1", {}).item
    clock.now += 10
    b = box.enqueue(Kind.ORDER, "A-2", {}).item
    box.claim(a.id)
    clock.now += 5
    assert box.depth() == 2
    assert box.oldest_pending_age() == 15
    assert [i.id for i in box.items([State.SENDING])] == [a.id]
    assert [i.id for i in box.items([State.PENDING, State.SENDING], limit=1)] == [a.id]
    assert box.items([]) == []
    assert len(box.items()) == 2
    assert b.id in [i.id for i in box.items()]


# -- backoff ------------------------------------------------------------------------------


def test_backoff_full_jitter_bounds() -> None:
    rng = random.Random(7)
    for attempt in range(1, 40):
        ceiling = min(300.0, 2.0 ** (attempt - 1))
        delays = [backoff_delay(attempt, rng=rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # the whole range is used (full jitter)
        assert min(delays) < ceiling * 0.2
    assert backoff_delay(10_000, rng=rng) <= 300.0  # no overflow


def test_backoff_retry_after_is_a_floor() -> None:
    rng = random.Random(3)
    assert all(backoff_delay(1, rng=rng, retry_after=30) >= 30 for _ in range(100))
    assert backoff_delay(1, rng=rng, retry_after=600) == 300  # beyond the cap: the cap (a
    # proxy's Retry-After of a day must not hold orders that long)
    assert all(
        backoff_delay(a, base_s=0.5, cap_s=10, rng=rng) <= 10 for a in range(1, 30)
    )
    assert backoff_delay(3, rng=random.Random(1)) == backoff_delay(3, rng=random.Random(1))


# -- durability across kill -9 ------------------------------------------------------------

WRITER = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from appliance.outbox import Outbox
from appliance.outbox_items import Kind
box = Outbox(Path(sys.argv[2]), min_free_bytes=0)
prefix = sys.argv[3]
i = 0
while True:
    ext = f"{prefix}-{i}"
    box.enqueue(Kind.ORDER, ext, {"external_identifier": ext, "pad": "x" * 500, "n": i})
    print(ext, flush=True)
    i += 1
"""


def test_enqueue_survives_kill_9(path: Path) -> None:
    Outbox(path, min_free_bytes=0).close()
    rng = random.Random(20240601)
    printed: list[str] = []
    for run in range(25):
        wanted = rng.randint(1, 60)
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(ROOT), str(path), f"run{run}"],
            stdout=subprocess.PIPE, text=True,
        )
        assert proc.stdout is not None
        try:
            for _ in range(wanted):
                line = proc.stdout.readline()
                assert line.endswith("\n"), f"writer stopped early (run {run})"
                printed.append(line.strip())
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            proc.stdout.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = conn.execute("SELECT external_identifier, body, state FROM outbox").fetchall()
    finally:
        conn.close()
    names = [name for name, _, _ in stored]
    assert len(names) == len(set(names))  # no duplicates
    assert set(printed) <= set(names)  # every acknowledged enqueue is on disk
    for name, body, state in stored:  # nothing half-written
        data = json.loads(body)
        assert data["external_identifier"] == name
        assert data["pad"] == "x" * 500
        assert state == "pending"
    mark = MarkFile(mark_path(path)).read()  # written after each commit: never ahead
    assert mark is not None
    assert len(names) - 1 <= mark.stored <= len(names)
    Outbox.prepare(path)  # a kill between a commit and its mark is not damage
    with Outbox(path, min_free_bytes=0) as box:
        assert box.depth() == len(names)
    last_id = max(r[0] for r in rows(path))
    assert MarkFile(mark_path(path)).read() == Mark(mark.identity, len(names), last_id)


# -- outbox_cli ---------------------------------------------------------------------------


def cli(box: Outbox, *argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    outbox_cli.add_arguments(parser)
    out = io.StringIO()
    code = outbox_cli.main(parser.parse_args(argv), box, out)
    return code, out.getvalue()


@pytest.fixture
def filled(box: Outbox, clock: Clock) -> dict[str, int]:
    a = box.enqueue(Kind.ORDER, "A-1", order_body("A-1", contact={"email": "jan@example.com"}),
                    customer_identifier="LC-7F3K9Q2M").item
    clock.now += 120
    b = box.enqueue(Kind.ORDER, "A-2", order_body("A-2")).item
    box.claim(b.id)
    box.mark_dead(b.id, code=1003, message="invalid input: line_items.0.price")
    c = box.enqueue(Kind.ORDER, "A-3", order_body("A-3")).item
    box.claim(c.id)
    box.mark_retry(c.id, delay_s=90, error="timeout", ambiguous=True)
    clock.now += 30
    return {"pending": a.id, "dead": b.id, "retrying": c.id}


def test_cli_list_table(box: Outbox, filled: dict[str, int]) -> None:
    code, out = cli(box, "list")
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["ID", "KIND", "EXTERNAL", "ID", "STATE", "TRIES", "AGE",
                                "NEXT", "IN", "LAST", "ERROR"]
    assert len(lines) == 4
    assert lines[1].split()[:8] == ["1", "order", "A-1", "pending", "0", "2m30s", "now", "-"]
    assert "dead" in lines[2]
    assert "[1003] invalid input" in lines[2]
    assert lines[3].split()[:9] == ["3", "order", "A-3", "pending", "?", "1", "30s", "1m00s",
                                    "timeout"]
    starts = {line.index(word) for line, word in zip(lines, ["KIND", "order", "order"],
                                                           strict=False)}
    assert len(starts) == 1  # aligned columns


def test_cli_list_state_filter_and_json(box: Outbox, filled: dict[str, int]) -> None:
    code, out = cli(box, "list", "--state", "dead", "--json")
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in records] == [filled["dead"]]
    assert records[0]["error_code"] == 1003
    code, out = cli(box, "list", "--state", "delivered")
    assert (code, out.strip()) == (0, "no items in that state")


def test_cli_show_masks_only_contact_email(box: Outbox, filled: dict[str, int]) -> None:
    code, out = cli(box, "show", str(filled["pending"]))
    assert code == 0
    assert "jan@example.com" not in out
    assert "j***@e***.com" in out
    assert "LC-7F3K9Q2M" in out  # the scanned identifier is what the technician needs
    assert '"name": "Coffee"' in out  # pretty-printed body
    code, out = cli(box, "show", str(filled["pending"]), "--json")
    data = json.loads(out)
    assert data["body"]["contact"]["email"] == "j***@e***.com"
    assert data["body"]["line_items"][0]["price"] == 325
    stored = box.get(filled["pending"])
    assert stored is not None
    assert stored.body["contact"]["email"] == "jan@example.com"  # only the display is masked


def test_cli_lists_and_shows_a_command_by_its_verb_key_masked(box: Outbox, clock: Clock) -> None:
    args = {"voucher_uuid": "v-1", "release_key": "KEY-SECRET-123", "code": "SPRING-2X7Q"}
    item = box.enqueue(Kind.COMMAND, "REQ-7", {"verb": "voucher.release", "args": args},
                       transaction="T-7").item
    box.claim(item.id)
    box.mark_retry(item.id, delay_s=60, error="timeout", ambiguous=True)
    code, out = cli(box, "list")
    assert code == 0
    assert out.splitlines()[1].split()[:5] == ["1", "voucher.release", "REQ-7", "pending", "?"]
    code, out = cli(box, "show", str(item.id))
    assert code == 0
    assert out.splitlines()[0] == "item 1: voucher.release REQ-7"
    assert "request id:   REQ-7" in out
    assert "Leat is asked whether it took effect" in out
    assert "KEY-SECRET-123" not in out and '"release_key": "KEY-…"' in out
    code, out = cli(box, "show", str(item.id), "--json")
    data = json.loads(out)
    assert (data["kind"], data["verb"]) == ("command", "voucher.release")
    assert data["body"]["args"]["release_key"] == "KEY-…"
    stored = box.get(item.id)
    assert stored is not None and stored.body["args"] == args  # only the display is masked


def test_cli_unknown_id_exits_1(box: Outbox, capsys: pytest.CaptureFixture[str]) -> None:
    for action in ("show", "retry", "drop"):
        code, _ = cli(box, action, "42", *(["--yes"] if action == "drop" else []))
        assert code == 1
        assert "no outbox item 42" in capsys.readouterr().err


def test_cli_retry(box: Outbox, filled: dict[str, int],
                   capsys: pytest.CaptureFixture[str]) -> None:
    code, out = cli(box, "retry", str(filled["dead"]))
    assert code == 0
    assert "pending again" in out
    code, _ = cli(box, "retry", str(filled["pending"]))
    assert code == 1
    assert "is pending: expected dead" in capsys.readouterr().err


def test_cli_drop_needs_yes(box: Outbox, filled: dict[str, int]) -> None:
    code, out = cli(box, "drop", str(filled["dead"]))
    assert code == 1
    assert "add --yes" in out
    assert box.get(filled["dead"]) is not None
    code, out = cli(box, "drop", str(filled["dead"]), "--yes")
    assert code == 0
    assert "dropped item" in out
    assert box.get(filled["dead"]) is None
