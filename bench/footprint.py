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

The daemon gets the unit's malloc settings (`MALLOC_ARENA_MAX`), as under systemd.

Scenarios: empty frames (a textured scene without any code) at 15 and 30 fps, and the
same with one scan a second (each second one frame shows a loyalty-card QR; four distinct
codes rotate, so each is seen again after it left the view and its cooldown passed).
Medians over `--repeats` runs; the machine line says where.

One viewer on the technician page (issue 11): the 30 fps scan scenario again with a client
that does what the page's script does (polls /api/aim four times a second, fetches each new
preview JPEG, /api/health every 2 s). Scan-path latency is, for each `events/scan`, the
time it arrived at our subscriber minus its `captured_at` (the frame's capture time): read,
decode, debounce, queue, classify, publish, broker. p50/p99 over all runs of a scenario;
CPU as above (the page's threads are in the daemon's process; the viewer is not).

    .venv/bin/python bench/footprint.py [--quick] [--repeats 3] [--viewer-only]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import describe

from appliance.localbroker import LocalMosquitto
from appliance.samples import background, place, render_code

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "leat-scanner.service"
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
    latencies_ms: list[float] = field(default_factory=list)  # capture -> event received
    previews: int = 0  # preview JPEGs the viewer received


def unit_malloc_settings() -> dict[str, str]:
    """The glibc malloc settings (MALLOC_*) the systemd unit's Environment= lines give."""
    settings = {}
    for line in UNIT.read_text().splitlines():
        name, _, value = line.removeprefix("Environment=").partition("=")
        if line.startswith("Environment=") and name.startswith("MALLOC_"):
            settings[name] = value
    return settings


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def view(url: str, stop: threading.Event, counts: list[int]) -> None:
    """What the page's script does in a browser: aim 4/s, each new preview, health every 2 s."""
    shown = None
    next_health = 0.0
    with httpx.Client(base_url=url, timeout=5) as web:
        web.get("/")
        while not stop.wait(0.25):
            aim = web.get("/api/aim").json()
            frame = aim.get("frame")
            if frame and frame["sequence"] != shown:
                shown = frame["sequence"]
                if web.get(f"/preview.jpg?seq={shown}").status_code == 200:
                    counts[0] += 1
            if time.monotonic() >= next_health:
                web.get("/api/health")
                next_health = time.monotonic() + 2.0


def one_run(work: Path, broker: LocalMosquitto, frames: Path, fps: int, run_s: float,
            viewer: bool = False) -> Run:
    """Start the daemon, wait for READY=1, measure CPU over the window and RSS at the end."""
    config = work / "config.toml"
    port = free_port()
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
[web]
port = {port}
""",
        encoding="utf-8",
    )
    address = work / "notify.sock"
    address.unlink(missing_ok=True)
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    manager.bind(str(address))
    manager.settimeout(30)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEAT_SCANNER_")}
    env.update(unit_malloc_settings())  # as systemd runs it
    env["NOTIFY_SOCKET"] = str(address)
    scans: list[tuple[float, float]] = []  # (monotonic, latency ms) per scan event

    def on_scan(_c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        captured = datetime.fromisoformat(json.loads(message.payload)["captured_at"])
        scans.append((time.monotonic(), (time.time() - captured.timestamp()) * 1000))

    counter = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    counter.enable_logger()
    counter.on_connect = lambda c, *_a: c.subscribe("leat-scanner/footprint/events/scan", qos=1)
    counter.on_message = on_scan
    counter.connect(broker.host, broker.port)
    counter.loop_start()
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "run", "--config", str(config)], env=env
    )
    watching = threading.Event()
    previews = [0]
    viewer_thread = threading.Thread(
        target=view, args=(f"http://127.0.0.1:{port}", watching, previews), daemon=True)
    try:
        while b"READY=1" not in manager.recv(4096):
            pass
        ready_s = time.monotonic() - started
        if viewer:
            viewer_thread.start()
        time.sleep(max(0.0, started + WARMUP_S - time.monotonic()))
        cpu_before, at_before = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(max(0.0, started + run_s - time.monotonic()))
        cpu_after, at_after = cpu_seconds(proc.pid), time.monotonic()
        rss = rss_mb(proc.pid)
    finally:
        watching.set()
        if viewer:
            viewer_thread.join(10)
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
    seen = [ms for at, ms in scans if at_before <= at <= at_after]
    return Run(ready_s, (cpu_after - cpu_before) / window, rss, len(seen) / window, seen,
               previews[0])


def percentile(values: list[float], share: float) -> float:
    """The `share` quantile (nearest rank) of `values`; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="20 s runs instead of 60 s")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--viewer-only", action="store_true",
                        help="only 30 fps with one scan a second, without and with a viewer")
    args = parser.parse_args()
    run_s = 20.0 if args.quick else 60.0

    scenarios = [(15, False, False), (30, False, False), (15, True, False), (30, True, False),
                 (30, True, True)]
    if args.viewer_only:
        scenarios = scenarios[-2:]
    results: dict[tuple[int, bool, bool], list[Run]] = {s: [] for s in scenarios}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for fps, scans, _ in scenarios:
            folder = work / f"frames-{fps}-{'scans' if scans else 'empty'}"
            if not folder.exists():
                write_frames(folder, fps, scans)
        with LocalMosquitto(work / "broker") as broker:
            for _ in range(args.repeats):
                for fps, scans, viewer in scenarios:
                    frames = work / f"frames-{fps}-{'scans' if scans else 'empty'}"
                    results[(fps, scans, viewer)].append(
                        one_run(work, broker, frames, fps, run_s, viewer))

    print(describe("zxing-cpp", "paho-mqtt", "numpy",
                   extra=f"{len(os.sched_getaffinity(0))} usable cores"))
    print(f"runs: {args.repeats} per scenario, {run_s:g} s each (CPU after a {WARMUP_S:g} s "
          f"warm-up; RSS at the end); 640x360 replayed frames; feedback off; no Leat")
    print(f"{'scenario':<40} {'READY s':>8} {'CPU (cores)':>12} {'RSS MB':>8} {'scans/s':>8} "
          f"{'lat p50 ms':>10} {'lat p99 ms':>10} {'previews/s':>10}")
    for (fps, scans, viewer), runs in results.items():
        name = f"{fps} fps, " + ("one scan a second" if scans else "empty frames")
        name += ", one viewer" if viewer else ""
        latencies = [ms for r in runs for ms in r.latencies_ms]
        print(f"{name:<40} {statistics.median(r.ready_s for r in runs):>8.2f} "
              f"{statistics.median(r.cpu_cores for r in runs):>12.3f} "
              f"{statistics.median(r.rss_mb for r in runs):>8.1f} "
              f"{statistics.median(r.scans_per_s for r in runs):>8.2f} "
              f"{percentile(latencies, 0.5):>10.1f} {percentile(latencies, 0.99):>10.1f} "
              f"{statistics.median(r.previews for r in runs) / run_s:>10.2f}")
    base, watched = results[(30, True, False)], results[(30, True, True)]
    extra = (statistics.median(r.cpu_cores for r in watched)
             - statistics.median(r.cpu_cores for r in base))
    p99 = [percentile([ms for r in runs for ms in r.latencies_ms], 0.99)
           for runs in (base, watched)]
    spread = [" ".join(f"{percentile(r.latencies_ms, 0.99):.1f}" for r in runs)
              for runs in (base, watched)]
    print(f"one viewer: CPU +{extra:.3f} core (target <= 0.05: "
          f"{'met' if extra <= 0.05 else 'NOT met'}); scan latency p99 {p99[0]:.1f} -> "
          f"{p99[1]:.1f} ms (target: unchanged within noise; p99 of each run without: "
          f"{spread[0]} ms, with: {spread[1]} ms)")
    if args.viewer_only:
        return
    every = [r for runs in results.values() for r in runs]
    idle30 = statistics.median(r.cpu_cores for r in results[(30, False, False)])
    ready = statistics.median(r.ready_s for r in every)
    rss = max(statistics.median(r.rss_mb for r in runs) for runs in results.values())
    print(f"targets: READY <= 2 s: {ready:.2f} s {'met' if ready <= 2 else 'NOT met'}; "
          f"RSS <= 80 MB: {rss:.1f} MB {'met' if rss <= 80 else 'NOT met'}; "
          f"idle CPU at 30 fps <= 0.10 core: {idle30:.3f} {'met' if idle30 <= 0.10 else 'NOT met'}")


if __name__ == "__main__":
    main()
