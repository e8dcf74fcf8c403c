"""POS requests over MQTT: `request/order.create` and `request/order.return`.

Each request is validated (JSON, its contract schema, Leat's line amounts), stored durably in
the outbox, and only then answered `ok` (the SQLite commit is fsync'd first), so an `ok`
means the order is safe on the device whatever happens next. A bad request gets an `error`
reply naming the problem (`ERRORS`), and nothing is stored. The same request again gets the
same reply (`duplicate: true`) and no second order; a different body under the same
external_identifier is a `conflict`.

Threads: `on_message` runs on paho's network thread and does only what costs nothing (the
reply topic, the size before any decoding) before queueing the request for one of this
service's two worker threads (`lanes.py`; `MqttBus.serve` starts and stops them): orders and
returns on one, commands (which may wait seconds for Leat) on the other, so an order never
waits behind a lookup. When `backlog` requests already wait in its lane, it answers `busy`
at once. paho acknowledges a QoS 1 request when it arrives, so every
request is answered or refused, never dropped: `stop()` answers what is queued. (paho's
manual acks would let the broker redeliver instead, and would redeliver forever a request
that kills the process.) Each worker has its own Outbox (SQLite connection).
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from jsonschema import ValidationError

from appliance import contract
from appliance.bus import Message
from appliance.errors import OutboxDamaged, OutboxError
from appliance.outbox import Outbox
from appliance.outbox_items import Item, Kind, OutboxConflict, OutboxFull
from appliance.pos.amounts import check_amounts
from appliance.pos.commands import VERBS as COMMANDS
from appliance.pos.errors import RequestError, clip
from appliance.pos.lanes import Lane
from appliance.pos.returns import check_return

if TYPE_CHECKING:
    from appliance.pos.runner import Commands  # imports httpx: only with Leat

log = logging.getLogger(__name__)

RESPONSE_SCHEMA = "leat-scanner/response/1"
MAX_REQUEST_BYTES: Final = 256 * 1024
MAX_DEPTH: Final = 32  # a real order nests 7 deep
MAX_TOPIC_BYTES: Final = 512
BACKLOG: Final = 8  # requests waiting for the worker; more are answered `busy`
# a request refused on paho's thread (busy, stopping, a bad response topic) has its ids read
# for the reply only when it is this small (a real one is 1-3 kB): its parse costs ~0.1 ms
ECHO_BYTES: Final = 16 * 1024
DEVICES_ROOT: Final = "leat-scanner"  # the default topic space of every device
VERBS: Mapping[str, tuple[str, Kind]] = {
    "order.create": ("order_request", Kind.ORDER),
    "order.return": ("return_request", Kind.RETURN),
}
Reply = Callable[[str, Mapping[str, Any], bytes | None], None]
"""Publishes a response: (absolute topic, payload, correlation data)."""

# A JSON string, or an unterminated one up to the end: possessive, so it never backtracks,
# and a string that does not end swallows the rest, so no later quote starts a new scan
# (a plain string pattern was quadratic on '"\\"\\"\\"...').
_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class OrderRequests:
    """Validates, stores and answers POS order requests on a worker thread of its own.

    `outbox_path` None means Leat is not configured: every request is answered
    `not_configured`. Anonymous orders (no customer) are accepted only with `claim_url`,
    which makes the Loyalty Token URL they are delivered with.
    """

    def __init__(
        self,
        outbox_path: Path | None,
        reply: Reply,
        *,
        base_topic: str,
        shop_uuid: str | None,
        wake: threading.Event | None = None,
        claim_url: Callable[[Item], str | None] | None = None,
        backlog: int = BACKLOG,
        commands: Commands | None = None,
        commands_refused: str | None = None,
        refuse: Reply | None = None,
    ) -> None:
        """`commands_refused`: why every command is refused `storage_damaged` (a damaged
        command ledger; orders are still taken). `refuse`: how a refusal at the door is
        sent (`MqttBus.publish_refusal`, QoS 0), else as `reply`."""
        self._path = outbox_path
        self._reply = reply
        self._refuse = refuse or reply
        self._base = base_topic.rstrip("/")
        parent = self._base.rpartition("/")[0] or self._base
        self._protected = (parent, DEVICES_ROOT)  # device topic spaces, ours included
        self._shop_uuid = shop_uuid
        self._wake = wake
        self._claim_url = claim_url
        self._commands = commands
        self._commands_refused = commands_refused
        # orders and returns (SQLite only) never wait behind commands (Leat calls): lanes.py
        self._orders: Lane[tuple[Message, str]] = Lane("requests", backlog, self._answer,
                                                       self._close_outbox)
        self._command_lane: Lane[tuple[Message, str]] = Lane(
            "command-requests", backlog, self._answer, self._close_outbox)
        self._lock = threading.Lock()
        self._closed = False
        self._started = False
        self._local = threading.local()  # each thread's own Outbox (SQLite connection)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the worker threads (once)."""
        with self._lock:
            if self._started or self._closed:
                return
            self._started = True
            if self._commands is not None:
                self._commands.resume()
            for lane in self._lanes:
                lane.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Answer the requests already queued, then end the workers; later ones get `busy`."""
        with self._lock:
            self._closed = True
        for lane in self._lanes:
            lane.stop(timeout)
        if self._commands is not None:
            self._commands.close()

    @property
    def busy_since(self) -> float | None:
        """`time.monotonic()` when the longest-busy worker took the request it is on; None
        while both are idle (a watchdog can call a request that takes minutes a stall)."""
        busy = [lane.busy_since for lane in self._lanes if lane.busy_since is not None]
        return min(busy, default=None)

    @property
    def waiting(self) -> int:
        """Requests queued for the workers."""
        return sum(lane.waiting for lane in self._lanes)

    @property
    def _lanes(self) -> tuple[Lane[tuple[Message, str]], ...]:
        return (self._orders, self._command_lane)

    def _close_outbox(self) -> None:
        """A worker's end: close its own Outbox."""
        outbox: Outbox | None = getattr(self._local, "outbox", None)
        if outbox is not None:
            outbox.close()

    def _answer(self, job: tuple[Message, str]) -> None:
        message, topic = job
        self._send(topic, self.handle(_verb(message.topic), message.payload, message), message)

    # ------------------------------------------------------------------ paho's thread

    def on_message(self, message: Message) -> None:
        """Bus handler for `request/+` (paho's thread): refuse at the door or queue."""
        verb = _verb(message.topic)
        if not message.payload:  # how a POS clears a retained message: not a request
            log.debug("request %s: empty message ignored", clip(verb, 64))
            return
        topic, problem = self.reply_topic(message.response_topic, verb)
        refusal = None
        if problem is not None:
            refusal = RequestError("invalid_response_topic", problem)
        elif message.retained:
            refusal = RequestError(
                "retained",
                "a retained request is never run: the broker hands it out again at every "
                "subscription, so it would run late, or twice; publish requests with retain "
                "false (and clear this one with an empty retained message)",
            )
        elif len(message.payload) > MAX_REQUEST_BYTES:
            refusal = RequestError(
                "too_large", f"{len(message.payload)} bytes; at most {MAX_REQUEST_BYTES}"
            )
        else:
            with self._lock:
                closed = self._closed
            lane = self._command_lane if verb in COMMANDS else self._orders
            if not closed and lane.offer((message, topic)):
                return
            refusal = RequestError(
                "busy",
                "the device is " + ("stopping" if closed else "answering other requests")
                + "; send it again shortly",
            )
        log.info("request %s refused: %s (%s)", _shown(verb), refusal.code, refusal)
        transaction, echo = _ids(verb, message.payload, ECHO_BYTES)
        self._send(topic, {**_response(transaction, error=refusal), **echo}, message,
                   self._refuse)

    def reply_topic(self, requested: str | None, verb: str) -> tuple[str, str | None]:
        """Where to answer, and why the requested response topic is refused (None if not).

        No response topic (MQTT 3.1.1): `<base>/response/<verb>`. A POS-chosen topic
        elsewhere is honoured, as MQTT v5 intends; never a device's topic space
        (`leat-scanner/...` and the parent of our base topic) other than our own
        `response/` subtree, never wildcards, NUL, `$` topics, empty or over-long topics.
        """
        default = f"{self._base}/response/{verb}"
        if requested is None:
            return default, None
        problem = None
        if not requested:
            problem = "the response topic is empty"
        elif len(requested.encode("utf-8", "replace")) > MAX_TOPIC_BYTES:
            problem = f"the response topic is longer than {MAX_TOPIC_BYTES} bytes"
        elif any(c in requested for c in "#+\0"):
            problem = "the response topic holds a wildcard or NUL"
        elif requested.startswith("$"):
            problem = "the response topic is a broker topic ($...)"
        elif not _under(requested, f"{self._base}/response") and any(
            _under(requested, root) for root in self._protected
        ):
            problem = (
                "the response topic is in a device's topic space; use your own topic or "
                f"{self._base}/response/..."
            )
        return (default, problem) if problem else (requested, None)

    def _send(self, topic: str, response: Mapping[str, Any], message: Message,
              send: Reply | None = None) -> None:
        try:
            (send or self._reply)(topic, response, message.correlation_data)
        except Exception:  # the bus refused (queue full): log it, keep serving
            log.exception("requests: could not publish the reply to %s", _shown(topic))

    # ------------------------------------------------------------------ the work

    def handle(self, verb: str, payload: bytes, message: Message | None = None
               ) -> dict[str, Any]:
        """Process one request payload; returns the response (never raises). `message`
        (its arrival and MQTT v5 expiry) times a command."""
        transaction: str | None = None
        # the request_id echoed: a command's always, an order's when it has one (`_ids_of`)
        echo: dict[str, Any] = {"request_id": None} if verb in COMMANDS else {}
        try:
            if len(payload) > MAX_REQUEST_BYTES:
                raise RequestError(
                    "too_large", f"{len(payload)} bytes; at most {MAX_REQUEST_BYTES}"
                )
            if self._path is None or (verb not in COMMANDS and verb not in VERBS):
                transaction, echo = _ids(verb, payload)
                if self._path is None:
                    raise RequestError("not_configured", "Leat is not configured on this device")
                raise RequestError("invalid_request", f"unknown request {clip(verb, 64)!r}")
            if verb in COMMANDS:
                return self._command(verb, payload, message)
            request = parse(payload)
            transaction, echo = _ids_of(verb, request)
            schema_name, kind = VERBS[verb]
            if kind is Kind.ORDER:
                _refuse_nested_sub_lines(request)
            _check_schema(schema_name, request)
            item, created, warnings = self._store(kind, request)
        except RequestError as exc:
            log.info("request %s refused: %s%s", _shown(verb), exc.code, _where(exc))
            return {**_response(transaction, error=exc), **echo}
        except Exception:  # a handler must answer, whatever happened
            log.exception("request %s failed", _shown(verb))
            return {**_response(transaction, error=RequestError("internal", "internal error")),
                    **echo}
        if self._wake is not None:
            self._wake.set()
        log.info("%s %s stored (outbox id %d%s); %d warning(s)", kind.value, _shown(verb), item.id,
                 "" if created else ", duplicate", len(warnings))
        return {**_response(transaction, data={
            "outbox_id": item.id,
            "kind": item.kind.value,
            "external_identifier": item.external_identifier,
            "state": item.state.value,
            "duplicate": not created,
            "claim_url": self._claim(item),
            "warnings": warnings,
        }), **echo}

    def _command(self, verb: str, payload: bytes, message: Message | None) -> dict[str, Any]:
        """A command (`commands.VERBS`): validated here, run by `runner.Commands`."""
        try:
            request = parse(payload)
        except RequestError as exc:
            log.info("command %s refused: %s%s", _shown(verb), exc.code, _where(exc))
            return {**_response(None, error=exc), "request_id": None}
        transaction, echo = _ids_of(verb, request)
        try:
            if self._commands_refused is not None:
                raise RequestError(
                    "storage_damaged",
                    f"the command ledger is damaged ({self._commands_refused}); commands are "
                    "refused until a technician moves the commands.sqlite3* files aside "
                    "(orders are still taken)",
                )
            if self._commands is None:
                raise RequestError("not_configured", "commands need Leat configured")
            _check_schema(COMMANDS[verb].schema, request)
        except RequestError as exc:
            log.info("command %s refused: %s%s", _shown(verb), exc.code, _where(exc))
            return {**_response(transaction, error=exc), **echo}
        received = message.received_at if message is not None else time.monotonic()
        return self._commands.handle(
            verb, request, received_at=received,
            expiry_s=message.expiry_s if message is not None else None,
            resumed=message is not None and message.resumed,
        )

    def _open(self) -> Outbox:
        outbox: Outbox | None = getattr(self._local, "outbox", None)
        if outbox is None:
            assert self._path is not None
            outbox = self._local.outbox = Outbox(self._path)
        return outbox

    def _store(self, kind: Kind, request: Mapping[str, Any]) -> tuple[Item, bool, list[str]]:
        warnings: list[str] = []
        try:
            if kind is Kind.ORDER:
                order = dict(request["order"])
                customer = request.get("customer") or {}
                if not customer:
                    self._check_anonymous(order)
                warnings = check_amounts(order)
                if self._shop_uuid is not None:
                    order["business_profile"] = {"uuid": self._shop_uuid}
                if "contact_uuid" in customer:
                    order["contact"] = {"uuid": customer["contact_uuid"]}
                enqueued = self._open().enqueue(
                    kind, order["external_identifier"], order,
                    customer_identifier=customer.get("identifier"),
                    transaction=request.get("transaction"),
                )
            else:
                body = request["return"]
                outbox = self._open()
                order_id = body["order"]["external_identifier"]
                if outbox.find(Kind.RETURN, body["external_identifier"]) is None:  # else the
                    # same return again (a duplicate) or another body (a conflict): enqueue says
                    check_return(body, outbox.find(Kind.ORDER, order_id),
                                 outbox.returns_of(order_id))
                enqueued = outbox.enqueue(
                    kind, body["external_identifier"], body,
                    order_external_identifier=order_id,
                    transaction=request.get("transaction"),
                )
        except OutboxConflict as exc:
            raise RequestError("conflict", str(exc)) from exc
        except OutboxFull as exc:
            raise RequestError("outbox_full", str(exc)) from exc
        except OutboxDamaged as exc:  # nothing is acked into a damaged store
            raise RequestError("storage_damaged", str(exc)) from exc
        except OutboxError as exc:
            raise RequestError("internal", f"could not store the request: {exc}") from exc
        return enqueued.item, enqueued.created, warnings

    def _check_anonymous(self, order: Mapping[str, Any]) -> None:
        """An order without a customer earns its points through a Loyalty Token claim URL:
        refuse what the forwarder could never deliver."""
        if self._claim_url is None:
            raise RequestError(
                "not_configured",
                "an order without a customer needs the Loyalty Token settings on the device "
                "([leat] portal_url and the account secret); send a customer",
            )
        if order["total_order_amount"] <= 0:
            raise RequestError(
                "invalid_request",
                "order/total_order_amount: an order without a customer needs a positive "
                "total for its Loyalty Token",
            )

    def _claim(self, item: Item) -> str | None:
        anonymous = (
            item.kind is Kind.ORDER
            and item.customer_identifier is None
            and "contact" not in item.body
        )
        if not anonymous or self._claim_url is None:
            return None
        return self._claim_url(item)


