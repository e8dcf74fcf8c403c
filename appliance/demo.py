"""`leat-scanner demo`: sample codes replayed through the whole scan path, events printed.

With no config file the demo starts its own Mosquitto on a free loopback port and its own
Leat sandbox (appliance/sandbox/, seeded with the demo contacts, giftcards and
vouchers); with `--config` it uses the configured broker and Leat account. Frames (loyalty
cards, a giftcard, a voucher, a phone in dark mode, a Loyalty Token URL, empty frames) are
generated into a temporary folder and replayed as the camera would deliver them; LED/buzzer
run on gpiozero's mock pins and each signal is printed. A subscriber prints every message as
a POS would see it, with a readable line for each identification. With the private sandbox a
demo POS (`DemoPos`) then redeems a reward and a voucher over request/response and sends the
order with them as linked discounts, printing a receipt line per step; then it takes a split
payment (part giftcard, part prepaid), sends that order with both payments, and gives the
giftcard part back (`giftcard.reverse`, its outcome on events/command).
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from appliance.assembly import build
from appliance.bus import PahoOutageFilter
from appliance.config import Config, read_secret
from appliance.errors import BusError
from appliance.feedback import Feedback, FeedbackLike, Signal
from appliance.localbroker import LocalMosquitto
from appliance.samples import DEMO_ACCOUNT_SECRET, DEMO_CODES, DEMO_SHOP_UUID, write_demo_frames
from appliance.sandbox.server import LeatSandbox

DEMO_DEVICE_ID = "demo-counter"


class EchoFeedback:
    """Shows each signal on the mock pins and prints it, so the demo shows the LED/buzzer."""

    def __init__(self, inner: FeedbackLike, out: TextIO) -> None:
        self._inner, self._out = inner, out

    def show(self, signal: Signal) -> None:
        """Print and forward one signal."""
        self._out.write(f"   [led/buzzer] {signal.name.lower()}\n")
        self._inner.show(signal)

    def close(self) -> None:
        """Close the wrapped feedback."""
        self._inner.close()


class Viewer:
    """An MQTT subscriber printing everything under the device's base topic; with `run_pos`
    it also starts the demo POS after the first card."""

    def __init__(self, cfg: Config, out: TextIO, *, run_pos: bool = False) -> None:
        self._base = cfg.base_topic
        self._out = out
        self._run_pos = run_pos
        self.orders_settled = threading.Event()
        self.pos = DemoPos(self._send, out)
        self._order_events = 0
        self.subscribed = threading.Event()
        self.offline_seen = threading.Event()
        self.scan_events = 0
        self.identifications = 0
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"leat-scanner-demo-viewer-{cfg.device.id}",
            protocol=mqtt.MQTTv5,
        )
        # paho reports a benign race at disconnect ("Client is not connected", from its loop
        # thread) on stderr unless it has a logger, and at ERROR on that logger: filtered
        viewer_log = logging.getLogger(__name__ + ".viewer")
        if not any(isinstance(f, PahoOutageFilter) for f in viewer_log.filters):
            viewer_log.addFilter(PahoOutageFilter())
        self._client.enable_logger(viewer_log)
        if cfg.mqtt.username:
            self._client.username_pw_set(
                cfg.mqtt.username, read_secret("mqtt-password", cfg.mqtt.password_file)
            )
        if cfg.mqtt.tls.enabled:
            self._client.tls_set(
                ca_certs=str(cfg.mqtt.tls.ca_file) if cfg.mqtt.tls.ca_file else None
            )
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        try:
            self._client.connect(cfg.mqtt.host, cfg.mqtt.port)
        except OSError as exc:
            where = f"{cfg.mqtt.host}:{cfg.mqtt.port}"
            raise BusError(f"demo viewer cannot reach {where}: {exc}") from exc
        self._client.loop_start()

    def _on_connect(
        self, client: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Properties | None
    ) -> None:
        if not rc.is_failure:
            client.subscribe(f"{self._base}/#", qos=1)

    def _on_subscribe(
        self, _c: mqtt.Client, _u: Any, _mid: int, _rc: list[ReasonCode], _p: Properties | None
    ) -> None:
        self.subscribed.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        topic = message.topic.removeprefix(self._base + "/")
        text = message.payload.decode("utf-8", "replace")
        if topic == "events/scan":
            self.scan_events += 1
        if topic == "availability" and text == "offline":
            self.offline_seen.set()
        if topic == "events/identification":
            self.identifications += 1
            event = json.loads(text)
            self._out.write(f"   {describe_identification(event)}\n")
            if self._run_pos and event["kind"] == "loyalty_card":
                # once, for the first card: the POS's steps wait for replies, which arrive on
                # this (paho's) thread, so they run on their own
                self._run_pos = False
                threading.Thread(target=self.pos.run, args=(event,), daemon=True).start()
        if topic.startswith("response/"):
            try:
                reply = json.loads(text)
            except ValueError:
                reply = None
            if isinstance(reply, dict):
                self.pos.answered(reply)
        if topic == "events/order":
            self._order_events += 1
            self._out.write(f"   {describe_order(json.loads(text))}\n")
            if self._order_events >= len(DEMO_ORDERS):
                self.orders_settled.set()
        if topic == "events/command":
            self.pos.answered(json.loads(text), event=True)
        retained = " (retained)" if message.retain else ""
        try:
            shown = json.dumps(json.loads(text), ensure_ascii=False)
        except ValueError:
            shown = text
        self._out.write(f"<- {topic}{retained}  {shown}\n")

    def _send(self, verb: str, request: dict[str, Any]) -> None:
        """Publish one POS request (QoS 1, the device's default reply topic)."""
        self._client.publish(f"{self._base}/request/{verb}", json.dumps(request), qos=1)

    def close(self) -> None:
        """Disconnect."""
        self._client.disconnect()
        self._client.loop_stop()


DEMO_ORDER_ID = "demo-order-0001"
DEMO_ANONYMOUS_ORDER_ID = "demo-order-0002"
DEMO_SPLIT_ORDER_ID = "demo-order-0003"
DEMO_ORDERS = (DEMO_ORDER_ID, DEMO_ANONYMOUS_ORDER_ID, DEMO_SPLIT_ORDER_ID)
FLAT_WHITE, CROISSANT = 350, 250  # prices in cents
GIFTCARD_PART = 600  # of the split payment's 9.50; the rest from the prepaid balance
REPLY_TIMEOUT_S = 15.0  # per POS request; a command answers within its 5 s deadline


def demo_order(
    external_identifier: str, free_coffees: Sequence[tuple[str, str, str]] = ()
) -> dict[str, Any]:
    """Two flat whites and a croissant, as Leat's create-and-process body.

    Each of `free_coffees` (name, offer type, offer uuid: a reward or voucher redeemed for this
    order; at most two) makes one flat white free: a line discount, also in the line's
    discount_amount and linked to the line and to the Leat offer, as the create-order fields
    of Leat's Point of Sales integration guide (docs.leat.com) ask: line-level discounts are
    "reflected in the discount amount on the individual (sub) line item(s)" and the offer is
    "highly recommended to link if present".
    """
    ext = external_identifier
    discounts = [
        {"external_identifier": f"{ext}-d{number}", "name": name, "amount": FLAT_WHITE,
         "type": "ABSOLUTE", "value": FLAT_WHITE, "applied_to": "ORDER_LINES",
         "line_items": [{"external_identifier": f"{ext}-1"}],
         "offer": {"uuid": uuid, "type": offer_type}}
        for number, (name, offer_type, uuid) in enumerate(free_coffees[:2], 1)
    ]
    off = FLAT_WHITE * len(discounts)
    total = 2 * FLAT_WHITE - off + CROISSANT
    order: dict[str, Any] = {
        "external_identifier": ext,
        "status": "COMPLETED",
        "payment_status": "PAID",
        "order_amount": total,
        "total_order_amount": total,
        "line_items": [
            {"external_identifier": f"{ext}-1", "name": "Flat white", "quantity": 2,
             "price": FLAT_WHITE, "total_amount": 2 * FLAT_WHITE - off,
             **({"discount_amount": off} if off else {})},
            {"external_identifier": f"{ext}-2", "name": "Croissant",
             "quantity": 1, "price": CROISSANT, "total_amount": CROISSANT},
        ],
    }
    if discounts:
        order["applied_discounts"] = discounts
        order["total_discount_amount"] = off
    return order


class StepFailed(Exception):
    """A POS request was refused, or not answered in time."""


class DemoPos:
    """The demo's POS, acting over MQTT request/response after the first card: it redeems a
    reward, locks and redeems the customer's voucher, hands over the order with both as
    discounts, then an order without a customer. Each request carries a request_id; each step
    waits for its reply and prints a receipt line. `done` is set at the end, `failure` names
    the step that failed (the demo then exits 1)."""

    def __init__(
        self, send: Callable[[str, dict[str, Any]], None], out: TextIO,
        *, timeout: float = REPLY_TIMEOUT_S,
    ) -> None:
        self._send, self._out, self._timeout = send, out, timeout
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[threading.Event, list[dict[str, Any]]]] = {}
        self.done = threading.Event()
        self.failure: str | None = None
        self.steps_ok = 0

    def answered(self, reply: dict[str, Any], *, event: bool = False) -> None:
        """A reply (or with `event`, an events/command outcome) arrived (paho's thread): hand
        it to the step waiting for its request_id."""
        request_id = reply.get("request_id")
        if not isinstance(request_id, str):
            return
        key = f"event:{request_id}" if event else request_id
        with self._lock:
            waiter = self._waiting.get(key)
        if waiter is not None:
            waiter[1].append(reply)
            waiter[0].set()

    def run(self, identification: dict[str, Any]) -> None:
        """Serve the customer identified by `identification` (on its own thread)."""
        try:
            self._checkout(identification)
        except StepFailed as exc:
            self.failure = str(exc)
            self._out.write(f"   POS step failed: {exc}\n")
        finally:
            self.done.set()

    def _checkout(self, identification: dict[str, Any]) -> None:
        contact = identification.get("contact")
        if contact is None:
            raise StepFailed("the first card was not identified by Leat: nothing to redeem")
        # a pre-redeemable reward is claimed now and collected on a later visit: redeem one
        # that is used at once (Leat's "Option 1: redeem, reverse on failure")
        reward = next((r for r in contact["rewards"]
                       if r["affordable"] and not r["pre_redeemable"]), None)
        voucher = next((o for o in contact["offers"] if o["type"] == "voucher"), None)
        if reward is None or voucher is None:
            raise StepFailed(f"{contact['first_name']} has no affordable reward or no voucher")
        transaction = f"till-1/{DEMO_ORDER_ID}"

        self._out.write(f"-> request/reward.redeem  {reward['title']} for "
                        f"{contact['first_name']}\n")
        redeemed = self._request("reward.redeem", f"{DEMO_ORDER_ID}-reward", transaction, {
            "contact_uuid": contact["uuid"], "reward_uuid": reward["uuid"],
            "identifier": identification["identifier"],
        })
        credits = redeemed["credits"]
        spent = abs(credits) if isinstance(credits, int) else reward["required_credits"]
        self._out.write(f"   reward redeemed: {redeemed['title'] or reward['title']}, "
                        f"-{spent} {contact['points_name']}, balance {redeemed['points']}\n")

        code = voucher["code"]
        self._out.write(f"-> request/voucher.lock  {code}\n")
        lock = self._request("voucher.lock", f"{DEMO_ORDER_ID}-lock", transaction,
                             {"code": code, "voucher_uuid": voucher["uuid"]})
        self._out.write(f"   voucher locked: {code} ({lock['status']}), release key kept; "
                        f"Leat releases it at {lock['system_release_at']}\n")
        self._out.write(f"-> request/voucher.redeem  {code} with the lock's release key\n")
        # the offer is in this contact's own list: the contact linked to the voucher
        used = self._request("voucher.redeem", f"{DEMO_ORDER_ID}-voucher", transaction, {
            "code": code, "contact_uuid": contact["uuid"], "release_key": lock["release_key"],
        })
        self._out.write(f"   voucher redeemed: {used['voucher']['name']} ({code}), "
                        f"{used['voucher']['status']}\n")

        free = [(reward["title"], "REWARD_REDEMPTION", redeemed["uuid"]),
                (voucher["title"], "VOUCHER_REDEMPTION", used["redemption_uuid"] or used["uuid"])]
        self._order(DEMO_ORDER_ID, {"identifier": identification["identifier"]}, free)
        self._order(DEMO_ANONYMOUS_ORDER_ID, None, ())
        self._split_payment(identification)

    def _split_payment(self, identification: dict[str, Any]) -> None:
        """A bill paid part with a giftcard, part from the prepaid balance; the order with
        both payments (`payments[]`: Leat's GIFTCARD_TRANSACTION / PREPAID_TRANSACTION); then
        the giftcard part given back."""
        contact = identification["contact"]
        ext, card = DEMO_SPLIT_ORDER_ID, DEMO_CODES["giftcard"]
        transaction = f"till-1/{ext}"
        total = 2 * FLAT_WHITE + CROISSANT
        prepaid_part = total - GIFTCARD_PART
        self._out.write(f"-> request/giftcard.pay  {GIFTCARD_PART / 100:.2f} of "
                        f"{total / 100:.2f} with giftcard {card}\n")
        gift = self._request("giftcard.pay", f"{ext}-giftcard", transaction,
                             {"hash": card, "amount_in_cents": GIFTCARD_PART})
        self._out.write(f"   giftcard paid: -{GIFTCARD_PART / 100:.2f}, balance "
                        f"{_money(gift['balance_in_cents'])}\n")
        self._out.write(f"-> request/prepaid.pay  {prepaid_part / 100:.2f} from "
                        f"{contact['first_name']}'s prepaid balance\n")
        prepaid = self._request("prepaid.pay", f"{ext}-prepaid", transaction, {
            "contact_uuid": contact["uuid"], "amount_in_cents": prepaid_part})
        self._out.write(f"   prepaid paid: -{prepaid_part / 100:.2f}, balance "
                        f"{_money(prepaid['balance_in_cents'])}\n")
        order = demo_order(ext)
        order["payments"] = [
            {"uuid": gift["transaction_uuid"], "type": "GIFTCARD_TRANSACTION"},
            {"uuid": prepaid["transaction_uuid"], "type": "PREPAID_TRANSACTION"},
        ]
        self._out.write(f"-> request/order.create  {ext} ({identification['identifier']}), "
                        f"total {total / 100:.2f} paid {GIFTCARD_PART / 100:.2f} giftcard + "
                        f"{prepaid_part / 100:.2f} prepaid\n")
        self._request("order.create", ext, transaction,
                      {"customer": {"identifier": identification["identifier"]},
                       "order": order})
        self._out.write("-> request/giftcard.reverse  the giftcard part, refunded\n")
        back = self._request("giftcard.reverse", f"{ext}-giftcard-back", transaction,
                             {"transaction_uuid": gift["transaction_uuid"]}, final=True)
        self._out.write(f"   giftcard part given back: +{_money(back['amount_in_cents'])}, "
                        f"balance {_money(back['balance_in_cents'])}\n")

    def _order(
        self, external_identifier: str, customer: dict[str, str] | None,
        free: Sequence[tuple[str, str, str]],
    ) -> None:
        """Hand the device a finished order; its outcome follows on events/order."""
        order = demo_order(external_identifier, free)
        who = customer["identifier"] if customer else "no customer"
        off = order.get("total_discount_amount", 0)
        names = ", ".join(name for name, _, _ in free)
        self._out.write(f"-> request/order.create  {external_identifier} ({who}), "
                        f"total {order['total_order_amount'] / 100:.2f}"
                        + (f" after {off / 100:.2f} off ({names})" if off else "") + "\n")
        self._request("order.create", external_identifier, f"till-1/{external_identifier}",
                      {"customer": customer, "order": order})

    def _request(
        self, verb: str, request_id: str, transaction: str, args: dict[str, Any],
        *, final: bool = False,
    ) -> dict[str, Any]:
        """Publish one request and wait for its reply; its `data` when ok. With `final` (a
        give-back verb, answered `accepted`) wait for its outcome on events/command too."""
        keys = [request_id, f"event:{request_id}"] if final else [request_id]
        waiters: dict[str, tuple[threading.Event, list[dict[str, Any]]]] = {
            key: (threading.Event(), []) for key in keys}
        with self._lock:
            self._waiting.update(waiters)
        try:
            self._send(verb, {"request_id": request_id, "transaction": transaction, **args})
            for key, (arrived, _) in waiters.items():
                if not arrived.wait(self._timeout):
                    what = "outcome on events/command" if key != request_id else "reply"
                    raise StepFailed(f"{verb}: no {what} within {self._timeout:g} s")
        finally:
            with self._lock:
                for key in keys:
                    del self._waiting[key]
        reply = waiters[request_id][1][0]
        if final and reply["status"] == "accepted":
            reply = waiters[f"event:{request_id}"][1][0]
        if reply["status"] != "ok":
            error = reply.get("error") or {}
            raise StepFailed(f"{verb}: {reply['status']}, {error.get('code')}: "
                             f"{error.get('message')}")
        self.steps_ok += 1
        data: dict[str, Any] = reply["data"]
        return data


