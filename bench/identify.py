"""Identification latency: frame captured -> events/identification received, Leat latency L.

The Leat sandbox adds latency L to every call. Replayed frames alternate two demo loyalty
cards (with empty frames between, so each presentation is a new scan) through the real scan
path (decode, debounce, classify, resolve with the real httpx client, MQTT via a private
Mosquitto) to a subscriber. For comparison, the same Leat calls are also made one after
another with the same client in the same run (what a naive integration costs).

    .venv/bin/python bench/identify.py [--latency-ms 50] [--scans 60]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import describe

from appliance.assembly import build
from appliance.config import Config
from appliance.feedback import NullFeedback
from appliance.leat.client import LeatClient
from appliance.localbroker import LocalMosquitto
from appliance.samples import (
    DEMO_CODES,
    DEMO_PHONE_CARD,
    DEMO_SHOP_UUID,
    background,
    place,
    render_code,
)
from appliance.sandbox.server import LeatSandbox

BASE = "leat-scanner/bench"




def write_frames(folder: Path, scans: int) -> None:
    rng = np.random.default_rng(3)
    cards = [DEMO_CODES["loyalty_card"], DEMO_PHONE_CARD]
    empty = background((640, 480), rng)
    for i in range(scans):
        code = place(render_code(cards[i % 2], module_px=6), background((640, 480), rng), rng)
        Image.fromarray(code).save(folder / f"{2 * i:05d}.png")
        Image.fromarray(empty).save(folder / f"{2 * i + 1:05d}.png")


def sequential_ms(client: LeatClient, value: str) -> float:
    """The same calls the resolver makes, one after another."""
    start = time.perf_counter()
    identifier = client.find_contact_identifier(value)
    assert identifier.contact is not None
    uuid = identifier.contact.uuid
    client.get_contact(uuid)
    client.list_rewards(contact_uuid=uuid, shop_uuid=DEMO_SHOP_UUID)
    client.list_collectable_rewards(uuid)
    client.list_vouchers(contact_uuid=uuid)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--scans", type=int, default=60)
    args = parser.parse_args()
    latency = args.latency_ms / 1000

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        frames = work / "frames"
        frames.mkdir()
        write_frames(frames, args.scans)
        token = work / "token"
        with LocalMosquitto(work / "broker") as broker, LeatSandbox() as sandbox:
            token.touch(mode=0o600)
            token.write_text(sandbox.personal_access_token, encoding="utf-8")
            sandbox.faults.set(latency_s=latency)
            # one frame every 2.5 L + 40 ms, so scans never queue behind each other
            fps = 1 / (2.5 * latency + 0.04)
            cfg = Config.model_validate({
                "device": {"id": "bench", "state_dir": str(work / "state")},
                "camera": {"source": "replay", "replay_path": str(frames), "fps": fps},
                "debounce": {"leave_after_s": 0.01, "cooldown_s": 0.0},
                "mqtt": {"host": broker.host, "port": broker.port},
                "feedback": {"enabled": False},
                "leat": {"base_url": sandbox.url, "token_file": str(token),
                         "shop_uuid": DEMO_SHOP_UUID, "resolve_deadline_s": 5.0},
            })
            latencies: list[float] = []
            unverified = 0
            done = threading.Event()

            def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
                nonlocal unverified
                now = time.time()
                event = json.loads(msg.payload)
                if msg.topic.endswith("/scan"):
                    captured = datetime.fromisoformat(event["captured_at"]).timestamp()
                    scan_times[event["event_id"]] = captured
                elif msg.topic.endswith("/identification"):
                    latencies.append((now - scan_times[event["scan_event_id"]]) * 1000)
                    unverified += not event["verified"]
                    if len(latencies) >= args.scans:
                        done.set()

            scan_times: dict[str, float] = {}
            sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
            sub.enable_logger()
            subscribed = threading.Event()
            sub.on_message = on_message
            sub.on_subscribe = lambda *_a: subscribed.set()
            sub.on_connect = lambda c, *_a: c.subscribe(f"{BASE}/events/#", qos=1)
            sub.connect(broker.host, broker.port)
            sub.loop_start()
            subscribed.wait(10)
            service = build(cfg, feedback=NullFeedback())
            service.run(threading.Event())
            done.wait(30)
            sub.disconnect()
            sub.loop_stop()

            with LeatClient(sandbox.url, token=sandbox.personal_access_token) as client:
                sequential = [sequential_ms(client, DEMO_CODES["loyalty_card"])
                              for _ in range(20)]

    p50 = statistics.median(latencies)
    p99 = float(np.percentile(latencies, 99))
    seq = statistics.median(sequential)
    print(describe())
    print(f"Leat latency L = {args.latency_ms:g} ms per call (sandbox); "
          f"{len(latencies)} identifications, {unverified} unverified")
    print(f"{'':<44}{'p50 ms':>8}{'p99 ms':>8}{'p50/L':>7}")
    print(f"{'scan -> identification received (ours)':<44}{p50:>8.1f}{p99:>8.1f}"
          f"{p50 / args.latency_ms:>7.2f}")
    print(f"{'same 5 Leat calls one after another':<44}{seq:>8.1f}{'':>8}"
          f"{seq / args.latency_ms:>7.2f}")
    print(f"ours / sequential (p50): {p50 / seq:.2f}")
    target = 2.2 * args.latency_ms + 10
    verdict = "met" if p50 <= target else "NOT met"
    print(f"target p50 <= 2.2 x L + 10 ms = {target:.0f} ms: {verdict}")


if __name__ == "__main__":
    main()
