"""Footprint of `leat-scanner run`: time to READY=1, resident memory, CPU per second.

Each run starts the real daemon (`python -m appliance run`) as systemd would, with a
notify socket of our own in `$NOTIFY_SOCKET`, a private Mosquitto, a replay camera of
640x360 frames (the default lores stream) paced at 15 or 30 fps, and feedback disabled
(off a Pi it would be simulated). Leat is not configured. Measured per run:

- time to READY=1: from starting the process to the READY=1 datagram (Python start,
  imports, config, camera open included);
- CPU: utime + stime of the process (all threads, /proc/<pid>/stat) over the window after a
  warm-up, divided by the window: a fraction of one core;
- RSS: VmRSS of the process at the end of the run (60 s after the start; `--quick`: 20 s).

Scenarios: empty frames (a textured scene without any code) at 15 and 30 fps, and the
same with one scan a second (each second one frame shows a loyalty-card QR; four distinct
codes rotate, so each is seen again after it left the view and its cooldown passed).
Medians over `--repeats` runs; the machine line says where.

    .venv/bin/python bench/footprint.py [--quick] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import describe

from appliance.localbroker import LocalMosquitto
from appliance.samples import background, place, render_code

SIZE = (640, 360)  # the default lores stream: what the daemon decodes on a Pi
CODES = 4  # distinct codes in the one-scan-a-second replay
WARMUP_S = 5.0
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Run:
    """What one run measured."""

    ready_s: float
    cpu_cores: float
    rss_mb: float
    scans_per_s: float  # events/scan received during the CPU window


def write_frames(folder: Path, fps: int, scans: bool) -> None:
    """`fps` frames per second of replay: empty, or one code in the first frame of each."""
    folder.mkdir()
    rng = np.random.default_rng(5)
    scene = background(SIZE, rng)
    Image.fromarray(scene).save(folder / "empty.png")
    empty = (folder / "empty.png").read_bytes()
    seconds = CODES if scans else 1
    for second in range(seconds):
        for index in range(fps):
            path = folder / f"{second:02d}-{index:03d}.png"
            if scans and index == 0:
                code = render_code(f"LC-FOOTPRINT{second:02d}", module_px=5)
                Image.fromarray(place(code, scene.copy(), rng)).save(path)
            else:
                path.write_bytes(empty)  # identical files are decoded once by the replay
    (folder / "empty.png").unlink()


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    """Resident set size of `pid` in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def one_run(work: Path, broker: LocalMosquitto, frames: Path, fps: int, run_s: float) -> Run:
    """Start the daemon, wait for READY=1, measure CPU over the window and RSS at the end."""
    config = work / "config.toml"
    config.write_text(
        f"""
[device]
id = "footprint"
state_dir = "{work / 'state'}"
[camera]
source = "replay"
replay_path = "{frames}"
replay_loop = true
fps = {fps}
[mqtt]
host = "{broker.host}"
port = {broker.port}
[feedback]
enabled = false
[logging]
level = "WARNING"
""",
        encoding="utf-8",
    )
    address = work / "notify.sock"
    address.unlink(missing_ok=True)
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    manager.bind(str(address))
    manager.settimeout(30)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEAT_SCANNER_")}
    env["NOTIFY_SOCKET"] = str(address)
    scans: list[float] = []
    counter = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    counter.enable_logger()
    counter.on_connect = lambda c, *_a: c.subscribe("leat-scanner/footprint/events/scan", qos=1)
    counter.on_message = lambda *_a: scans.append(time.monotonic())
    counter.connect(broker.host, broker.port)
    counter.loop_start()
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "run", "--config", str(config)], env=env
    )
    try:
        while b"READY=1" not in manager.recv(4096):
            pass
        ready_s = time.monotonic() - started
        time.sleep(max(0.0, started + WARMUP_S - time.monotonic()))
        cpu_before, at_before = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(max(0.0, started + run_s - time.monotonic()))
        cpu_after, at_after = cpu_seconds(proc.pid), time.monotonic()
        rss = rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        manager.close()
        counter.disconnect()
        counter.loop_stop()
    window = at_after - at_before
    seen = sum(at_before <= at <= at_after for at in scans)
    return Run(ready_s, (cpu_after - cpu_before) / window, rss, seen / window)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="20 s runs instead of 60 s")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    run_s = 20.0 if args.quick else 60.0

    scenarios = [(15, False), (30, False), (15, True), (30, True)]
    results: dict[tuple[int, bool], list[Run]] = {s: [] for s in scenarios}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for fps, scans in scenarios:
            write_frames(work / f"frames-{fps}-{'scans' if scans else 'empty'}", fps, scans)
        with LocalMosquitto(work / "broker") as broker:
            for _ in range(args.repeats):
                for fps, scans in scenarios:
                    frames = work / f"frames-{fps}-{'scans' if scans else 'empty'}"
                    results[(fps, scans)].append(one_run(work, broker, frames, fps, run_s))

    print(describe("zxing-cpp", "paho-mqtt", "numpy",
                   extra=f"{len(os.sched_getaffinity(0))} usable cores"))
    print(f"runs: {args.repeats} per scenario, {run_s:g} s each (CPU after a {WARMUP_S:g} s "
          f"warm-up; RSS at the end); 640x360 replayed frames; feedback off; no Leat")
    print(f"{'scenario':<28} {'READY s':>8} {'CPU (cores)':>12} {'RSS MB':>8} {'scans/s':>8}")
    for (fps, scans), runs in results.items():
        name = f"{fps} fps, " + ("one scan a second" if scans else "empty frames")
        print(f"{name:<28} {statistics.median(r.ready_s for r in runs):>8.2f} "
              f"{statistics.median(r.cpu_cores for r in runs):>12.3f} "
              f"{statistics.median(r.rss_mb for r in runs):>8.1f} "
              f"{statistics.median(r.scans_per_s for r in runs):>8.2f}")
    every = [r for runs in results.values() for r in runs]
    idle30 = statistics.median(r.cpu_cores for r in results[(30, False)])
    ready = statistics.median(r.ready_s for r in every)
    rss = max(statistics.median(r.rss_mb for r in runs) for runs in results.values())
    print(f"targets: READY <= 2 s: {ready:.2f} s {'met' if ready <= 2 else 'NOT met'}; "
          f"RSS <= 80 MB: {rss:.1f} MB {'met' if rss <= 80 else 'NOT met'}; "
          f"idle CPU at 30 fps <= 0.10 core: {idle30:.3f} {'met' if idle30 <= 0.10 else 'NOT met'}")


if __name__ == "__main__":
    main()