def _money(cents: object) -> str:
    """Cents as a readable amount ("?" when Leat did not say)."""
    return f"{cents / 100:.2f}" if isinstance(cents, int) else "?"


def describe_order(event: dict[str, Any]) -> str:
    """One line a person reads: what became of an order."""
    ident = event["external_identifier"]
    if event["status"] != "delivered":
        return f"order {ident} not delivered: {event['error']['message']}"
    if event["claim_url"]:
        return f"order {ident} had no customer: print this claim QR on the receipt: " \
               f"{event['claim_url']}"
    return f"order {ident} reached Leat once: +{event['points']} points, " \
           f"new balance {event['new_balance']}"


def describe_identification(event: dict[str, Any]) -> str:
    """One line a person reads: who or what was identified, balances and offers."""
    status = event["status"] if event["verified"] else "unverified (Leat offline)"
    if (contact := event.get("contact")) is not None:
        rewards = ", ".join(
            f"{r['title']} {r['required_credits']}{'' if r['affordable'] else ' (not yet)'}"
            for r in contact["rewards"]
        )
        return (
            f"identified: {contact['first_name']} ({contact['tier'] or 'no tier'}), "
            f"{contact['points']} {contact['points_name']}, prepaid "
            f"{contact['prepaid_balance_cents'] / 100:.2f}, {len(contact['offers'])} offer(s); "
            f"rewards: {rewards or 'none'}"
        )
    if (card := event.get("giftcard")) is not None:
        return f"giftcard {status}: balance {card['balance_cents'] / 100:.2f}"
    if (voucher := event.get("voucher")) is not None:
        return f"voucher {status}: {voucher['name']} {voucher['attributes']}"
    if (token := event.get("token")) is not None:
        return f"loyalty token {status}: {token['unit_value']} {token['unit_name']}"
    return f"{event['kind']} {status}"


