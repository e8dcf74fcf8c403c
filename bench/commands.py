"""POS verbs through the device: reply latency per verb at Leat latency L, vs the bare Leat call.

The whole device runs (`assembly.build`: the bus, the request worker, the outbox, the
forwarder, the real httpx client) against a private Mosquitto and the Leat sandbox, which
adds latency L to every call. A paho MQTT v5 client (the POS) publishes each request at
QoS 1 with a response topic and correlation data, one at a time, and times its reply (and,
for an order, its `events/order` outcome, the part that calls Leat). In the same run the
same Leat calls are made directly with `LeatClient` against the same sandbox ("bare"),
so the figures show what the device adds on top of Leat. Money (issue 9): `prepaid.pay`
(one call), `giftcard.pay` (the payment, then the card read back), and the time the
device's reconciler takes to settle an ambiguous pay (Leat's answer lost) at the same L.

    .venv/bin/python bench/commands.py [--latency-ms 50] [--runs 40]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # order bodies

from machine import describe
from test_orders import order_body

from appliance.assembly import build
from appliance.config import Config
from appliance.feedback import NullFeedback
from appliance.leat.client import LeatClient
from appliance.localbroker import LocalMosquitto
from appliance.samples import DEMO_CODES, DEMO_SHOP_UUID
from appliance.source import Frame

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "bench"
BASE = f"leat-scanner/{DEVICE}"
REPLIES = "pos/bench/replies"
TIMEOUT_S = 30.0


class Sandbox:
    """The Leat sandbox in a process of its own (`leat-scanner sandbox`), as Leat is another
    machine: in this process its HTTP threads would compete with the device's for the GIL."""

    def __init__(self, work: Path, seed: dict[str, Any]) -> None:
        seed_file = work / "seed.json"
        seed_file.write_text(json.dumps(seed), encoding="utf-8")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "appliance", "sandbox", "--port", "0", "--seed",
             str(seed_file)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        lines = [self._process.stdout.readline() for _ in range(3)]
        self.url = lines[0].split(" on ", 1)[1].strip()
        self.token = lines[2].split()[1]

    def set_latency(self, seconds: float) -> None:
        response = httpx.post(f"{self.url}/_sandbox/faults", json={"latency_s": seconds})
        response.raise_for_status()

    def close(self) -> None:
        self._process.terminate()
        self._process.wait(10)


class NoCamera:
    """A frame source that has ended: the device serves the POS, the camera stays idle."""

    def read(self) -> Frame | None:
        return None

    def close(self) -> None:
        pass


class Pos:
    """The POS: `ask()` publishes one request and waits for its reply (and, when asked, for
    the `events/<name>` message naming its key); returns (reply s, event s, reply)."""

    def __init__(self, broker: LocalMosquitto) -> None:
        self._replies: dict[bytes, dict[str, Any]] = {}
        self._events: dict[str, float] = {}
        self._arrived = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_socket_open = lambda c, u, s: s.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.connect(broker.host, broker.port)
        self.client.subscribe([(REPLIES, 1), (f"{BASE}/events/#", 1)])
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("the POS client is not subscribed")
        self._n = 0

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        document = json.loads(msg.payload)
        with self._arrived:
            if msg.topic == REPLIES:
                self._replies[msg.properties.CorrelationData] = {**document, "_at": now}
            else:
                name = msg.topic.rsplit("/", 1)[1]
                key = document.get("external_identifier") or document.get("request_id")
                self._events[f"{name}:{key}"] = now
            self._arrived.notify_all()

    def ask(self, verb: str, body: dict[str, Any], event: str | None = None
            ) -> tuple[float, float | None, dict[str, Any]]:
        self._n += 1
        key = b"%d" % self._n
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = REPLIES
        props.CorrelationData = key
        start = time.perf_counter()
        self.client.publish(f"{BASE}/request/{verb}", json.dumps(body), qos=1, properties=props)
        with self._arrived:
            if not self._arrived.wait_for(lambda: key in self._replies, TIMEOUT_S):
                raise RuntimeError(f"no reply to {verb} request {key!r}")
            reply = self._replies.pop(key)
            if event is None:
                return reply["_at"] - start, None, reply
            if not self._arrived.wait_for(lambda: event in self._events, TIMEOUT_S):
                raise RuntimeError(f"no {event} after {verb} request {key!r}")
            return reply["_at"] - start, self._events.pop(event) - start, reply

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass(frozen=True)
class Case:
    """One verb: its request, the equivalent bare Leat call(s), and the target's Leat calls
    (p50 <= calls x L + 10 ms); `event` names the events/<name> carrying its outcome."""

    verb: str
    label: str
    request: Callable[[int, Context], dict[str, Any]]
    bare: Callable[[LeatClient, int, Context], object]
    calls: int
    event: str | None = None


