"""The forwarder: drains the outbox to Leat, exactly once, through any outage.

Exactly once. Every order carries the POS's `external_identifier`, stored with it and never
changed. An attempt ends in one of three ways, each recorded in the outbox before the next:

- Leat answered yes: DELIVERED (with points). Leat answered no: DEAD (code + message).
- Nothing reached Leat (connect error, 429, 503 maintenance, 401): PENDING again, not
  ambiguous; posting again cannot double it.
- It may have reached Leat (read timeout, reset after sending, 5xx, or the process died
  while SENDING: `Outbox.recover()`): PENDING and `ambiguous`, which stays set until
  delivery. Before posting an ambiguous order again, `GET /orders/find` looks it up; found
  means delivered (points unknown) and nothing is posted. Should Leat still call the post a
  duplicate (1003 on `external_identifier`, in the message or in `errors`), the order is
  looked up once more: found means delivered. A duplicate answer to an order that never
  left the device is a clash with another order: DEAD.
- Leat answered in a way nobody documented (`orders/find` gives a bare 404, or a message
  other than "order not found"; a duplicate that `find` then does not find): the order
  stays PENDING and ambiguous on its own backoff, never DEAD (its points would be lost),
  and `alert` says so (the daemon shows it on `state`; logged as an ERROR once per episode).

`Outbox.claim()` makes an item SENDING before a worker gets it, so it is never sent twice
at once; `mark_*` runs only after Leat's answer, so a crash in between leaves it SENDING,
which `recover()` turns into ambiguous. Returns have no find call in Leat: an ambiguous return is
posted again and Leat's duplicate answer counts as delivered (ASSUMPTION, as the sandbox
answers: 400, 1003 "The external identifier has already been taken."). The outbox makes a
return due only after its order is delivered.

What one attempt calls is delivery.py's: an order's lookup, its customer card resolved at send
time (so a card scanned while offline still earns points; an unknown, inactive or unlinked
card is DEAD), a Loyalty Token claim URL for an order without a customer, a give-back
command run by `commands_durable.execute()` (its `Unexplained` is held like an order Leat's
answer about which was not understood). A command's final outcome goes out on
`events/command`, an order's or return's on `events/order`.

Probe mode. While Leat is reachable, due items go out `concurrency` at a time, and a failed
item waits its own backoff (`backoff_delay`: full jitter, Retry-After as a floor). Once an
attempt fails because Leat is unreachable (`LeatUnavailable`, `LeatAuthError`) and no later
one succeeded, the forwarder is in probe mode: ONE item at a time, the next one no sooner
than `min(base * 2**(n-1), probe_max_s)` (jittered; Retry-After a floor, up to
`backoff_cap_s`: a proxy's answer for a day must not hold orders that long) after the n-th
failed probe. A failed probe pushes its item back by at most `probe_max_s`: an outage is
Leat's fault, not the item's, and the global probe pacing already bounds the load. So
however long the outage lasted, the queue is due again within `probe_max_s` of Leat's
return, and the first answered probe switches back to full concurrency. Items that fail while
Leat answers others (a poison order's 5xx) keep growing their own backoff, and a probe
picks the oldest due item, so one such item cannot hold the queue in probe mode.

Threads. `run()` (or `drain_once()`) owns a ThreadPoolExecutor of `concurrency` workers that
only talk to Leat (`Delivery.attempt`) and return a verdict. The loop thread owns
the one `Outbox` it opened (so no SQLite connection ever crosses threads): it claims an item
before handing it to a worker and records the verdict afterwards, and it alone keeps the
reachability state. SQLite serialises writers anyway, and keeping its fsyncs off the workers
leaves only the HTTP call on each worker's path (bench/forwarder_drain.py).
Bodies may hold personal data (e-mail): they are never logged, nor are Leat's messages.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from jsonschema import ValidationError

from appliance import commands_durable, contract
from appliance.delivery import Delivery, TokenSettings, Verdict
from appliance.errors import BusError, OutboxError
from appliance.leat.client import LeatClient
from appliance.outbox import Outbox
from appliance.outbox_items import Item, Kind, State, backoff_delay
from appliance.pipeline import ScanHandler

log = logging.getLogger(__name__)

SCHEMA: Final = "leat-scanner/events/order/1"
IDLE_POLL_S: Final = 30.0  # longest sleep with nothing scheduled (also catches CLI retries)
STOP_POLL_S: Final = 0.25  # how often a wait on `wake` looks at `stop`
MIN_WAIT_S: Final = 0.05
ANNOUNCE_RETRY_S: Final = 1.0  # how often held outcome events are tried again
WAIT_BEAT_S: Final = 1.0  # the loop beats this often while it waits for Leat's answers


class Forwarder:
    """Sends due outbox items to Leat with bounded concurrency and a one-at-a-time probe."""

    def __init__(
        self,
        outbox_path: Path,
        client: LeatClient,
        publish: Callable[..., None],
        *,
        device_id: str,
        shop_uuid: str | None,
        concurrency: int = 4,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 300.0,
        probe_max_s: float = 5.0,
        token: TokenSettings | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        wake: threading.Event | None = None,
        heartbeat: Callable[[], None] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.outbox_path = Path(outbox_path)
        self._delivery = Delivery(client, shop_uuid=shop_uuid, token=token)
        self._publish = publish
        self.device_id = device_id
        self.concurrency = concurrency
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.probe_max_s = probe_max_s
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._wake = wake
        self.heartbeat = heartbeat or _nothing  # "still making progress": the daemon's watchdog
        # Loop-thread state (workers only return verdicts).
        self._reachable: bool | None = None
        self._failures = 0  # consecutive unreachable outcomes
        self._probe_at = 0.0
        self._auth_logged = False
        self._held: dict[int, str] = {}  # item id -> why Leat's answer was not understood
        # final outcomes the bus could not queue (its queue full: MQTT away a long time while
        # Leat took orders); sent again before anything more is delivered, so none is lost
        self._unannounced: deque[tuple[str, dict[str, Any]]] = deque()
        self._alert: str | None = None  # read by other threads: replaced, never mutated

    # ------------------------------------------------------------------------------ public

    @property
    def reachable(self) -> bool | None:
        """Whether Leat answered the last attempt (None before the first one)."""
        return self._reachable

    @property
    def alert(self) -> str | None:
        """A problem that needs a person, or None: orders held because Leat's answer about
        them was not understood (they are retried with backoff, never given up)."""
        return self._alert

    @property
    def probing(self) -> bool:
        """True while Leat is unreachable and only one probe at a time is sent."""
        return self._reachable is False

    def run(self, stop: threading.Event) -> None:
        """Forward until `stop` is set: recover, send what is due, sleep until the next due."""
        with self._outbox() as outbox, self._pool() as pool:
            recovered = outbox.recover()
            if recovered:
                log.info("forwarder: %d interrupted item(s) will be looked up first", recovered)
            while not stop.is_set():
                self.heartbeat()
                if self._wake is not None:
                    self._wake.clear()  # before reading the queue: no lost wake-ups
                attempted = 0
                try:
                    attempted = self._pass(outbox, pool, stop)
                    delay = 0.0 if attempted else self._idle_delay(outbox)
                except Exception:  # top of a thread loop: log and keep going
                    log.exception("forwarder pass failed")
                    delay = IDLE_POLL_S / 6
                if delay > 0:
                    self._sleep(stop, delay)

    def claim_url(self, item: Item) -> str | None:
        """The claim URL an order without a customer gets; None when none can be made.

        It is the same URL whenever it is asked for (signed with the item's `created_at`), so
        the request handler can put it in its response and the order event repeats it.
        Thread-safe: it reads only settings and `item`.
        """
        return self._delivery.claim_url(item)

    def drain_once(self) -> int:
        """Send everything due now (each item at most once) and wait; how many were attempted."""
        with self._outbox() as outbox, self._pool() as pool:
            return self._pass(outbox, pool, None)

    # ------------------------------------------------------------------------- the loop

    def _pass(self, outbox: Outbox, pool: ThreadPoolExecutor, stop: threading.Event | None) -> int:
        """One sweep over the due items (each at most once); how many were attempted.

        After each completion the freed slot is refilled before the verdict is written, so
        a worker never waits for SQLite; reachability is noted first, so the refill already
        knows whether to probe.
        """
        seen: set[int] = set()
        requeued = 0  # attempted items that may be due again (excluded from new fetches)
        queue: deque[int] = deque()
        in_flight: dict[Future[Verdict], tuple[Item, bool]] = {}
        batch = max(64, 16 * self.concurrency)
        exhausted = False

        def fill() -> None:
            nonlocal exhausted
            while stop is None or not stop.is_set():
                if not self._announce_held():
                    return  # no delivery whose outcome could not be told
                probe = self.probing
                if len(in_flight) >= (1 if probe else self.concurrency):
                    return
                if probe and (in_flight or self._clock() < self._probe_at):
                    return
                if not queue:
                    if exhausted:
                        return
                    due = outbox.due(limit=batch + requeued)
                    queue.extend([i.id for i in due if i.id not in seen][:batch])
                    if not queue:
                        exhausted = True
                        return
                item_id = queue.popleft()
                seen.add(item_id)
                item = outbox.claim(item_id)
                if item is not None:  # else taken, dropped or made dead meanwhile
                    in_flight[pool.submit(self._delivery.attempt, item)] = (item, probe)

        count = 0
        try:
            fill()
            while in_flight:
                # beat while a call is out too: each is bounded (leat/http.py), and the
                # watchdog must not take a slow answer for a stalled loop
                done, _ = wait(in_flight, timeout=WAIT_BEAT_S, return_when=FIRST_COMPLETED)
                self.heartbeat()
                if not done:
                    continue
                finished = []
                for future in done:
                    item, probe = in_flight.pop(future)
                    verdict = future.result()
                    self._note(verdict)
                    finished.append((item, probe, verdict))
                    count += 1
                    requeued += verdict.state is State.PENDING
                fill()
                for item, probe, verdict in finished:
                    self._record(outbox, item, probe, verdict)
                exhausted = False  # a delivered order may have made its return due
                fill()
            return count
        finally:
            for future, (item, probe) in in_flight.items():  # only after an error above
                verdict = future.result()
                self._note(verdict)
                self._record(outbox, item, probe, verdict)

    def _note(self, verdict: Verdict) -> None:
        """Update reachability and the probe schedule from one attempt's verdict."""
        if verdict.leat is True:
            if self._reachable is False:
                log.info("Leat is reachable again; forwarding at full speed")
            self._reachable = True
            self._failures = 0
            self._auth_logged = False
        elif verdict.leat is False:
            if self._reachable is not False:
                log.warning("Leat is unreachable; probing with one order at a time")
            self._reachable = False
            self._failures += 1
            exponent = min(self._failures - 1, 60)
            pause = min(self.probe_max_s, self.backoff_base_s * 2.0**exponent)
            pause *= 0.5 + self._rng.random() / 2
            after = verdict.retry_after
            if after is not None and math.isfinite(after):
                pause = max(pause, min(after, self.backoff_cap_s))
            self._probe_at = self._clock() + pause

    def _idle_delay(self, outbox: Outbox) -> float:
        """Seconds until something could be sent: the next due item or probe, capped."""
        if self._unannounced:
            return ANNOUNCE_RETRY_S
        now = self._clock()
        if outbox.due(limit=1):  # held back by probe pacing (or taken by someone else)
            return max(self._probe_at - now if self.probing else 0.0, MIN_WAIT_S)
        row = outbox.connection.execute(  # read-only: the next scheduled attempt
            "SELECT min(next_attempt_at) FROM outbox WHERE state = 'pending' "
            "AND next_attempt_at > ?",
            (now,),
        ).fetchone()
        delay = IDLE_POLL_S
        if row is not None and row[0] is not None:
            delay = min(delay, float(row[0]) - now)
        if self.probing:
            delay = max(delay, self._probe_at - now)
        return max(delay, MIN_WAIT_S)

    def _sleep(self, stop: threading.Event, delay: float) -> None:
        """Wait `delay` s, or less when `stop` or `wake` is set."""
        deadline = time.monotonic() + delay
        while not stop.is_set():
            self.heartbeat()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self._wake is None:
                stop.wait(min(remaining, STOP_POLL_S))
            elif self._wake.wait(min(remaining, STOP_POLL_S)):
                return

    # ------------------------------------------------------------------------- recording

    def _record(self, outbox: Outbox, item: Item, probe: bool, verdict: Verdict) -> None:
        """Store a worker's verdict (loop thread) and announce a final one."""
        self._hold(item, verdict)
        try:
            if verdict.state is State.DELIVERED:
                result = verdict.result or {}
                done = outbox.mark_delivered(item.id, result)
                log.info("%s %d delivered", item.kind, item.id)
                if item.kind is Kind.COMMAND:
                    self._announce_command(done, result.get("data"), None)
                else:
                    self._announce(done, "delivered", result, None)
            elif verdict.state is State.DEAD:
                done = outbox.mark_dead(item.id, code=verdict.code, message=verdict.message)
                log.warning("%s %d is dead (code %s)", item.kind, item.id, verdict.code)
                error = {"code": verdict.code, "message": verdict.message}
                if item.kind is Kind.COMMAND:
                    failed: dict[str, Any] = {"code": verdict.reason, "message": verdict.message}
                    if verdict.code is not None:
                        failed["leat_code"] = verdict.code
                    self._announce_command(done, None, failed)
                else:
                    self._announce(done, "dead", {}, error)
            else:
                self._retry(outbox, item, probe, verdict)
        except OutboxError:  # left SENDING: recover() makes it ambiguous after a restart
            log.exception("could not record the outcome of %s %d", item.kind, item.id)

    def _hold(self, item: Item, verdict: Verdict) -> None:
        """Keep `alert` in step: which items wait because Leat's answer was not understood.

        An item leaves the set once Leat gives an answer we understand (or it is final); an
        outage in between changes nothing. ERROR once when the first item is held.
        """
        if verdict.unexplained:
            if not self._held:
                log.error(
                    "%s %d kept pending: %s; it is retried, never given up, until Leat's "
                    "answer is understood (see docs/leat-assumptions.md)",
                    item.kind,
                    item.id,
                    verdict.message,
                )
            elif item.id not in self._held:
                log.warning("%s %d kept pending too: %s", item.kind, item.id, verdict.message)
            self._held[item.id] = verdict.message
        elif (verdict.state is not State.PENDING or verdict.leat is True) and (
            self._held.pop(item.id, None) is not None and not self._held
        ):
            log.info("Leat's answers are understood again; no order is held")
        if not self._held:
            self._alert = None
            return
        reason = self._held.get(item.id) or next(iter(self._held.values()))
        self._alert = f"{len(self._held)} item(s) held, never given up: {reason}"

    def _retry(self, outbox: Outbox, item: Item, probe: bool, verdict: Verdict) -> None:
        """Back to PENDING: its own backoff, or at most probe_max_s after a failed probe."""
        if verdict.auth and not self._auth_logged:
            self._auth_logged = True
            log.error(
                "Leat refused our credentials; orders are kept until fixed: %s", verdict.message
            )
        after = verdict.retry_after
        delay = self._backoff(item.attempts, after)
        if probe:
            delay = min(delay, self.probe_max_s)
            if after is not None and math.isfinite(after):
                delay = max(delay, min(after, self.backoff_cap_s))
        outbox.mark_retry(
            item.id, delay_s=delay, error=verdict.message, ambiguous=verdict.ambiguous
        )
        log.info(
            "%s %d: attempt %d failed (%s), next in %.1f s",
            item.kind,
            item.id,
            item.attempts,
            "ambiguous" if verdict.ambiguous else "not sent",
            delay,
        )

    def _announce(
        self,
        item: Item,
        status: str,
        result: Mapping[str, Any],
        error: Mapping[str, Any] | None,
    ) -> None:
        """Publish `events/order`; a bus failure is logged, the outbox state stands."""
        payload = {
            "schema": SCHEMA,
            "event_id": str(uuid.uuid4()),
            "device_id": self.device_id,
            "timestamp": ScanHandler.iso(self._clock()),
            "kind": str(item.kind),
            "external_identifier": item.external_identifier,
            "transaction": item.transaction,
            "status": status,
            "points": _int_or_none(result.get("points")),
            "new_balance": _int_or_none(result.get("new_balance")),
            "leat_uuid": _str_or_none(result.get("leat_uuid")),
            "claim_url": _str_or_none(result.get("claim_url")),
            "error": None if error is None else dict(error),
        }
        try:
            contract.validate("order", payload)
        except ValidationError as exc:
            log.error(
                "order event for %s %d breaks the contract: %s", item.kind, item.id, exc.message
            )
            return
        self._emit("order", payload)

    def _announce_command(
        self, item: Item, data: object, error: Mapping[str, Any] | None
    ) -> None:
        """Publish a command's final outcome on `events/command`; a bus failure is logged."""
        verb = item.body.get("verb")
        payload = {
            "schema": commands_durable.SCHEMA,
            "event_id": str(uuid.uuid4()),
            "device_id": self.device_id,
            "timestamp": ScanHandler.iso(self._clock()),
            "request_id": item.external_identifier,
            "verb": verb if isinstance(verb, str) else "",
            "transaction": item.transaction,
            "status": "ok" if error is None else "failed",
            "data": dict(data) if isinstance(data, Mapping) else None,
            "error": None if error is None else dict(error),
        }
        try:
            contract.validate("command_event", payload)
        except ValidationError as exc:
            log.error("command event for %d breaks the contract: %s", item.id, exc.message)
            return
        self._emit("command", payload)

    def _emit(self, name: str, payload: dict[str, Any]) -> None:
        """Publish an outcome event, or hold it (the bus's queue is full) until it can be."""
        if self._announce_held():
            try:
                self._publish(name, payload)
                return
            except BusError as exc:
                log.warning("events/%s not queued (%s); delivering to Leat pauses until the "
                            "held outcomes are published", name, exc)
        self._unannounced.append((name, payload))

    def _announce_held(self) -> bool:
        """Publish the held outcome events in order; True when none is left."""
        while self._unannounced:
            name, payload = self._unannounced[0]
            try:
                self._publish(name, payload)
            except BusError:
                return False
            self._unannounced.popleft()
            if not self._unannounced:
                log.info("forwarder: the held outcome events are published; delivering again")
        return True

    # --------------------------------------------------------------------------- plumbing

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        return backoff_delay(
            attempts,
            base_s=self.backoff_base_s,
            cap_s=self.backoff_cap_s,
            rng=self._rng,
            retry_after=retry_after,
        )

    @contextmanager
    def _outbox(self) -> Iterator[Outbox]:
        """The loop thread's own Outbox."""
        outbox = Outbox(self.outbox_path, clock=self._clock)
        try:
            yield outbox
        finally:
            outbox.close()

    @contextmanager
    def _pool(self) -> Iterator[ThreadPoolExecutor]:
        """The worker threads (Leat calls only)."""
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="forwarder") as pool:
            yield pool


def _nothing() -> None:
    """The default heartbeat."""


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


__all__ = ["SCHEMA", "Forwarder"]