def run_demo(
    cfg: Config,
    *,
    configured: bool,
    fps: float = 4.0,
    stop: threading.Event | None = None,
    out: TextIO | None = None,
    sandbox_seed: Mapping[str, Any] | None = None,
) -> int:
    """Run the demo; returns 0 when every published scan reached the subscriber and (with
    the private sandbox) every step of the demo POS succeeded. `sandbox_seed` replaces the
    private sandbox's bundled demo data."""
    from gpiozero.pins.mock import MockFactory

    out = out or sys.stdout
    stop = stop or threading.Event()
    with tempfile.TemporaryDirectory(prefix="leat-scanner-demo-") as tmp:
        work = Path(tmp)
        frames = work / "frames"
        write_demo_frames(frames)
        broker = None if configured else LocalMosquitto(work / "broker")
        sandbox = None if configured else LeatSandbox(sandbox_seed)
        try:
            if broker is not None and sandbox is not None:
                broker.start()
                out.write(f"== started a private mosquitto on 127.0.0.1:{broker.port}\n")
                sandbox.start()
                out.write(f"== started the Leat sandbox on {sandbox.url}\n")
                cfg = _private_services(cfg, work, broker, sandbox)
            cfg = _demo_config(cfg, frames, fps)
            out.write(f"== replaying {len(list(frames.iterdir()))} frames from {frames} "
                      f"at {fps:g} fps; subscribed to {cfg.base_topic}/#\n")
            private = sandbox is not None  # never place demo orders in a real Leat account
            viewer = Viewer(cfg, out, run_pos=private)
            try:
                if not viewer.subscribed.wait(10):
                    raise BusError("demo viewer could not subscribe within 10 s")
                feedback = EchoFeedback(Feedback.from_config(cfg.feedback, MockFactory()), out)
                service = build(cfg, feedback=feedback, stop_when_source_ends=not private)
                if private:
                    # the replay ends before the POS is done and its orders have gone round
                    def _stop_when_done() -> None:
                        service.source_ended.wait(120)
                        if viewer.pos.done.wait(60) and viewer.pos.failure is None:
                            viewer.orders_settled.wait(30)
                        stop.set()

                    threading.Thread(target=_stop_when_done, daemon=True).start()
                status = service.run(stop)
                viewer.offline_seen.wait(5)
                published = service.stats.scans_total
                pos = f"; {viewer.pos.steps_ok} POS requests answered ok" if private else ""
                out.write(f"== {published} scans published, {viewer.scan_events} received, "
                          f"{viewer.identifications} identifications; "
                          f"{service.stats.rejected_total} refused{pos}\n")
                if private and (problem := _pos_problem(viewer)) is not None:
                    out.write(f"== {problem}\n")
                    return 1
                return status if viewer.scan_events == published else 1
            finally:
                viewer.close()
        finally:
            if broker is not None:
                broker.stop()
            if sandbox is not None:
                sandbox.stop()


