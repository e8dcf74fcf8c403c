"""Scan latency: frame captured -> MQTT subscriber receives events/scan, with a real Mosquitto.

Each replayed frame holds a different loyalty-card QR, so every frame yields one event. The
decoder is wrapped to time each decode in place; the pipeline overhead of one frame is its
total latency minus its decode time (debounce, queue hop, classify, JSON, paho, broker,
subscriber). Prints p50/p99 of total, decode and overhead, and the machine.

    .venv/bin/python bench/scan_latency.py [--frames 300] [--fps 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import describe

from appliance.codes import Classifier
from appliance.config import CodesConfig, DebounceConfig, DecodeConfig, MqttConfig
from appliance.daemon import ScanService
from appliance.debounce import Debouncer
from appliance.decode import Decoder, DecodeResult
from appliance.feedback import NullFeedback
from appliance.localbroker import LocalMosquitto
from appliance.pipeline import ScanHandler
from appliance.replay import ReplaySource
from appliance.samples import background, place, render_code
from appliance.source import Frame

BASE = "leat-scanner/bench"


class TimedDecoder:
    """Wraps the real decoder and records (text -> frame timestamp, decode seconds)."""

    def __init__(self, inner: Decoder) -> None:
        self.inner = inner
        self.by_text: dict[str, tuple[float, float]] = {}

    def decode(self, frame: Frame) -> DecodeResult:
        start = time.perf_counter()
        result = self.inner.decode(frame)
        spent = time.perf_counter() - start
        for scan in result.scans:
            self.by_text.setdefault(scan.text, (frame.timestamp, spent))
        return result


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--fps", type=float, default=20.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        from PIL import Image

        rng = np.random.default_rng(7)
        paths = []
        texts = []
        for i in range(args.frames):
            text = f"LC-{i:08d}"
            frame = place(render_code(text, module_px=6), background((640, 480), rng), rng)
            path = work / f"{i:05d}.png"
            Image.fromarray(frame).save(path)
            paths.append(path)
            texts.append(text)

        received: dict[str, float] = {}
        done = threading.Event()
        with LocalMosquitto(work / "broker") as broker:
            sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
            sub.enable_logger()  # paho's benign disconnect race goes to logging, not stderr
            subscribed = threading.Event()

            def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
                now = time.monotonic()
                received[json.loads(msg.payload)["value"]] = now
                if len(received) == len(texts):
                    done.set()

            sub.on_message = on_message
            sub.on_subscribe = lambda *_a: subscribed.set()
            sub.on_connect = lambda c, *_a: c.subscribe(f"{BASE}/events/scan", qos=1)
            sub.connect(broker.host, broker.port)
            sub.loop_start()
            subscribed.wait(10)

            from appliance.bus import MqttBus

            bus = MqttBus(
                MqttConfig(host=broker.host, port=broker.port), BASE, "bench", None, {"b": 1}
            )
            decoder = TimedDecoder(Decoder(DecodeConfig()))
            service = ScanService(
                device_id="bench",
                source=ReplaySource(paths, fps=args.fps),
                decoder=decoder,  # type: ignore[arg-type]
                debouncer=Debouncer(DebounceConfig()),
                handler=ScanHandler("bench", Classifier(CodesConfig()), bus.publish_event),
                bus=bus,
                feedback=NullFeedback(),
            )
            bus.start()
            bus.wait_connected(10)
            service.run(threading.Event())
            done.wait(30)
            sub.disconnect()
            sub.loop_stop()

    totals, decodes, overheads = [], [], []
    for text in texts:
        if text not in received or text not in decoder.by_text:
            continue
        captured, decode_s = decoder.by_text[text]
        total = received[text] - captured
        totals.append(total * 1000)
        decodes.append(decode_s * 1000)
        overheads.append((total - decode_s) * 1000)

    print(describe())
    print(f"frames: {len(texts)} at {args.fps:g} fps (640x480, one new QR each); "
          f"events received: {len(received)}, decoded: {len(decoder.by_text)}")
    print(f"{'ms':<28}{'p50':>8}{'p99':>8}{'max':>8}")
    for name, values in (("total (frame -> subscriber)", totals), ("decode alone", decodes),
                         ("pipeline overhead", overheads)):
        print(f"{name:<28}{statistics.median(values):>8.2f}{percentile(values, 99):>8.2f}"
              f"{max(values):>8.2f}")
    target = percentile(overheads, 99) <= 3.0
    print(f"target pipeline overhead p99 <= 3 ms: {'met' if target else 'NOT met'}")


if __name__ == "__main__":
    main()
