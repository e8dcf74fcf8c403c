"""The outbox at start and after storage damage: prepared once, checked against its mark,
refused (never silently recreated) when truncated, emptied, deleted or rolled back; owners.

Real SQLite files throughout; the foreign-owner cases fork a child that drops to another uid.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_orders import CONTACT, order_body

from appliance import cli, outbox_guard
from appliance.errors import OutboxDamaged, OutboxError
from appliance.markfile import Mark, MarkFile
from appliance.outbox import Outbox, outbox_state
from appliance.outbox_guard import OutboxNotWritable
from appliance.outbox_items import Kind
from appliance.pos.intake import OrderRequests
from appliance.pos.ledger import Ledger, LedgerDamaged, ledger_files
from appliance.samples import write_demo_frames

SERVICE_UID = 4242  # the service user of these tests (no passwd entry needed)
ORDERS = 40


def fill(path: Path, count: int = ORDERS, start: int = 0) -> None:
    """`count` acked orders (each padded so the file spans many pages), then close."""
    with Outbox(path, min_free_bytes=0) as box:
        for i in range(start, start + count):
            box.enqueue(Kind.ORDER, f"A-{i}", {"i": i, "pad": "x" * 600})


def files(path: Path) -> set[str]:
    return {p.name for p in path.parent.iterdir()}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "outbox.sqlite3"


def assert_refused(path: Path, reason: str) -> None:
    """prepare() and every open refuse with `reason`; nothing was recreated."""
    before = {p.name: p.stat().st_size for p in path.parent.iterdir()}
    with pytest.raises(OutboxDamaged, match=reason):
        Outbox.prepare(path)
    with pytest.raises(OutboxDamaged, match=reason):
        Outbox(path)
    assert outbox_guard.read_flag(path) is not None
    after = {p.name: p.stat().st_size for p in path.parent.iterdir()
             if not p.name.endswith(".damaged")}
    before = {k: v for k, v in before.items() if not k.endswith(".damaged")}
    assert after == before  # not recreated, not touched
    state = outbox_state(path)
    assert state["depth"] is None
    assert state["damaged"] == outbox_guard.read_flag(path)


# -- first start ---------------------------------------------------------------------------


def test_100_fresh_starts_with_racing_threads_never_crash(tmp_path: Path) -> None:
    """Three threads (forwarder, state publisher, POS request) open a brand-new outbox at
    once; before the fix they raced on `PRAGMA journal_mode=WAL` ("database is locked")."""
    errors: list[BaseException] = []
    for run in range(100):
        path = tmp_path / f"device-{run}" / "outbox.sqlite3"
        barrier = threading.Barrier(3)

        def open_and_store(n: int, path: Path = path,
                           barrier: threading.Barrier = barrier) -> None:
            try:
                barrier.wait(timeout=10)
                with Outbox(path, min_free_bytes=0) as box:
                    box.enqueue(Kind.ORDER, f"T-{n}", {"n": n})
            except BaseException as exc:  # reported to the test thread
                errors.append(exc)

        threads = [threading.Thread(target=open_and_store, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert not errors, f"fresh start {run}: {errors[0]!r}"
        with Outbox(path) as box:
            assert box.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert box.depth() == 3
        mark = MarkFile(outbox_guard.mark_path(path)).read()
        assert mark is not None
        assert mark.stored == 3


def test_fresh_device_gets_database_and_mark(path: Path) -> None:
    Outbox.prepare(path)
    assert files(path) == {"outbox.sqlite3", "outbox.sqlite3.mark"}
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        identity, stored = conn.execute("SELECT identity, stored FROM outbox_meta").fetchone()
    finally:
        conn.close()
    assert stored == 0
    assert MarkFile(outbox_guard.mark_path(path)).read() == Mark(identity, 0, 0)
    with Outbox(path, min_free_bytes=0) as box:
        item = box.enqueue(Kind.ORDER, "A-1", {}).item
        assert not box.enqueue(Kind.ORDER, "A-1", {}).created  # a repeat stores nothing
    assert MarkFile(outbox_guard.mark_path(path)).read() == Mark(identity, 1, item.id)
    Outbox.prepare(path)  # again: nothing to do, nothing wrong


def test_per_thread_open_never_changes_the_journal_mode(path: Path) -> None:
    Outbox.prepare(path)
    with Outbox(path) as box:
        box.connection.execute("PRAGMA journal_mode = DELETE")  # what prepare() must repair
    with Outbox(path) as box:  # found not in WAL: prepare() (locked) sets it again
        assert box.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_outbox_from_before_the_mark_is_adopted(path: Path) -> None:
    path.parent.mkdir()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(outbox_guard.SCHEMA.split("CREATE TABLE IF NOT EXISTS outbox_meta")[0])
    with conn:
        for i in range(3):
            conn.execute(
                "INSERT INTO outbox (kind, external_identifier, body, state, next_attempt_at, "
                "created_at, updated_at) VALUES ('order', ?, '{}', 'pending', 0, 0, 0)",
                (f"OLD-{i}",))
    conn.close()
    Outbox.prepare(path)
    mark = MarkFile(outbox_guard.mark_path(path)).read()
    assert mark is not None
    assert (mark.stored, mark.last_id) == (3, 3)
    with Outbox(path, min_free_bytes=0) as box:
        assert box.depth() == 3
        box.enqueue(Kind.ORDER, "NEW", {})
    fill(path, 2, start=100)


def test_mark_behind_after_a_crash_is_caught_up_not_damage(path: Path) -> None:
    fill(path, 5)
    marks = MarkFile(outbox_guard.mark_path(path))
    mark = marks.read()
    assert mark is not None
    marks.create(Mark(mark.identity, 4, 4))  # died between the commit and the mark
    Outbox.prepare(path)
    assert marks.read() == Mark(mark.identity, 5, 5)


def test_torn_mark_slot_falls_back_to_the_other(path: Path) -> None:
    fill(path, 3)  # last write went to slot 3 % 2 = 1
    mark_file = outbox_guard.mark_path(path)
    data = bytearray(mark_file.read_bytes())
    data[512 + 10] ^= 0xFF  # tear slot 1
    mark_file.write_bytes(bytes(data))
    mark = MarkFile(mark_file).read()
    assert mark is not None
    assert mark.stored == 2  # slot 0: the write before; the database is ahead: no damage
    Outbox.prepare(path)
    data[10] ^= 0xFF  # both slots torn
    mark_file.write_bytes(bytes(data))
    assert_refused(path, "mark .* is unreadable")


# -- damage --------------------------------------------------------------------------------


def test_zero_byte_outbox_is_damage_not_recreated(path: Path) -> None:
    fill(path)
    os.truncate(path, 0)
    assert_refused(path, rf"empty \(0 bytes\), but its mark says {ORDERS} item")
    assert path.stat().st_size == 0


@pytest.mark.parametrize("keep", ["half", "two pages"])
def test_truncated_outbox_is_damage(path: Path, keep: str) -> None:
    fill(path)
    size = path.stat().st_size
    assert size > 8 * 4096
    os.truncate(path, size // 2 + 1000 if keep == "half" else 2 * 4096)
    assert_refused(path, "quick_check|not a readable SQLite database|rolled back")


def crashed_with_commits_in_the_wal(path: Path, tmp_path: Path) -> bytes:
    """The files as a kill -9 leaves them: the last acked orders only in the -wal (a copy
    taken while the writer is still open, before any checkpoint); returns the WAL's bytes."""
    fill(path, count=5)
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    with Outbox(path, min_free_bytes=0) as box:
        box.connection.execute("PRAGMA wal_autocheckpoint = 0")
        for i in range(3):
            box.enqueue(Kind.ORDER, f"IN-WAL-{i}", {"pad": "y" * 600})
        for file in path.parent.iterdir():
            (crashed / file.name).write_bytes(file.read_bytes())
    for file in path.parent.iterdir():
        file.unlink()
    for file in crashed.iterdir():
        (path.parent / file.name).write_bytes(file.read_bytes())
    wal = path.with_name(path.name + "-wal").read_bytes()
    assert len(wal) > 3 * 600
    return wal


