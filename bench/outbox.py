"""Outbox throughput: durable enqueues per second (WAL, synchronous=FULL, one commit each).

Each run enqueues N realistic (~1 KB) orders one by one into a fresh file, as the MQTT
handler does (one transaction + fsync per order, then the mark's pwrite + fdatasync, see
appliance/outbox_guard.py). The median of 3 runs is reported for synchronous=FULL (what the
appliance uses) and, for comparison, NORMAL and OFF (the mark's fdatasync stays in all
three). Target: >= 1,000 durable enqueues/s. A drain section (outbox -> Leat sandbox) is
added separately.

    .venv/bin/python bench/outbox.py [--orders 2000] [--runs 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import describe

from appliance.outbox import Outbox
from appliance.outbox_items import Kind

TARGET = 1_000.0




def order_body(n: int) -> dict[str, Any]:
    """A create-and-process body of about 1 KB, like a small café order."""
    lines = [
        {"external_identifier": f"L{n}-{i}", "name": name, "quantity": qty, "price": price,
         "total_amount": qty * price, "discount_amount": 0,
         "product": {"external_identifier": f"SKU-{name.upper().replace(' ', '-')}"}}
        for i, (name, qty, price) in enumerate(
            [("Cappuccino", 2, 340), ("Croissant", 1, 275), ("Apple pie", 1, 450),
             ("Sparkling water", 2, 250)]
        )
    ]
    return {
        "external_identifier": f"POS1-{n:08d}", "reference": f"#{n}", "status": "COMPLETED",
        "payment_status": "PAID", "currency": "EUR",
        "total_order_amount": sum(line["total_amount"] for line in lines),
        "order_amount": sum(line["total_amount"] for line in lines),
        "paid_at": "2026-03-01 09:04:01", "completed_at": "2026-03-01 09:04:01",
        "business_profile": {"uuid": "5c0c2e2e-1f7e-4c5b-9d7e-3c9b1d2f4a10"},
        "line_items": lines,
    }


def enqueue_rate(directory: Path, orders: int, synchronous: str) -> float:
    """Orders/s for `orders` enqueues into a fresh file with this synchronous setting."""
    bodies = [order_body(n) for n in range(orders)]
    path = Path(tempfile.mkdtemp(dir=directory)) / "outbox.sqlite3"
    with Outbox(path, max_items=orders + 1, min_free_bytes=0) as box:
        box.connection.execute(f"PRAGMA synchronous = {synchronous}")
        start = time.perf_counter()
        for n, body in enumerate(bodies):
            box.enqueue(Kind.ORDER, body["external_identifier"], body,
                        customer_identifier=f"LC-{n:08d}", transaction=f"t-{n}")
        elapsed = time.perf_counter() - start
        assert box.depth() == orders
    return orders / elapsed


def enqueue_section(directory: Path, orders: int, runs: int) -> bool:
    """Print the enqueue rates; True when FULL meets the target."""
    size = len(str(order_body(0)))
    print(f"enqueue: {orders} orders of ~{size} B, one transaction each, median of {runs} runs")
    rates: dict[str, float] = {}
    for mode in ("FULL", "NORMAL", "OFF"):
        rates[mode] = statistics.median(
            enqueue_rate(directory, orders, mode) for _ in range(runs)
        )
        ratio = rates[mode] / rates["FULL"]
        print(f"  synchronous={mode:<6} {rates[mode]:9.0f} orders/s  ({ratio:.1f}x FULL)")
    ok = rates["FULL"] >= TARGET
    print(f"  durable (FULL) target >= {TARGET:.0f}/s: {'met' if ok else 'NOT met'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None,
                        help="where to put the files (default: a temp dir; use the SD card)")
    args = parser.parse_args()
    print(describe(extra=f"SQLite {sqlite3.sqlite_version}"))
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        ok = enqueue_section(Path(tmp), args.orders, args.runs)
        # further sections (the drain to Leat) go here, sharing `tmp`
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