def parse(payload: bytes) -> dict[str, Any]:
    """A request payload as a JSON object; RequestError (`invalid_json`, `too_deep`) if not.

    The nesting is measured in linear time before `json.loads` recurses, and every string
    must be valid Unicode (JSON allows a lone surrogate escape such as "\\ud800", which no
    reply or database could then encode), and every number finite.
    """
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError("invalid_json", f"not UTF-8: {exc}") from None
    depth = nesting(text)
    if depth > MAX_DEPTH:
        raise RequestError("too_deep", f"nested {depth} deep; at most {MAX_DEPTH}")
    try:
        request = json.loads(text, parse_constant=_not_a_number, parse_float=_finite)
    except RecursionError:  # cannot happen below MAX_DEPTH; never an `internal` error
        raise RequestError("too_deep", f"nested too deep; at most {MAX_DEPTH}") from None
    except ValueError as exc:
        raise RequestError("invalid_json", f"not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise RequestError("invalid_json", "the payload must be a JSON object")
    try:
        json.dumps(request, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(
            "invalid_json", "a string holds a lone surrogate (e.g. \\ud800): not valid Unicode"
        ) from None
    return request


def _not_a_number(name: str) -> float:
    """json.loads takes NaN and Infinity, which are not JSON, would pass every minimum and
    maximum of the schema (all comparisons with NaN are false) and could not be sent on."""
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float | int:
    """A JSON number with a fraction or exponent; a whole one (`1200.0`) as the int it is:
    every amount in the contract is an integer, and the same order with `1200.0` for `1200`
    must be the same order (not a conflict), sent to Leat as `1200`."""
    value = float(text)
    if not math.isfinite(value):  # 1e400
        raise ValueError(f"{text[:20]} is out of range")
    if value.is_integer() and abs(value) <= 2**53:  # exactly representable
        return int(value)
    return value


def nesting(text: str) -> int:
    """How deep the arrays and objects of JSON `text` nest (strings skipped); linear time."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(_STEP[c] for c in brackets), default=0)


def _transaction(request: Mapping[str, Any]) -> str | None:
    value = request.get("transaction")
    return value[:128] if isinstance(value, str) else None


def _ids(verb: str, payload: bytes, limit: int = MAX_REQUEST_BYTES
         ) -> tuple[str | None, dict[str, Any]]:
    """What a reply to a request refused before it was handled echoes: its transaction and
    request_id, as far as a payload of at most `limit` bytes can be read (`_ids_of`)."""
    try:
        request = parse(payload) if len(payload) <= limit else {}
    except RequestError:
        request = {}
    return _ids_of(verb, request)


def _ids_of(verb: str, request: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The transaction and the request_id echo of `request`: a command's reply always has
    `request_id` (null when unreadable or over 128 characters); an order's only when the
    request has one (cut to 128 characters)."""
    request_id = request.get("request_id")
    if verb in COMMANDS:
        valid = isinstance(request_id, str) and len(request_id) <= 128
        return _transaction(request), {"request_id": request_id if valid else None}
    echo = {"request_id": request_id[:128]} if isinstance(request_id, str) else {}
    return _transaction(request), echo


def _refuse_nested_sub_lines(request: Mapping[str, Any]) -> None:
    """Leat's order lines have sub-lines, and sub-lines have none (Leat's Create Order docs)."""
    order = request.get("order")
    lines = order.get("line_items") if isinstance(order, dict) else None
    for index, line in enumerate(lines if isinstance(lines, list) else []):
        subs = line.get("sub_line_items") if isinstance(line, dict) else None
        for sub_index, sub in enumerate(subs if isinstance(subs, list) else []):
            if isinstance(sub, dict) and "sub_line_items" in sub:
                raise RequestError(
                    "nested_sub_lines",
                    f"order/line_items/{index}/sub_line_items/{sub_index}/sub_line_items: "
                    "a sub-line cannot have sub-lines (Leat's orders have one level)",
                )


def _check_schema(name: str, request: Mapping[str, Any]) -> None:
    try:
        contract.validate(name, request)
    except ValidationError as exc:
        raise RequestError("invalid_request", contract.explain(exc)) from None


_PATH = re.compile(r"[\w/()]{1,80}(?=: )")  # the "where" that starts a refusal's message


def _where(refusal: RequestError) -> str:
    """Where a refusal's message says the problem is (" at order/contact"), for the log: the
    message itself may quote what the POS sent (a card number, an e-mail address)."""
    found = _PATH.match(str(refusal))
    return f" at {found.group()}" if found else ""


def _shown(text: str) -> str:
    """A topic or verb for the log: clipped, and every non-ASCII character escaped (a
    zero-width or right-to-left character must not hide in a log line)."""
    return clip(text.encode("ascii", "backslashreplace").decode("ascii"), 64)


def _under(topic: str, root: str) -> bool:
    """True when `topic` is `root` or below it (by whole topic levels)."""
    return topic == root or topic.startswith(root + "/")


def _verb(topic: str) -> str:
    return topic.rsplit("/", 1)[-1]


def _response(
    transaction: str | None,
    *,
    data: dict[str, Any] | None = None,
    error: RequestError | None = None,
) -> dict[str, Any]:
    return {
        "schema": RESPONSE_SCHEMA,
        "status": "error" if error is not None else "ok",
        "data": data,
        "error": None if error is None else {"code": error.code, "message": str(error)},
        "transaction": transaction,
    }