@pytest.mark.parametrize("damage", ["garbage", "empty"])
def test_a_wal_holding_acked_orders_is_never_thrown_away(
    path: Path, tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    """SQLite deletes the -wal of a main file it cannot read as it closes a read-write
    connection; opening it at all would lose the orders only the WAL holds."""
    wal = crashed_with_commits_in_the_wal(path, tmp_path)
    path.write_bytes(b"\x00garbage" * 512 if damage == "garbage" else b"")
    for attempt in (lambda: Outbox.prepare(path), lambda: Outbox(path)):
        with pytest.raises(OutboxDamaged, match=r"holds .* bytes of commits|empty \(0 bytes\)"):
            attempt()
        assert path.with_name(path.name + "-wal").read_bytes() == wal
    code, out, _ = run_cli("outbox", "repair", "--accept-loss", "--config", str(config),
                           capsys=capsys)
    assert code == 0 and "aside" in out
    [aside] = [p for p in path.parent.iterdir() if p.name.startswith("outbox.sqlite3-wal.aside-")]
    assert aside.read_bytes() == wal  # moved aside whole, for sqlite3 .recover


def test_a_command_ledger_whose_wal_is_at_risk_is_damaged_not_opened(tmp_path: Path) -> None:
    ledger = tmp_path / "commands.sqlite3"
    Ledger.prepare(ledger)
    ledger.with_name(ledger.name + "-wal").write_bytes(b"\x37\x7f\x06\x82" + b"\0" * 4000)
    ledger.write_bytes(b"not a database")
    with pytest.raises(LedgerDamaged, match="holds 4004 bytes of commits"):
        Ledger.prepare(ledger)
    with pytest.raises(LedgerDamaged, match="holds 4004 bytes of commits"):
        Ledger(ledger)
    assert ledger.with_name(ledger.name + "-wal").stat().st_size == 4004


def roll_back(path: Path, tmp_path: Path, *, kept: int, lost: int) -> None:
    """Store `kept` orders, copy the file, store `lost` more, then restore the older copy
    over it (a backup restored, or an SD card that lost its last writes)."""
    fill(path, kept)
    shutil.copy(path, tmp_path / "older.sqlite3")
    fill(path, lost, start=kept)
    shutil.copy(tmp_path / "older.sqlite3", path)


def test_rolled_back_outbox_is_damage(path: Path, tmp_path: Path) -> None:
    roll_back(path, tmp_path, kept=10, lost=ORDERS - 10)
    assert_refused(path, f"rolled back: it has stored 10 item.*its mark says {ORDERS}")


def test_another_database_in_its_place_is_damage(path: Path, tmp_path: Path) -> None:
    fill(path, 3)
    other = tmp_path / "other" / "outbox.sqlite3"
    fill(other, 5)
    shutil.copy(other, path)
    assert_refused(path, "not the database its mark belongs to")


def test_deleted_outbox_with_its_mark_is_damage_not_recreated(path: Path) -> None:
    fill(path)
    path.unlink()
    with pytest.raises(OutboxDamaged, match=f"missing, but its mark says {ORDERS} item"):
        Outbox(path)
    with pytest.raises(OutboxDamaged, match="missing"):
        Outbox.prepare(path)
    assert not path.exists()
    assert outbox_state(path)["damaged"].endswith(f"(the last was item {ORDERS})")


def test_wal_left_without_its_database_is_damage(path: Path) -> None:
    Outbox.prepare(path)
    path.unlink()
    (path.parent / "outbox.sqlite3-wal").write_bytes(b"\x37\x7f\x06\x82" + b"\0" * 60)
    with pytest.raises(OutboxDamaged, match=r"missing, but .*-wal is not"):
        Outbox.prepare(path)  # its frames could be replayed into a new file
    assert not path.exists()


def test_no_outbox_without_create_is_a_clear_error(path: Path) -> None:
    path.parent.mkdir()
    with pytest.raises(OutboxError, match=f"there is no outbox at {path}"):
        Outbox(path, create=False)
    with pytest.raises(OutboxError, match="there is no outbox"):
        Outbox(path, readonly=True)
    assert files(path) == set()


def test_file_replaced_while_open_refuses_the_ack(path: Path, tmp_path: Path) -> None:
    fill(path, 1)
    with Outbox(path, min_free_bytes=0) as box:
        os.replace(shutil.copy(path, tmp_path / "copy.sqlite3"), path)
        with pytest.raises(OutboxDamaged, match="deleted or replaced while it was open"):
            box.enqueue(Kind.ORDER, "LOST", {})


def test_damage_found_elsewhere_refuses_an_open_outbox(path: Path) -> None:
    fill(path, 1)
    with Outbox(path, min_free_bytes=0) as box:
        outbox_guard.write_flag(path, "found by another thread")
        with pytest.raises(OutboxDamaged, match="found by another thread"):
            box.enqueue(Kind.ORDER, "A-0", {"i": 0, "pad": "x" * 600})  # even a repeat
        assert box.depth() == 1


def test_damaged_outbox_answers_storage_damaged_and_stores_nothing(path: Path) -> None:
    fill(path)
    os.truncate(path, 0)
    replies: list[dict[str, Any]] = []
    requests = OrderRequests(path, lambda t, p, c: replies.append(dict(p)),
                             base_topic="b", shop_uuid=None)
    request = {"customer": {"contact_uuid": CONTACT}, "order": order_body("POS-1")}
    response = requests.handle("order.create", json.dumps(request).encode())
    assert response["status"] == "error"
    assert response["error"]["code"] == "storage_damaged"
    assert "empty (0 bytes)" in response["error"]["message"]
    assert path.stat().st_size == 0  # nothing stored, nothing recreated


# -- the technician ------------------------------------------------------------------------


def run_cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(list(argv))  # conftest's restore_logging undoes its logging set-up
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def config(path: Path, tmp_path: Path) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(f'[device]\nid = "t"\nstate_dir = "{path.parent}"\n', encoding="utf-8")
    return config


def test_cli_list_never_creates_an_outbox(
    path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli("outbox", "list", "--config", str(config), capsys=capsys)
    assert code == 1
    assert f"there is no outbox at {path}" in err
    assert not path.parent.exists()
    path.parent.mkdir()
    for argv in (["outbox", "list", "--config", str(config)],
                 ["outbox", "--config", str(config), "show", "1"]):
        assert run_cli(*argv, capsys=capsys)[0] == 1
    assert files(path) == set()


def test_cli_config_after_the_action(
    path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(path, 2)
    for argv in (["outbox", "list", "--config", str(config)],
                 ["outbox", "--config", str(config), "list"],
                 ["outbox", "list", "--json", "--config", str(config), "--log-level", "ERROR"]):
        code, out, _ = run_cli(*argv, capsys=capsys)
        assert code == 0
        assert "A-1" in out


def test_cli_list_of_a_damaged_outbox_warns(
    path: Path, config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    roll_back(path, tmp_path, kept=2, lost=1)
    code, out, err = run_cli("outbox", "list", "--config", str(config), capsys=capsys)
    assert code == 0
    assert "A-1" in out
    assert "damaged and refuses new orders" in err
    assert "rolled back" in err
    assert outbox_guard.read_flag(path) is None  # list only reads


def test_cli_repair_keeps_a_readable_rolled_back_outbox(
    path: Path, config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    roll_back(path, tmp_path, kept=2, lost=3)
    with pytest.raises(OutboxDamaged):
        Outbox.prepare(path)
    code, out, _ = run_cli("outbox", "repair", "--config", str(config), capsys=capsys)
    assert code == 1
    assert "rolled back" in out
    assert "--accept-loss" in out
    with pytest.raises(OutboxDamaged):
        Outbox(path)  # still refused
    code, out, _ = run_cli("outbox", "repair", "--accept-loss", "--config", str(config),
                           capsys=capsys)
    assert code == 0
    assert "kept" in out
    Outbox.prepare(path)
    with Outbox(path, min_free_bytes=0) as box:
        assert [i.external_identifier for i in box.items()] == ["A-0", "A-1"]
        assert box.enqueue(Kind.ORDER, "NEW", {}).created
    code, out, _ = run_cli("outbox", "repair", "--config", str(config), capsys=capsys)
    assert (code, out.strip()) == (0, f"outbox {path} is not damaged: nothing to repair")


def test_cli_repair_sets_an_unreadable_outbox_aside(
    path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(path)
    os.truncate(path, 0)
    with pytest.raises(OutboxDamaged):
        Outbox.prepare(path)
    code, out, _ = run_cli("outbox", "repair", "--accept-loss", "--config", str(config),
                           capsys=capsys)
    assert code == 0
    assert "aside" in out
    names = files(path)
    assert {"outbox.sqlite3", "outbox.sqlite3.mark"} <= names
    assert not {n for n in names if n.endswith(".damaged")}
    assert len([n for n in names if ".aside-" in n]) == 2  # the empty file and its mark
    Outbox.prepare(path)
    with Outbox(path, min_free_bytes=0) as box:
        assert box.depth() == 0
        box.enqueue(Kind.ORDER, "NEW", {})


def test_moving_all_outbox_files_aside_is_a_fresh_device(path: Path, tmp_path: Path) -> None:
    fill(path)
    os.truncate(path, 0)
    with pytest.raises(OutboxDamaged):
        Outbox.prepare(path)
    aside = tmp_path / "aside"
    aside.mkdir()
    for name in files(path):  # the documented manual alternative: mv outbox.sqlite3* ...
        (path.parent / name).rename(aside / name)
    Outbox.prepare(path)
    with Outbox(path, min_free_bytes=0) as box:
        assert box.enqueue(Kind.ORDER, "NEW", {}).created


# -- owners --------------------------------------------------------------------------------


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another uid can reach (pytest's tmp_path is private to root)."""
    top = Path(tempfile.mkdtemp(prefix="outbox-owner-"))
    top.chmod(0o755)
    try:
        yield top
    finally:
        shutil.rmtree(top)


def as_service_user(action: Any) -> str:
    """Run `action()` in a forked child as SERVICE_UID; "ok" or the error's text."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child's coverage is not collected)
        os.close(read_end)
        try:
            os.setgroups([])
            os.setresgid(SERVICE_UID, SERVICE_UID, SERVICE_UID)
            os.setresuid(SERVICE_UID, SERVICE_UID, SERVICE_UID)
            action()
            result = "ok"
        except BaseException as exc:
            result = f"{type(exc).__name__}: {exc}"
        os.write(write_end, result.encode()[:60000])
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        result = pipe.read().decode()
    os.waitpid(pid, 0)
    return result


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create files as another uid")
def test_a_read_only_state_directory_of_the_service_user_names_chmod(
    shared_dir: Path,
) -> None:
    """Owned by the right user already: the mode is the problem, and chown would not fix it."""
    state = shared_dir / "state"
    state.mkdir()
    os.chown(state, SERVICE_UID, SERVICE_UID)
    state.chmod(0o555)
    refused = as_service_user(lambda: Outbox.prepare(state / "outbox.sqlite3"))
    assert refused.startswith(OutboxNotWritable.__name__)
    assert f"fix: chmod u+rwx {state}" in refused
    assert "chown" not in refused


def test_root_created_outbox_is_refused_by_the_service_user_then_fixed_by_root(
    shared_dir: Path,
) -> None:
    state = shared_dir / "state"
    state.mkdir(mode=0o750)
    os.chown(state, SERVICE_UID, SERVICE_UID)  # what systemd's StateDirectory= makes
    path = state / "outbox.sqlite3"
    fill(path, 2)
    for name in ("outbox.sqlite3-shm", "outbox.sqlite3-wal"):
        (state / name).touch()
    for file in outbox_guard.companions(path)[:4]:  # as an older `sudo leat-scanner outbox`
        os.chown(file, 0, 0)                       # left them: root's, 0644
        file.chmod(0o644)

    refused = as_service_user(lambda: Outbox.prepare(path))
    assert refused.startswith(OutboxNotWritable.__name__)
    assert f"{path} belongs to root (uid 0)" in refused
    assert f"runs as uid {SERVICE_UID}" in refused
    assert f"fix: sudo chown {SERVICE_UID}:{SERVICE_UID} {path}" in refused
    assert as_service_user(lambda: fill(path, 1, start=10)).startswith("OutboxNotWritable")

    def state_names_the_fix() -> None:
        reason = outbox_state(path).get("damaged") or ""
        if "fix: sudo chown" not in reason:
            raise AssertionError(f"state does not name the fix: {reason!r}")

    assert as_service_user(state_names_the_fix) == "ok"

    Outbox.prepare(path)  # as root: the files go to the state directory's owner
    for name in files(path):
        assert (state / name).stat().st_uid == SERVICE_UID, name
    assert as_service_user(lambda: fill(path, 1, start=10)) == "ok"
    with Outbox(path) as box:
        assert box.depth() == 3


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_sudo_outbox_list_leaves_files_the_service_user_can_write(
    shared_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = shared_dir / "state"
    state.mkdir(mode=0o750)
    os.chown(state, SERVICE_UID, SERVICE_UID)
    path = state / "outbox.sqlite3"
    assert as_service_user(lambda: fill(path, 2)) == "ok"
    config = shared_dir / "config.toml"
    config.write_text(f'[device]\nid = "t"\nstate_dir = "{state}"\n', encoding="utf-8")
    code, out, _ = run_cli("outbox", "list", "--config", str(config), capsys=capsys)
    assert code == 0
    assert "A-1" in out
    assert "outbox.sqlite3-shm" in files(path)  # SQLite made it, even read-only
    for name in files(path):
        assert (state / name).stat().st_uid == SERVICE_UID, name
    assert as_service_user(lambda: fill(path, 1, start=5)) == "ok"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create files as another uid")
def test_root_created_command_ledger_is_refused_by_the_service_user_then_fixed_by_root(
    shared_dir: Path,
) -> None:
    state = shared_dir / "state"
    state.mkdir(mode=0o750)
    os.chown(state, SERVICE_UID, SERVICE_UID)
    path = state / "commands.sqlite3"
    Ledger.prepare(path)  # as root (a technician's command): given to the directory owner
    for file in ledger_files(path):
        if file.exists():
            assert file.stat().st_uid == SERVICE_UID, file
    for file in ledger_files(path):  # as if an older version, run as root, had left them
        if file.exists():
            os.chown(file, 0, 0)
            file.chmod(0o644)

    refused = as_service_user(lambda: Ledger.prepare(path))
    assert refused.startswith(LedgerDamaged.__name__)
    assert f"fix: sudo chown {SERVICE_UID}:{SERVICE_UID} {path}" in refused

    Ledger.prepare(path)
    assert as_service_user(lambda: Ledger.prepare(path)) == "ok"


def test_damage_is_logged_at_error(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fill(path, 2)
    os.truncate(path, 0)
    with caplog.at_level(logging.ERROR), pytest.raises(OutboxError):
        Outbox.prepare(path)
    assert any(r.levelno == logging.ERROR and "empty (0 bytes)" in r.getMessage()
               for r in caplog.records)


# -- commands: an outbox made before them is rebuilt in place -----------------------------

OLD_SCHEMA = outbox_guard.SCHEMA.replace("('order', 'return', 'command')", "('order', 'return')")


def old_outbox(path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """An outbox as the code before commands made it (its schema, its mark), holding an order
    in every state and a return; its rows."""
    assert OLD_SCHEMA != outbox_guard.SCHEMA
    with monkeypatch.context() as old:
        old.setattr(outbox_guard, "SCHEMA", OLD_SCHEMA)
        old.setattr(outbox_guard, "current", lambda conn: True)
        fill(path, 4)
        with Outbox(path, min_free_bytes=0) as box:
            box.enqueue(Kind.RETURN, "R-1", {"r": 1}, order_external_identifier="A-0",
                        transaction="T-9")
            for item_id in (1, 2, 3):
                assert box.claim(item_id) is not None
            box.mark_delivered(1, {"points": 25})
            box.mark_dead(2, code=1003, message="refused")
            box.mark_retry(3, delay_s=5, error="timeout", ambiguous=True)
            with pytest.raises(sqlite3.IntegrityError):  # the old CHECK refuses a command
                box.connection.execute(
                    "INSERT INTO outbox (kind, external_identifier, body, state, "
                    "next_attempt_at, created_at, updated_at) "
                    "VALUES ('command', 'X', '{}', 'pending', 0, 0, 0)")
    return rows(path)


def rows(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT * FROM outbox ORDER BY id").fetchall()
    finally:
        conn.close()


def test_outbox_from_before_commands_is_migrated_keeping_every_row(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = old_outbox(path, monkeypatch)
    mark = MarkFile(outbox_guard.mark_path(path)).read()
    assert mark is not None and mark.stored == 5
    with Outbox(path, min_free_bytes=0) as box:  # not current: prepare() rebuilds it
        assert box.damage() is None
        assert rows(path) == before  # every row, id and column as it was
        added = box.enqueue(Kind.COMMAND, "REQ-1", {"verb": "voucher.release", "args": {}})
        assert added.item.id == 6 and added.created
        assert [i.state for i in box.items()] == [
            "delivered", "dead", "pending", "pending", "pending", "pending"]
        assert box.find(Kind.RETURN, "R-1") is not None
        with pytest.raises(sqlite3.IntegrityError):  # the new CHECK still guards the kinds
            box.connection.execute(
                "INSERT INTO outbox (kind, external_identifier, body, state, "
                "next_attempt_at, created_at, updated_at) "
                "VALUES ('coupon', 'X', '{}', 'pending', 0, 0, 0)")
    assert MarkFile(outbox_guard.mark_path(path)).read() == Mark(mark.identity, 6, 6)
    conn = sqlite3.connect(path)
    try:
        indexes = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'outbox'")}
        assert {"outbox_kind_external", "outbox_state_next", "outbox_state_updated"} <= indexes
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    Outbox.prepare(path)  # again: current, nothing to do
    assert len(rows(path)) == 6


def test_migration_that_fails_leaves_the_old_table_whole(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = old_outbox(path, monkeypatch)
    broken = outbox_guard._MIGRATE_COMMANDS.replace("DROP TABLE outbox;", "DROP TABLE nope;")
    monkeypatch.setattr(outbox_guard, "_MIGRATE_COMMANDS", broken)
    with pytest.raises(OutboxError):
        Outbox.prepare(path)
    assert rows(path) == before
    conn = sqlite3.connect(path)
    try:
        assert not outbox_guard.current(conn)
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'outbox_new'"
                            ).fetchone() is None
    finally:
        conn.close()
    monkeypatch.undo()
    with Outbox(path, min_free_bytes=0) as box:
        assert box.depth() == 3
    assert rows(path) == before


# -- schema versions: additive changes stay readable; a newer reader requirement refuses --


def versions(path: Path) -> tuple[int, int]:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT schema_version, min_reader_version FROM outbox_meta").fetchone()
        return int(row[0]), int(row[1])
    finally:
        conn.close()


def set_versions(path: Path, schema: int, min_reader: int) -> None:
    """What a newer leat-scanner would leave behind."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute("UPDATE outbox_meta SET schema_version = ?, min_reader_version = ?",
                         (schema, min_reader))
    finally:
        conn.close()


def outbox_bytes(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.parent.iterdir()) if p.is_file()}


def test_new_outbox_records_its_schema_version(path: Path) -> None:
    fill(path, 1)
    assert versions(path) == (outbox_guard.SCHEMA_VERSION, outbox_guard.MIN_READER_VERSION)


def test_outbox_from_before_versions_gets_them_keeping_its_rows(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = old_outbox(path, monkeypatch)  # outbox_meta without the version columns
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute("ALTER TABLE outbox_meta DROP COLUMN schema_version")
            conn.execute("ALTER TABLE outbox_meta DROP COLUMN min_reader_version")
    finally:
        conn.close()
    Outbox.prepare(path)
    assert versions(path) == (outbox_guard.SCHEMA_VERSION, outbox_guard.MIN_READER_VERSION)
    assert rows(path) == before


def test_newer_but_readable_outbox_is_used_and_keeps_its_numbers(path: Path) -> None:
    fill(path, 2)
    newer = outbox_guard.SCHEMA_VERSION + 1
    set_versions(path, newer, outbox_guard.SCHEMA_VERSION)  # an additive change
    Outbox.prepare(path)
    with Outbox(path, min_free_bytes=0) as box:
        assert box.enqueue(Kind.ORDER, "AFTER", {}).created
    assert versions(path) == (newer, outbox_guard.SCHEMA_VERSION)  # never lowered


def test_outbox_needing_a_newer_reader_is_refused_and_left_untouched(
    path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(path, 3)
    too_new = outbox_guard.SCHEMA_VERSION + 1
    set_versions(path, too_new, too_new)
    before = outbox_bytes(path)

    with pytest.raises(outbox_guard.OutboxTooNew, match="written by a newer leat-scanner") as exc:
        Outbox.prepare(path)
    assert (exc.value.schema_version, exc.value.min_reader_version) == (too_new, too_new)
    reason = outbox_guard.diagnose(path)
    assert reason is not None and f"schema {too_new}" in reason
    code, _, err = run_cli("outbox", "repair", "--accept-loss", "--config", str(config),
                           capsys=capsys)

    assert code == 1
    assert "written by a newer leat-scanner" in err
    assert outbox_bytes(path) == before  # no flag, no mark, no checkpoint, no repair
    assert outbox_guard.read_flag(path) is None


def test_daemon_exits_3_on_an_outbox_needing_a_newer_reader(path: Path, tmp_path: Path) -> None:
    fill(path, 1)
    too_new = outbox_guard.SCHEMA_VERSION + 1
    set_versions(path, too_new, too_new)
    before = outbox_bytes(path)
    frames = tmp_path / "frames"
    write_demo_frames(frames)
    token = tmp_path / "token"
    token.write_text("pat-1\n", encoding="utf-8")
    token.chmod(0o600)
    config = tmp_path / "run.toml"
    config.write_text(
        f'[device]\nid = "t"\nstate_dir = "{path.parent}"\n'
        f'[camera]\nsource = "replay"\nreplay_path = "{frames}"\n'
        '[feedback]\nenabled = false\n'
        '[mqtt]\nhost = "127.0.0.1"\nport = 9\n'
        f'[leat]\nshop_uuid = "3f2a1b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"\ntoken_file = "{token}"\n',
        encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEAT_SCANNER_")}

    result = subprocess.run(  # the real daemon start, as systemd runs it
        [sys.executable, "-m", "appliance", "run", "--config", str(config)],
        env=env, capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == cli.EXIT_OUTBOX_TOO_NEW == 3, result.stderr
    assert "written by a newer leat-scanner" in result.stderr
    assert outbox_bytes(path) == before
