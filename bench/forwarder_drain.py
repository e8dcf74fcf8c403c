"""Forwarder drain: time to send N queued orders to the Leat sandbox with latency L.

`drain` section: N orders (one line each, Jane as the customer) are enqueued into a fresh
outbox file, then one `Forwarder.drain_once()` sends them all through the real httpx client
to the sandbox, which answers every call after L. With C workers the ideal time is
N x L / C; the target is an efficiency (ideal / measured) of at least 0.8.

The sandbox runs in its own process by default, as Leat is remote: in this process its
request handling would compete with the forwarder for the GIL (`--sandbox thread` measures
that too).

    .venv/bin/python bench/forwarder_drain.py [--orders 10000] [--latency-ms 20]
                                              [--concurrency 4] [--sandbox process|thread]
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import describe

from appliance.forwarder import Forwarder
from appliance.leat.client import LeatClient
from appliance.outbox import Outbox
from appliance.outbox_items import Kind, State
from appliance.sandbox.server import LeatSandbox

SHOP = "4f1c2a9e-5b7d-4e3a-9c1f-2d8e6a0b7c35"
JANE = "c0a80101-1a2b-4c3d-8e4f-000000000001"
TARGET = 0.8




def body(ext: str) -> dict[str, Any]:
    """A realistic small order."""
    return {
        "external_identifier": ext,
        "reference": ext,
        "status": "COMPLETED",
        "payment_status": "PAID",
        "total_order_amount": 1250,
        "contact": {"uuid": JANE},
        "line_items": [
            {
                "external_identifier": f"{ext}-1",
                "name": "Flat white",
                "quantity": 1,
                "price": 1250,
                "total_amount": 1250,
                "product": {"external_identifier": "FLAT-WHITE"},
            }
        ],
    }


class Sandbox:
    """The sandbox's URL, token and control API, wherever it runs."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self._control = httpx.Client(base_url=url + "/_sandbox", timeout=30)

    def set_faults(self, **faults: Any) -> None:
        self._control.post("/faults", json=faults).raise_for_status()

    def order_count(self) -> int:
        return len(self._control.get("/orders").json()["orders"])

    def close(self) -> None:
        self._control.close()


@contextlib.contextmanager
def sandbox_in(where: str) -> Iterator[Sandbox]:
    """A started sandbox in this process (`thread`) or a child process (`process`)."""
    if where == "thread":
        with LeatSandbox() as local:
            remote = Sandbox(local.url, local.personal_access_token)
            yield remote
            remote.close()
        return
    child = subprocess.Popen(
        [sys.executable, "-m", "appliance", "sandbox", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert child.stdout is not None
        url = token = ""
        for line in child.stdout:
            if line.startswith("Leat sandbox on "):
                url = line.split()[-1]
            elif line.strip().startswith("token:"):
                token = line.split()[1]
                break
        remote = Sandbox(url, token)
        yield remote
        remote.close()
    finally:
        child.terminate()
        child.wait(timeout=10)


def drain(orders: int, latency_s: float, concurrency: int, workdir: Path, where: str) -> bool:
    """The drain section: print time, rate and efficiency; True when the target is met."""
    path = workdir / "drain.sqlite"
    published: list[str] = []
    with sandbox_in(where) as sandbox, Outbox(path, max_items=orders + 1) as box:
        start = time.perf_counter()
        for n in range(orders):
            box.enqueue(Kind.ORDER, f"BENCH-{n:06d}", body(f"BENCH-{n:06d}"))
        enqueued = time.perf_counter() - start
        print(f"drain: {orders} orders enqueued in {enqueued:.1f} s; sandbox latency "
              f"{latency_s * 1000:.0f} ms (sandbox in a {where}), concurrency {concurrency}")
        sandbox.set_faults(latency_s=latency_s)
        with LeatClient(sandbox.url, token=sandbox.token, shop_uuid=SHOP) as c:
            c.find_order("warm-up")
            start = time.perf_counter()
            for _ in range(50):
                c.find_order("not-there")
            round_trip = (time.perf_counter() - start) / 50
            forwarder = Forwarder(
                path, c, lambda name, payload: published.append(name), device_id="bench",
                shop_uuid=SHOP, concurrency=concurrency,
            )
            start = time.perf_counter()
            attempted = forwarder.drain_once()
            elapsed = time.perf_counter() - start
        delivered = len(box.items([State.DELIVERED], limit=orders + 1))
        in_leat = sandbox.order_count()
    ideal = orders * latency_s / concurrency
    efficiency = ideal / elapsed
    ok = delivered == in_leat == attempted == orders == len(published) and efficiency >= TARGET
    print(f"  drained {delivered}/{orders} ({in_leat} in the sandbox) in {elapsed:.2f} s: "
          f"{orders / elapsed:.0f} orders/s")
    print(f"  one HTTP round trip at L, alone: {round_trip * 1000:.1f} ms, so even a forwarder "
          f"with no overhead at all reaches at most {latency_s / round_trip:.3f}")
    print(f"  ideal N x L / C = {ideal:.2f} s; efficiency ideal/actual = {efficiency:.3f} "
          f"(target >= {TARGET}): {'met' if ok else 'NOT met'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--sandbox", choices=("process", "thread"), default="process")
    parser.add_argument("--dir", type=Path, default=None, help="where the outbox file goes")
    args = parser.parse_args()
    print(describe())
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        ok = drain(
            args.orders, args.latency_ms / 1000, args.concurrency, Path(tmp), args.sandbox
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