@dataclass(frozen=True)
class Context:
    """What the cases need from the sandbox's seed (`bench_seed`), and what bare calls
    hand to later ones (`keys`: voucher code -> release key)."""

    contact_uuid: str
    run: str  # unique per run of the bench, so external identifiers never collide
    keys: dict[str, str] = field(default_factory=dict)


JANE: Final = "c0a80101-1a2b-4c3d-8e4f-000000000001"  # the seed's contact with LC-7F3K9Q2M
SAM: Final = "c0a80101-1a2b-4c3d-8e4f-000000000002"  # holds the bench's collectable rewards
COFFEE: Final = "e1d2c3b4-0000-4a00-9000-000000000011"  # a reward of 50 points
CROISSANT: Final = "e1d2c3b4-0000-4a00-9000-000000000012"  # pre-redeemable
SPRING: Final = "b0b0b0b0-0000-4c00-8000-000000000001"  # a promotion
PROGRAM: Final = "f0f0f0f0-0000-4e00-8000-000000000001"  # the seed's giftcard program
PAY_CENTS: Final = 100


def giftcard_uuid(side: str) -> str:
    """The bench's giftcard of each side (dev, bare, rec: the reconciler's own)."""
    return f"be0c0002-0000-4000-{ {'dev': 8, 'bare': 9, 'rec': 'a'}[side]}000-000000000001"


def giftcard_hash(side: str) -> str:
    return f"BENCH-GC-{side.upper()}"


def voucher_code(side: str, n: int) -> str:
    return f"BENCH-{side.upper()}-{n:04d}"


def voucher_uuid(side: str, n: int) -> str:
    return f"be0c0000-0000-4000-{'8' if side == 'dev' else '9'}000-{n:012d}"


def collectable_uuid(side: str, n: int) -> str:
    return f"be0c0001-0000-4000-{'8' if side == 'dev' else '9'}000-{n:012d}"


def bench_seed(runs: int) -> dict[str, Any]:
    """The shipped seed, plus what `runs` value-taking requests use up on each side (the
    device's and the bare calls'): points, vouchers and collectable rewards. The collectable
    rewards are Sam's, not Jane's: Jane's lookups then list what a customer at a counter has,
    not the bench's hundreds of croissants."""
    seed = json.loads((ROOT / "appliance" / "sandbox" / "seed.json").read_text("utf-8"))
    for contact in seed["contacts"]:
        if contact["uuid"] in (JANE, SAM):  # Sam's: the reconciler's own
            contact["prepaid_balance_in_cents"] = 10_000_000
        if contact["uuid"] == JANE:
            contact["credit_balance"] = 1_000_000
    for program in seed["giftcard_programs"]:
        program["max_amount_in_cents"] = 10_000_000
    for side, gid in (("dev", 91001), ("bare", 91002), ("rec", 91003)):
        seed["giftcards"].append({
            "id": gid, "uuid": giftcard_uuid(side), "hash": giftcard_hash(side),
            "type": "DIGITAL", "active": True, "upgradeable": True,
            "amount_in_cents": 5_000_000, "expiration_date": None, "program": PROGRAM})
    next_id = max(v["id"] for v in seed["vouchers"]) + 1
    for side in ("dev", "bare"):
        for n in range(runs):
            seed["vouchers"].append({
                "id": next_id, "uuid": voucher_uuid(side, n), "code": voucher_code(side, n),
                "name": "Spring 10% off", "description": "bench", "status": "ACTIVE",
                "promotion": SPRING, "contact": None,
                "expiration_date": "2099-06-30T23:59:59+00:00",
                "activation_date": "2026-03-01T00:00:00+00:00", "redeemed_at": None,
            })
            next_id += 1
            seed["collectable_rewards"].append({
                "uuid": collectable_uuid(side, n), "contact": SAM, "reward": CROISSANT,
                "created_at": "2026-11-01T09:30:00+00:00", "expires_at": None,
            })
    return seed


