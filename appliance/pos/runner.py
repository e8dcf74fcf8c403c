"""Runs POS commands by the rules of `commands.py`: idempotent by request_id (the ledger),
value-taking ones online only, within the deadline and never past their expiry, ambiguous
outcomes reconciled (in the background when it takes longer, the final outcome then
published on `events/command`), give-back ones stored in the durable outbox.

Called on the command worker thread (`intake.py`, `lanes.py`), one request at a time; Leat
calls run on a small pool so the worker can answer at the deadline while a slow call finishes.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from appliance import contract
from appliance.errors import (
    ConfigError,
    LeatAuthError,
    LeatRejected,
    LeatUnavailable,
    OutboxDamaged,
    OutboxError,
)
from appliance.outbox import Outbox
from appliance.outbox_items import Kind, OutboxConflict, OutboxFull
from appliance.pos import money, reversals, verbs
from appliance.pos.commands import VERBS, Rule
from appliance.pos.errors import RequestError, clip
from appliance.pos.ledger import Conflict, Ledger
from appliance.resolve import Resolver

if TYPE_CHECKING:
    from appliance.leat.client import LeatClient

log = logging.getLogger(__name__)

RESPONSE_SCHEMA: Final = "leat-scanner/response/1"
EVENT_SCHEMA: Final = "leat-scanner/command/1"
ENVELOPE: Final = frozenset({"request_id", "transaction", "expires_at"})
RECONCILE_DELAYS_S: Final = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)  # then give up
MAX_UNSETTLED: Final = 32  # value-taking calls reconciled at once; more are refused `offline`
NOT_APPLIED: Final = "not_applied"
CANNOT_TELL: Final = "cannot_tell"
MAX_CANDIDATES: Final = 10  # transaction uuids named in a cannot_tell outcome
HANDLERS: Final = {**verbs.HANDLERS, **money.HANDLERS}
RECONCILERS: Final = {**verbs.RECONCILERS, **money.RECONCILERS}

Publish = Callable[[str, Mapping[str, Any]], None]


class Commands:
    """The command verbs of `commands.VERBS` (the order verbs stay in `intake.py`)."""

    def __init__(
        self,
        client: LeatClient,
        ledger_path: Path,
        outbox_path: Path,
        publish_event: Publish,
        *,
        device_id: str,
        deadline_s: float = 5.0,
        wake: threading.Event | None = None,
        reconcile_delays_s: tuple[float, ...] = RECONCILE_DELAYS_S,
    ) -> None:
        self._client = client
        self._resolver = Resolver(client, shop_uuid=client.shop_uuid, deadline_s=deadline_s)
        self._ledger = Ledger(ledger_path)
        self._outbox_path = outbox_path
        self._publish = publish_event
        self._device_id = device_id
        self._deadline_s = deadline_s
        self._wake = wake
        self._delays = reconcile_delays_s
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="command")
        self._local = threading.local()
        self._stop = threading.Event()
        self._settling: list[threading.Thread] = []
        self._settling_lock = threading.Lock()

    def resume(self) -> None:
        """Settle what a previous run left unsettled (it stopped during a value-taking call,
        or while reconciling one): reconciled in the background, outcome on events/command."""
        for entry in self._ledger.unsettled():
            if VERBS[entry.verb].rule is Rule.TAKES:
                reply = _Reply(entry.request_id, entry.transaction)
                ctx = self._context(datetime.fromtimestamp(entry.started_at, UTC))
                self._settle_later(_Call(entry.verb, entry.args, reply, ctx), None)
            else:
                self._ledger.forget(entry.request_id)

    def close(self) -> None:
        """Stop reconciling (what is unsettled is resumed on the next start)."""
        self._stop.set()
        with self._settling_lock:
            settling = list(self._settling)
        for thread in settling:
            thread.join(2.0)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._ledger.flush()  # the reads' outcomes (a reconciler may still finish: kept open)
        outbox: Outbox | None = getattr(self._local, "outbox", None)
        if outbox is not None:
            outbox.close()
        # not self._resolver.close(): it would close the client the forwarder shares

    # ------------------------------------------------------------------ one request

    def handle(
        self,
        verb: str,
        request: Mapping[str, Any],
        *,
        received_at: float,
        expiry_s: float | None = None,
        resumed: bool = False,
    ) -> dict[str, Any]:
        """The response to one validated command request. `resumed`: the broker held it
        while the device was away (`bus.Message.resumed`), so one without an expiry may be
        late: a value-taking one is refused `expired`."""
        spec = VERBS[verb]
        request_id: str = request["request_id"]
        transaction = request.get("transaction")
        args = {k: v for k, v in request.items() if k not in ENVELOPE}
        reply = _Reply(request_id, transaction)
        deadline = time.monotonic() + self._deadline_s  # a later expiry allows no later answer
        if spec.rule is Rule.TAKES:
            expires = _expiry(received_at, expiry_s, request.get("expires_at"), self._deadline_s)
            deadline = min(deadline, expires)
            if not self._ledger.recorded(request_id):  # a repeat gets its recorded answer
                refused = self._refusal(resumed and expiry_s is None
                                        and request.get("expires_at") is None, expires)
                if refused is not None:
                    return reply.error(*refused)
        if spec.rule is Rule.TAKES and not self._ledger.recorded(request_id):
            try:
                self._ledger.check_space()
            except OutboxError as exc:  # OutboxFull, or the check itself failed
                return reply.error("outbox_full", f"not sent to Leat: {exc}")
        ctx = self._context(datetime.now(UTC))
        if spec.rule is Rule.GIVES_BACK:
            return self._give_back(verb, args, ctx, reply, deadline)
        try:
            if ctx.outbox().find(Kind.COMMAND, request_id) is not None:  # a give-back's
                return reply.error("conflict", _REUSED)
            # a read moves no value: nothing is written before its call (ledger.py)
            recorded = self._ledger.begin(request_id, verb, args, transaction,
                                          durable=spec.rule is not Rule.READ)
        except Conflict as exc:
            return reply.error("conflict", str(exc))
        if recorded is not None:
            if recorded.response is None:
                return reply.error("busy", "this request_id is being processed; " + (
                    "send it again shortly" if spec.rule is Rule.READ
                    else "its outcome follows on events/command"))
            return {**recorded.response, "transaction": transaction}
        call = _Call(verb, args, reply, ctx)
        future = self._pool.submit(HANDLERS[verb], ctx, args)
        response, settled = self._outcome(call, future, deadline)
        if settled is None:  # nothing happened at Leat: the same request may come again
            self._ledger.forget(request_id)
            return response
        kept = self._finish(verb, request_id, response, final=settled)
        if not settled:
            self._settle_later(call, future)
        elif not kept or _cannot_tell(response):  # followed by an event: `unknown`
            self._publish("command", self._event(verb, response))  # always, and one a
        return response  # repeat cannot get from the ledger

    def _finish(self, verb: str, request_id: str, response: Mapping[str, Any], *,
                final: bool = True) -> bool:
        """Record an outcome Leat gave; False when the ledger could not (its disk full or
        read-only). Leat acted: the POS still gets the outcome, never `internal`, and the
        ledger keeps the call `running`, so a repeat is `busy` and the next start
        reconciles it with Leat."""
        try:
            self._ledger.finish(request_id, response, final=final)
        except (sqlite3.Error, OSError, OutboxError) as exc:
            log.error("command %s %s: its outcome could not be recorded (%s); it is "
                      "reconciled at the next start", verb, clip(request_id, 64), exc)
            return False
        return True

    def _outcome(
        self, call: _Call, future: Future[dict[str, Any]], deadline: float
    ) -> tuple[dict[str, Any], bool | None]:
        """(response, True settled / False unknown / None nothing done at Leat)."""
        rule, verb, reply = VERBS[call.verb].rule, call.verb, call.reply
        try:
            return reply.ok(future.result(timeout=max(deadline - time.monotonic(), 0))), True
        except FutureTimeout:
            if future.cancel():  # still queued behind other calls: never sent, and never will
                return reply.error("offline", "the device's calls to Leat were all busy until "
                                   "the deadline; this one was not sent to Leat"), None
            if rule is Rule.READ:
                return reply.error("offline", "Leat did not answer within the deadline"), None
            return reply.unknown("Leat did not answer within the deadline"), False
        except LeatRejected as exc:
            return reply.rejected(exc), True
        except LeatUnavailable as exc:
            if rule is Rule.TAKES and exc.ambiguous:
                return self._reconcile_now(call, deadline)
            return reply.error("offline", f"Leat is not reachable: {exc}"), None
        except (LeatAuthError, ConfigError) as exc:
            return reply.error("not_configured", str(exc)), None
        except RequestError as exc:
            return reply.error(exc.code, str(exc)), None
        except Exception:
            log.exception("command %s failed", verb)
            if rule is Rule.TAKES:  # it may have reached Leat: reconcile, never resend
                return reply.unknown("the device failed during the call"), False
            return reply.error("internal", "internal error"), None

    def _reconcile_now(self, call: _Call, deadline: float) -> tuple[dict[str, Any], bool | None]:
        verb, reply = call.verb, call.reply
        future = self._pool.submit(RECONCILERS[verb], call.ctx, call.args)
        try:
            return reply.ok(future.result(timeout=max(deadline - time.monotonic(), 0))), True
        except verbs.NotApplied as exc:
            return reply.not_applied(str(exc)), True
        except verbs.CannotTell as exc:
            return reply.cannot_tell(exc), True
        except RequestError as exc:
            return reply.error(exc.code, str(exc)), True
        except LeatRejected as exc:
            return reply.rejected(exc), True
        except Exception as exc:  # cannot tell yet (offline, deadline, ...)
            log.info("command %s: outcome unknown (%s); reconciling in the background",
                     verb, type(exc).__name__)
            return reply.unknown("Leat's answer was lost and Leat cannot tell yet"), False

    # ------------------------------------------------------------------ background

    def _refusal(self, held_without_expiry: bool, expires: float) -> tuple[str, str] | None:
        """Why a new value-taking request is not run (error code and message), if it is not:
        Leat losing answers, held by the broker without an expiry (it may be late), or past
        its expiry."""
        unsettled = self._unsettled()
        if unsettled >= MAX_UNSETTLED:  # Leat is losing answers: do not add to it
            return "offline", (f"Leat's answers to {unsettled} value-taking calls were lost "
                               "and are still being reconciled; this one was not sent to "
                               "Leat: send it again once they settle (events/command)")
        if held_without_expiry:
            return "expired", ("the broker held this request while the device was away and "
                               "it has no expiry (MQTT v5 message expiry or expires_at), so it "
                               "may be late; it was not sent to Leat")
        if time.monotonic() >= expires:
            return "expired", "the request expired before it could be run; it was not sent to Leat"
        return None

    def _unsettled(self) -> int:
        """Value-taking calls being reconciled now."""
        with self._settling_lock:
            self._settling = [t for t in self._settling if t.is_alive()]
            return len(self._settling)

    def _settle_later(self, call: _Call, future: Future[dict[str, Any]] | None) -> None:
        thread = threading.Thread(
            target=self._settle, args=(call, future), name=f"reconcile-{call.verb}", daemon=True,
        )
        with self._settling_lock:
            self._settling.append(thread)
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: the ledger keeps it `running`
            self._settled(thread)
            log.error("command %s %s: cannot start its reconciliation now; it is resumed at "
                      "the next start", call.verb, clip(call.reply.request_id, 64))

    def _settled(self, thread: threading.Thread) -> None:
        """`thread` no longer counts as reconciling."""
        with self._settling_lock:
            if thread in self._settling:
                self._settling.remove(thread)

    def _settle(self, call: _Call, future: Future[dict[str, Any]] | None) -> None:
        """Find the outcome (the late answer, else reconciliation, bounded), record it and
        publish it on events/command."""
        verb, args, reply, ctx = call.verb, call.args, call.reply, call.ctx
        request_id = reply.request_id
        response = None
        if future is not None:
            try:
                response = reply.ok(future.result())  # the client's own timeouts bound it
            except LeatRejected as exc:
                response = reply.rejected(exc)
            except Exception as exc:
                log.info("command %s: no answer (%s); reconciling", verb, type(exc).__name__)
        for delay in (0.0, *self._delays):
            if response is not None or self._stop.wait(delay):
                break
            try:
                response = reply.ok(RECONCILERS[verb](ctx, args))
            except verbs.NotApplied as exc:
                response = reply.not_applied(str(exc))
            except verbs.CannotTell as exc:
                response = reply.cannot_tell(exc)
            except RequestError as exc:
                response = reply.error(exc.code, str(exc))
            except LeatRejected as exc:
                response = reply.rejected(exc)
            except Exception as exc:
                log.info("command %s: still unknown (%s)", verb, type(exc).__name__)
        self._settled(threading.current_thread())  # before its event: a POS may send again
        if response is None:
            if not self._stop.is_set():
                log.error("command %s %s: outcome still unknown; given up", verb,
                          clip(request_id, 64))
            return
        self._finish(verb, request_id, response)
        self._publish("command", self._event(verb, response))

    def _event(self, verb: str, response: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "schema": EVENT_SCHEMA,
            "event_id": str(uuid.uuid4()),
            "device_id": self._device_id,
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "request_id": response["request_id"],
            "verb": verb,
            "transaction": response["transaction"],
            "status": response["status"] if response["status"] in ("ok", "unknown")
            else "failed",
            "data": response["data"],
            "error": response["error"],
        }

    # ------------------------------------------------------------------ give back

    def _give_back(
        self, verb: str, args: dict[str, Any], ctx: verbs.Context, reply: _Reply,
        deadline: float,
    ) -> dict[str, Any]:
        if self._ledger.recorded(reply.request_id):
            return reply.error("conflict", _REUSED)
        try:
            stored = verbs.give_back_args(ctx, verb, args)
            if ctx.outbox().find(Kind.COMMAND, reply.request_id) is None:  # not a repeat
                reversals.check(self._client, verb, stored, self._pool, deadline)
            _validate_give_back(verb, stored)
            enqueued = ctx.outbox().enqueue(
                Kind.COMMAND, reply.request_id, {"verb": verb, "args": stored},
                transaction=reply.transaction,
            )
        except RequestError as exc:
            return reply.error(exc.code, str(exc))
        except LeatRejected as exc:  # reversals.check: Leat does not know it
            return reply.rejected(exc)
        except OutboxConflict as exc:
            return reply.error("conflict", str(exc))
        except OutboxFull as exc:
            return reply.error("outbox_full", str(exc))
        except OutboxDamaged as exc:
            return reply.error("storage_damaged", str(exc))
        except OutboxError as exc:
            return reply.error("internal", f"could not store the request: {exc}")
        if self._wake is not None:
            self._wake.set()
        if not enqueued.created:  # a repeat: its outcome again, if it has one
            from appliance.commands_durable import finished_event  # imports the Leat client

            event = finished_event(enqueued.item, self._device_id)
            if event is not None:
                self._publish("command", event)
        return reply.build("accepted", {
            "request_id": reply.request_id, "outbox_id": enqueued.item.id,
            "duplicate": not enqueued.created,
        }, None)

    # ------------------------------------------------------------------ helpers

    def _context(self, started_at: datetime) -> verbs.Context:
        return verbs.Context(self._client, self._resolver, self._ledger, self._outbox,
                             started_at)

    def _outbox(self) -> Outbox:
        outbox: Outbox | None = getattr(self._local, "outbox", None)
        if outbox is None:
            outbox = self._local.outbox = Outbox(self._outbox_path)
        return outbox


class _Reply:
    """Builds the responses of one command."""

    def __init__(self, request_id: str, transaction: str | None) -> None:
        self.request_id = request_id
        self.transaction = transaction

    def build(self, status: str, data: dict[str, Any] | None, error: dict[str, Any] | None
              ) -> dict[str, Any]:
        return {"schema": RESPONSE_SCHEMA, "status": status, "data": data, "error": error,
                "transaction": self.transaction, "request_id": self.request_id}

    def ok(self, data: dict[str, Any]) -> dict[str, Any]:
        return self.build("ok", data, None)

    def error(self, code: str, message: str) -> dict[str, Any]:
        return self.build("error", None, {"code": code, "message": clip(message)})

    def rejected(self, exc: LeatRejected) -> dict[str, Any]:
        return self.build("error", None, {"code": "leat_rejected", "leat_code": exc.code,
                                          "message": clip(exc.leat_message)})

    def not_applied(self, why: str) -> dict[str, Any]:
        return self.error(NOT_APPLIED, f"Leat's answer was lost; Leat shows the call did not "
                          f"happen ({why}): nothing was taken. Send it again with a new "
                          "request_id")

    def cannot_tell(self, exc: verbs.CannotTell) -> dict[str, Any]:
        named = exc.candidates[:MAX_CANDIDATES]
        unnamed = len(exc.candidates) - len(named) + exc.unnamed
        return self.build("unknown", None, {
            "code": CANNOT_TELL, "candidates": named, "message": clip(
                f"Leat's answer was lost: {exc}"
                + (f" ({unnamed} not named)" if unnamed else "") + ". Final, never resent: "
                "check the candidates in Leat; reverse one if charged twice, or pay again "
                "with a new request_id if none is this one")})

    def unknown(self, why: str) -> dict[str, Any]:
        return self.build("unknown", None, {
            "code": "unknown", "message": f"{why}: the device is finding out from Leat and "
            "publishes the outcome on events/command; do not send it again"})


@dataclass(frozen=True)
class _Call:
    """One value-taking or read call: what it asks, how it is answered, its context."""

    verb: str
    args: dict[str, Any]
    reply: _Reply
    ctx: verbs.Context


_REUSED = ("this request_id was already used for another command (a give-back and a "
           "value-taking or read command share one request_id space)")


def _cannot_tell(response: Mapping[str, Any]) -> bool:
    error = response.get("error")
    return isinstance(error, dict) and error.get("code") == CANNOT_TELL


def _expiry(received_at: float, expiry_s: float | None, expires_at: str | None,
            default_s: float) -> float:
    """When a value-taking request expires (time.monotonic()): the earliest of its MQTT v5
    message expiry and its `expires_at`; without either, the deadline after its arrival."""
    candidates = []
    if expiry_s is not None:
        candidates.append(received_at + expiry_s)
    if expires_at is not None:
        left = (_instant(expires_at) - datetime.now(UTC)).total_seconds()
        candidates.append(time.monotonic() + left)
    return min(candidates) if candidates else received_at + default_s


def _instant(text: str) -> datetime:
    """`expires_at`, which the schema checked (refused here too, should it not be one)."""
    instant = contract.date_time(text)
    if instant is None:
        raise RequestError("invalid_request", "expires_at: not an RFC 3339 date-time")
    return instant


def _validate_give_back(verb: str, args: Mapping[str, Any]) -> None:
    """What the schema cannot say about a give-back command, checked as the durable
    executor checks it before running it (`commands_durable.validate_args`)."""
    from appliance.commands_durable import validate_args  # imports the Leat client

    try:
        validate_args(verb, dict(args))
    except ValueError as exc:
        raise RequestError("invalid_request", str(exc)) from None
