"""kill -9 of the real `leat-scanner run` process while the POS hands over orders and the
forwarder sends them: nothing lost, nothing doubled (real Mosquitto, SQLite, Leat sandbox)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from broker import Mosquitto, Subscriber
from test_orders import order_body

from appliance import contract
from appliance.outbox import Outbox
from appliance.outbox_items import State
from appliance.samples import DEMO_SHOP_UUID, write_demo_frames
from appliance.sandbox.server import LeatSandbox

BASE = "leat-scanner/crash-till"
KILLS = 20  # with test_outbox (25) and test_forwarder (10): 55 kill -9 iterations in the suite
ORDERS = 30


def write_config(tmp_path: Path, broker: Mosquitto, sandbox: LeatSandbox) -> Path:
    frames = tmp_path / "frames"
    write_demo_frames(frames)
    token = tmp_path / "leat-token"
    token.touch(mode=0o600)
    token.write_text(sandbox.personal_access_token, encoding="utf-8")
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[device]
id = "crash-till"
state_dir = "{tmp_path / 'state'}"
[camera]
source = "replay"
replay_path = "{frames / '000-empty.png'}"
replay_loop = true
fps = 5
[mqtt]
host = "{broker.host}"
port = {broker.port}
[feedback]
enabled = false
[leat]
base_url = "{sandbox.url}"
token_file = "{token}"
shop_uuid = "{DEMO_SHOP_UUID}"
""",
        encoding="utf-8",
    )
    return config


def start(config: Path, log: Path | None = None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEAT_SCANNER_")}
    with open(log or os.devnull, "wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "appliance", "run", "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def test_crash_kill_9_loses_and_doubles_nothing(broker: Mosquitto, tmp_path: Path) -> None:
    rng = random.Random(20261122)
    with LeatSandbox() as sandbox, Subscriber(broker, f"{BASE}/#", "pos/replies") as pos:
        sandbox.faults.set(latency_s=0.02)  # so kills also land while orders are in flight
        pos.wait_subscribed()
        config = write_config(tmp_path, broker, sandbox)
        bodies = [{"customer": {"identifier": "LC-7F3K9Q2M"}, "order": order_body(f"crash-{i}")}
                  for i in range(ORDERS)]
        acked: set[str] = set()
        onlines = 0

        def replies() -> dict[str, str]:
            answers = [json.loads(m.payload) for m in pos.on(f"{BASE}/response/order.create")]
            return {a["data"]["external_identifier"]: a["status"] for a in answers}

        def wait_online() -> None:
            nonlocal onlines
            onlines += 1
            pos.wait_online(BASE, onlines, timeout=20)

        for _ in range(KILLS):
            proc = start(config)
            try:
                wait_online()
                # Hand over 1-3 orders; then kill at once (mid-request or mid-forwarding).
                for body in [b for b in bodies if b["order"]["external_identifier"] not in acked][
                    : rng.randint(1, 3)
                ]:
                    ext = body["order"]["external_identifier"]
                    pos.publish(f"{BASE}/request/order.create", json.dumps(body).encode())
                    if rng.random() < 0.3:
                        break  # kill before the reply: the POS will send it again
                    pos.wait_for(lambda ms, e=ext: e in replies(), timeout=20)
                    acked.add(ext)
            finally:
                proc.kill()
                proc.wait(timeout=10)

        # The POS resends what was never acknowledged; one last, uninterrupted run drains all.
        proc = start(config)
        try:
            wait_online()
            for body in bodies:
                ext = body["order"]["external_identifier"]
                if ext not in acked:
                    pos.publish(f"{BASE}/request/order.create", json.dumps(body).encode())
                    pos.wait_for(lambda ms, e=ext: e in replies(), timeout=20)
                    acked.add(ext)
            with Outbox(tmp_path / "state" / "outbox.sqlite3") as outbox:
                waiting = {i.external_identifier for i in outbox.items()
                           if i.state not in (State.DELIVERED, State.DEAD)}
            pos.wait_for(
                lambda ms: waiting <= {
                    json.loads(m.payload)["external_identifier"]
                    for m in ms if m.topic == f"{BASE}/events/order"
                },
                timeout=60,
            )
        finally:
            proc.terminate()
            proc.wait(timeout=20)
        recorded = [o["external_identifier"] for o in sandbox.orders()]

    expected = {b["order"]["external_identifier"] for b in bodies}
    assert sorted(recorded) == sorted(expected)  # every order, each exactly once
    assert set(replies().values()) == {"ok"}
    with Outbox(tmp_path / "state" / "outbox.sqlite3") as outbox:
        items = outbox.items(limit=1000)
    assert len(items) == ORDERS
    assert {i.state for i in items} == {State.DELIVERED}


def test_fresh_starts_serve_at_once_and_a_damaged_outbox_keeps_the_device_up(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """Real `leat-scanner run` starts on new state directories with a POS order right away
    (forwarder, state publisher and request handler open the new outbox together); then the
    outbox is emptied (0 bytes, as SD cards do): the device stays up, says so on `state` and
    in the log, and refuses new orders instead of acking them into a new empty file."""
    with LeatSandbox() as sandbox, Subscriber(broker, f"{BASE}/#", "pos/replies") as pos:
        pos.wait_subscribed()
        onlines = 0

        def serve_one(config: Path, transaction: str, log: Path | None = None) -> dict[str, Any]:
            """Start, wait online, send one order, return its reply; the process stays up."""
            nonlocal onlines
            proc = start(config, log)
            try:
                onlines += 1
                pos.wait_for(lambda ms, n=onlines: sum(
                    m.topic == f"{BASE}/availability" and m.payload == b"online" for m in ms
                ) >= n, timeout=20)
                body = {"transaction": transaction, "customer": {"identifier": "LC-7F3K9Q2M"},
                        "order": order_body(f"fresh-{transaction}")}
                pos.publish(f"{BASE}/request/order.create", json.dumps(body).encode())
                ms = pos.wait_for(lambda ms: any(
                    json.loads(m.payload).get("transaction") == transaction
                    for m in ms if m.topic == f"{BASE}/response/order.create"), timeout=20)
                assert proc.poll() is None, "the daemon exited"
            finally:
                proc.terminate()
                assert proc.wait(timeout=20) == 0
            [reply] = [json.loads(m.payload) for m in ms
                       if m.topic == f"{BASE}/response/order.create"
                       and json.loads(m.payload).get("transaction") == transaction]
            return reply

        for run in range(3):
            (tmp_path / f"device-{run}").mkdir()
            config = write_config(tmp_path / f"device-{run}", broker, sandbox)
            reply = serve_one(config, f"start-{run}")
            assert reply["status"] == "ok", reply

        outbox = tmp_path / "device-2" / "state" / "outbox.sqlite3"
        os.truncate(outbox, 0)
        log = tmp_path / "damaged.log"
        reply = serve_one(config, "after-damage", log)
        assert reply["error"]["code"] == "storage_damaged"
        assert outbox.stat().st_size == 0  # never silently recreated
        states = [json.loads(m.payload) for m in pos.on(f"{BASE}/state")]
        assert "empty (0 bytes)" in states[-1]["outbox"]["damaged"]
        contract.validate("state", states[-1])
        assert "ERROR appliance.assembly: outbox unusable" in log.read_text(encoding="utf-8")