def known_verbs() -> set[str]:
    """The verbs the device answers: the order verbs and the command verbs."""
    from appliance.pos.commands import VERBS as COMMAND_VERBS
    from appliance.pos.intake import VERBS as ORDER_VERBS

    return set(ORDER_VERBS) | set(COMMAND_VERBS)


def _rid(verb: str, n: int, ctx: Context) -> str:
    return f"{ctx.run}-{verb}-{n}"


def _order(n: int, ctx: Context, prefix: str) -> dict[str, Any]:
    body = order_body(f"{ctx.run}-{prefix}-{n}")
    body["contact"] = {"uuid": ctx.contact_uuid}
    body["business_profile"] = {"uuid": DEMO_SHOP_UUID}
    return body


CASES: list[Case] = [
    Case(
        "order.create", "order.create (contact uuid)",
        lambda n, ctx: {"transaction": f"tx-{n}", "customer": {"contact_uuid": ctx.contact_uuid},
                        "order": order_body(f"{ctx.run}-dev-{n}")},
        lambda leat, n, ctx: leat.create_and_process_order(_order(n, ctx, "bare")),
        calls=1, event="order",
    ),
    Case(
        "contact.lookup", "contact.lookup by card",
        lambda n, ctx: {"request_id": _rid("lookup-card", n, ctx),
                        "identifier": DEMO_CODES["loyalty_card"]},
        lambda leat, n, ctx: leat.get_contact(
            leat.find_contact_identifier(DEMO_CODES["loyalty_card"]).contact.uuid  # type: ignore[union-attr]
        ),
        calls=2,
    ),
    Case(
        "contact.lookup", "contact.lookup by uuid",
        lambda n, ctx: {"request_id": _rid("lookup-uuid", n, ctx),
                        "contact_uuid": ctx.contact_uuid},
        lambda leat, n, ctx: leat.get_contact(ctx.contact_uuid),
        calls=1,
    ),
    Case(
        "points.preview", "points.preview (basket)",
        lambda n, ctx: {"request_id": _rid("preview", n, ctx), "contact_uuid": ctx.contact_uuid,
                        "order": order_body(f"{ctx.run}-preview-{n}")},
        lambda leat, n, ctx: leat.simulate_order(_order(n, ctx, "preview")),
        calls=1,
    ),
    Case(
        "order.get", "order.get (not on the device)",
        lambda n, ctx: {"request_id": _rid("get", n, ctx), "external_identifier": "nowhere"},
        lambda leat, n, ctx: leat.find_order("nowhere"),
        calls=1,
    ),
    Case(
        "voucher.validate", "voucher.validate (flyer, no contact)",
        lambda n, ctx: {"request_id": _rid("validate", n, ctx), "code": "SPRING-2X7Q"},
        lambda leat, n, ctx: leat.find_voucher("SPRING-2X7Q"),  # Leat validates a contact's
        calls=1,
    ),
    Case(
        "reward.redeem", "reward.redeem",
        lambda n, ctx: {"request_id": _rid("redeem", n, ctx), "contact_uuid": ctx.contact_uuid,
                        "reward_uuid": COFFEE},
        lambda leat, n, ctx: leat.create_reward_reception(
            contact_uuid=ctx.contact_uuid, reward_uuid=COFFEE),
        calls=1,
    ),
    Case(
        "reward.collect", "reward.collect",
        lambda n, ctx: {"request_id": _rid("collect", n, ctx), "contact_uuid": SAM,
                        "collectable_uuid": collectable_uuid("dev", n)},
        lambda leat, n, ctx: leat.collect_reward(collectable_uuid("bare", n)),
        calls=1,
    ),
    Case(
        "voucher.lock", "voucher.lock (code and uuid)",
        lambda n, ctx: {"request_id": _rid("lock", n, ctx), "code": voucher_code("dev", n),
                        "voucher_uuid": voucher_uuid("dev", n)},
        lambda leat, n, ctx: ctx.keys.__setitem__(
            voucher_code("bare", n), leat.lock_voucher(voucher_uuid("bare", n)).release_key),
        calls=1,
    ),
    Case(
        "voucher.redeem", "voucher.redeem (locked before)",
        lambda n, ctx: {"request_id": _rid("redeem-voucher", n, ctx),
                        "code": voucher_code("dev", n), "contact_uuid": ctx.contact_uuid},
        lambda leat, n, ctx: leat.redeem_voucher(
            code=voucher_code("bare", n), contact_uuid=ctx.contact_uuid,
            release_key=ctx.keys.get(voucher_code("bare", n))),
        calls=1,
    ),
]


