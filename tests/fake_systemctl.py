#!/usr/bin/env python3
"""Test helper: plays `systemctl` for provisioning (SYSTEMCTL=<this file>), stdlib only.

It runs a unit the way systemd runs a `Type=notify` service, for real: `restart` reads
ExecStart= from the unit file under $FAKE_SYSTEMD_ROOT, starts that program (its path taken
under the same root, so /opt/leat-scanner/current resolves inside the tree) with
$NOTIFY_SOCKET pointing at a datagram socket, and returns only once the program sends
READY=1 (exit 0, active/running), or fails when it exits or $FAKE_START_TIMEOUT seconds pass
(exit 1, failed/failed), like `systemctl restart` on a notify unit. The state of each unit
lives in $FAKE_SYSTEMD_DIR/<unit>.json; every call is appended to calls.log there.
`show -p`, `is-active`, `is-enabled`, `stop`, `enable`, `daemon-reload` do what their names say.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ["FAKE_SYSTEMD_DIR"])
ROOT = Path(os.environ.get("FAKE_SYSTEMD_ROOT", "/"))
START_TIMEOUT_S = float(os.environ.get("FAKE_START_TIMEOUT", "30"))


def load(unit: str) -> dict[str, object]:
    path = STATE / f"{unit}.json"
    if not path.exists():
        return {"ActiveState": "inactive", "SubState": "dead", "MainPID": 0}
    data: dict[str, object] = json.loads(path.read_text(encoding="utf-8"))
    return data


def save(unit: str, active: str, sub: str, pid: int) -> None:
    data = {"ActiveState": active, "SubState": sub, "MainPID": pid}
    tmp = STATE / f".{unit}.json.tmp"
    tmp.write_text(json.dumps(data), encoding="utf-8")
    tmp.replace(STATE / f"{unit}.json")


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop(unit: str) -> None:
    pid = int(str(load(unit)["MainPID"]))
    if pid > 0 and alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    save(unit, "inactive", "dead", 0)


def exec_start(unit: str) -> list[str]:
    text = (ROOT / "etc/systemd/system" / unit).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    argv = shlex.split(lines[-1].removeprefix("ExecStart="))
    return [str(ROOT / argv[0].lstrip("/")), *argv[1:]]


def start(unit: str) -> int:
    """Start `unit` and wait for READY=1: 0 when it came, 1 when it did not."""
    address = STATE / f"{unit}.notify"
    address.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(address))
        sock.settimeout(0.05)
        with (STATE / f"{unit}.log").open("ab") as log:
            child = subprocess.Popen(
                exec_start(unit), env={**os.environ, "NOTIFY_SOCKET": str(address)},
                stdout=log, stderr=log, start_new_session=True)
        save(unit, "activating", "start", child.pid)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and child.poll() is None:
            try:
                message = sock.recv(4096).decode("utf-8", "replace")
            except TimeoutError:
                continue
            if "READY=1" in message.splitlines():
                save(unit, "active", "running", child.pid)
                return 0
    stop(unit)
    save(unit, "failed", "failed", 0)
    print(f"Job for {unit} failed because the control process exited with error code.",
          file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    STATE.mkdir(parents=True, exist_ok=True)
    with (STATE / "calls.log").open("a", encoding="utf-8") as calls:
        calls.write(shlex.join(argv) + "\n")
    words = [word for word in argv if not word.startswith("--")]
    command, units = words[0], [w for w in words[1:] if w.endswith((".service", "mosquitto"))]
    unit = units[0] if units else ""
    if command in ("restart", "start"):
        stop(unit)
        return start(unit)
    if command == "stop":
        stop(unit)
        return 0
    if command == "is-active":
        state = str(load(unit)["ActiveState"])
        print(state)
        return 0 if state == "active" else 3
    if command == "show":
        names = [argv[i + 1] for i, word in enumerate(argv) if word == "-p"]
        data = load(unit)
        for name in names:
            print(f"{name}={data.get(name, '')}")
        return 0
    if command == "is-enabled":
        print("enabled")
        return 0
    if command in ("daemon-reload", "enable"):
        return 0
    print(f"fake_systemctl: unknown command {command}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