def _pos_problem(viewer: Viewer) -> str | None:
    """What went wrong with the demo POS's steps and orders, if anything."""
    if not viewer.pos.done.is_set():
        return "the demo POS did not finish in time"
    if viewer.pos.failure is not None:
        return f"the demo POS failed: {viewer.pos.failure}"
    if not viewer.orders_settled.is_set():
        return "the demo orders did not come back from Leat in time"
    return None


def _demo_config(cfg: Config, frames: Path, fps: float) -> Config:
    """The demo's camera (the generated frames, replayed once) and its own state directory,
    so it never touches a device's real outbox."""
    camera = cfg.camera.model_copy(
        update={"source": "replay", "replay_path": frames, "fps": fps, "replay_loop": False}
    )
    device = cfg.device.model_copy(update={"state_dir": frames.parent / "state"})
    return cfg.model_copy(update={"camera": camera, "device": device})


def _private_services(
    cfg: Config, work: Path, broker: LocalMosquitto, sandbox: LeatSandbox
) -> Config:
    """Point the config at the private broker and Leat sandbox (secrets in 0600 files)."""
    token_file = _secret_file(work / "leat-token", sandbox.personal_access_token)
    account_secret_file = _secret_file(work / "leat-account-secret", DEMO_ACCOUNT_SECRET)
    return cfg.model_copy(
        update={
            "device": cfg.device.model_copy(update={"id": DEMO_DEVICE_ID}),
            "mqtt": cfg.mqtt.model_copy(
                update={"host": broker.host, "port": broker.port, "username": None,
                        "password_file": None}
            ),
            "leat": cfg.leat.model_copy(
                update={"base_url": sandbox.url, "token_file": token_file, "client_id": None,
                        "shop_uuid": DEMO_SHOP_UUID, "account_secret_file": account_secret_file,
                        "portal_url": "https://demo.leat.example"}
            ),
        }
    )


def _secret_file(path: Path, value: str) -> Path:
    path.touch(mode=0o600)
    path.write_text(value, encoding="utf-8")
    return path