CASES += [
    Case(
        "prepaid.pay", "prepaid.pay (contact uuid)",
        lambda n, ctx: {"request_id": _rid("prepaid", n, ctx), "contact_uuid": ctx.contact_uuid,
                        "amount_in_cents": PAY_CENTS},
        lambda leat, n, ctx: leat.create_prepaid_transaction(
            amount_in_cents=-PAY_CENTS, contact_uuid=ctx.contact_uuid),
        calls=1,
    ),
    Case(
        "giftcard.pay", "giftcard.pay (uuid; pay, read balance)",
        lambda n, ctx: {"request_id": _rid("giftcard", n, ctx),
                        "giftcard_uuid": giftcard_uuid("dev"), "amount_in_cents": PAY_CENTS},
        lambda leat, n, ctx: (leat.create_giftcard_transaction(
            giftcard_uuid=giftcard_uuid("bare"), amount_in_cents=-PAY_CENTS),
            leat.get_giftcard(giftcard_uuid("bare"))),
        calls=2,
    ),
]


def reconcile_times(leat: LeatClient, work: Path, ctx: Context, runs: int
                    ) -> list[tuple[str, list[float], int]]:
    """The device's reconcilers (`pos/money.py`) timed at latency L, each after a payment
    made directly whose answer it is told was lost: (label, seconds, Leat calls). Sam's
    balance and a card of its own, so no payment of the verbs above is a candidate."""
    from datetime import UTC, datetime

    from appliance.pos import money
    from appliance.pos.ledger import Ledger
    from appliance.pos.verbs import Context as VerbContext
    from appliance.resolve import Resolver

    def no_outbox() -> Any:
        raise RuntimeError("the money reconcilers use no outbox")

    path = work / "reconcile.sqlite3"
    Ledger.prepare(path)
    ledger = Ledger(path)
    resolver = Resolver(leat, shop_uuid=DEMO_SHOP_UUID, deadline_s=5.0)
    cases: list[tuple[str, dict[str, Any], Callable[[], object], int]] = [
        ("prepaid.pay", {"contact_uuid": SAM, "amount_in_cents": PAY_CENTS},
         lambda: leat.create_prepaid_transaction(amount_in_cents=-PAY_CENTS,
                                                 contact_uuid=SAM), 1),
        ("giftcard.pay", {"giftcard_uuid": giftcard_uuid("rec"), "amount_in_cents": PAY_CENTS},
         lambda: leat.create_giftcard_transaction(giftcard_uuid=giftcard_uuid("rec"),
                                                  amount_in_cents=-PAY_CENTS), 3),
    ]
    results = []
    try:
        for verb, args, paid, calls in cases:
            seconds = []
            for n in range(runs):
                started = datetime.now(UTC)
                paid()
                vctx = VerbContext(leat, resolver, ledger, no_outbox, started)
                start = time.perf_counter()
                data = money.RECONCILERS[verb](vctx, args)
                elapsed = time.perf_counter() - start
                # the next payment must not find this one: record it as this request's
                ledger.begin(f"{ctx.run}-rec-{verb}-{n}", verb, args, None)
                ledger.finish(f"{ctx.run}-rec-{verb}-{n}",
                              {"status": "ok", "data": data, "request_id": "x"})
                if n >= 3:
                    seconds.append(elapsed)
            results.append((f"{verb}: reconcile a lost answer", seconds, calls))
    finally:
        ledger.close()
    return results


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def row(label: str, seconds: list[float]) -> tuple[str, float, float]:
    ms = [s * 1000 for s in seconds]
    return label, statistics.median(ms), percentile(ms, 0.95)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--verbs", nargs="*", help="only these verbs (default: all)")
    args = parser.parse_args()
    latency_ms = args.latency_ms
    rows: list[tuple[str, float, float]] = []
    verdicts: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        token = work / "token"
        runs = args.runs + 3  # the first 3 warm up
        sandbox = Sandbox(work, bench_seed(runs))
        with LocalMosquitto(work / "broker") as broker:
            token.touch(mode=0o600)
            token.write_text(sandbox.token, encoding="utf-8")
            cfg = Config.model_validate({
                "device": {"id": DEVICE, "state_dir": str(work / "state")},
                "mqtt": {"host": broker.host, "port": broker.port},
                "feedback": {"enabled": False},
                "leat": {"base_url": sandbox.url, "token_file": str(token),
                         "shop_uuid": DEMO_SHOP_UUID},
            })
            service = build(cfg, source=NoCamera(), feedback=NullFeedback(),
                            stop_when_source_ends=False)
            stop = threading.Event()
            runner = threading.Thread(target=service.run, args=(stop,), name="device")
            runner.start()
            pos = Pos(broker)
            leat = LeatClient(sandbox.url, token=sandbox.token,
                              shop_uuid=DEMO_SHOP_UUID, timeout_s=10.0)
            try:
                found = leat.find_contact_identifier(DEMO_CODES["loyalty_card"])
                assert found.contact is not None
                ctx = Context(found.contact.uuid, f"b{int(time.time())}")
                sandbox.set_latency(latency_ms / 1000)
                skipped = sorted({case.verb for case in CASES} - known_verbs())
                verbs = known_verbs() & set(args.verbs or known_verbs())
                for case in (c for c in CASES if c.verb in verbs):
                    replies, outcomes, bare = [], [], []
                    for n in range(runs):
                        key = None if case.event is None else f"{case.event}:{ctx.run}-dev-{n}"
                        reply_s, event_s, reply = pos.ask(case.verb, case.request(n, ctx), key)
                        if reply.get("status") not in ("ok", "accepted"):
                            raise RuntimeError(f"{case.verb}: {reply}")
                        start = time.perf_counter()
                        case.bare(leat, n, ctx)
                        if n >= 3:
                            replies.append(reply_s)
                            bare.append(time.perf_counter() - start)
                            if event_s is not None:
                                outcomes.append(event_s)
                    rows.append(row(f"{case.label}: reply", replies))
                    if outcomes:
                        rows.append(row(f"{case.label}: events/{case.event}", outcomes))
                    rows.append(row(f"{case.label}: bare Leat call(s)", bare))
                    measured = statistics.median([s * 1000 for s in outcomes or replies])
                    target = case.calls * latency_ms + 10
                    verdicts.append(f"{case.label}: p50 {measured:.1f} ms <= "
                                    f"{case.calls} x L + 10 = {target:.0f} ms: "
                                    f"{'met' if measured <= target else 'NOT met'}")
                if verbs & {"prepaid.pay", "giftcard.pay"}:
                    for label, seconds, calls in reconcile_times(leat, work, ctx, runs):
                        rows.append(row(f"{label} ({calls} Leat call(s))", seconds))
            finally:
                leat.close()
                pos.close()
                stop.set()
                runner.join(30)
                sandbox.close()
    print(describe("paho-mqtt", "httpx"))
    print(f"Leat latency L = {latency_ms:g} ms per call (sandbox); {args.runs} requests per "
          "verb, one at a time, after 3 to warm up")
    print(f"{'':<58}{'p50 ms':>8}{'p95 ms':>8}")
    for label, p50, p95 in rows:
        print(f"{label:<58}{p50:>8.1f}{p95:>8.1f}")
    for line in verdicts:
        print("target " + line)
    if skipped:
        print(f"not measured (the device does not answer them yet): {', '.join(skipped)}")


if __name__ == "__main__":
    main()
