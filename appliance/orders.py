"""POS requests over MQTT: `request/order.create` and `request/order.return`.

Each request is validated (JSON, its contract schema, Leat's amount rules), stored durably in
the outbox, and only then answered `ok` (the SQLite commit is fsync'd first), so an `ok`
means the order is safe on the device whatever happens next. A bad request gets an `error`
reply naming the problem, and nothing is stored. The same request again gets the same reply
(`duplicate: true`) and no second order; a different body under the same external_identifier
is a `conflict`.

Runs on paho's network thread; each thread has its own Outbox (SQLite connection).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from jsonschema import ValidationError
from jsonschema.exceptions import best_match

from appliance import contract
from appliance.bus import Message
from appliance.errors import OutboxError
from appliance.outbox import Item, Kind, Outbox, OutboxConflict, OutboxFull
from appliance.outbox_guard import OutboxDamaged

log = logging.getLogger(__name__)

RESPONSE_SCHEMA = "leat-scanner/response/1"
MAX_REQUEST_BYTES = 256 * 1024
VERBS: Mapping[str, tuple[str, Kind]] = {
    "order.create": ("order_request", Kind.ORDER),
    "order.return": ("return_request", Kind.RETURN),
}

Reply = Callable[[str, Mapping[str, Any], bytes | None], None]
"""Publishes a response: (absolute topic, payload, correlation data)."""


class RequestError(Exception):
    """A request we refuse; `code` is the contract's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class OrderRequests:
    """Validates, stores and answers POS order requests."""

    def __init__(
        self,
        outbox_path: Path,
        reply: Reply,
        *,
        base_topic: str,
        shop_uuid: str | None,
        wake: threading.Event | None = None,
        claim_url: Callable[[Item], str | None] | None = None,
    ) -> None:
        self._path = outbox_path
        self._reply = reply
        self._base = base_topic
        self._shop_uuid = shop_uuid
        self._wake = wake
        self._claim_url = claim_url
        self._local = threading.local()

    def _outbox(self) -> Outbox:
        outbox: Outbox | None = getattr(self._local, "outbox", None)
        if outbox is None:
            outbox = self._local.outbox = Outbox(self._path)
        return outbox

    def on_message(self, message: Message) -> None:
        """Bus handler for `request/+`: answer on the response topic."""
        verb = message.topic.rsplit("/", 1)[-1]
        response = self.handle(verb, message.payload)
        topic = message.response_topic or f"{self._base}/response/{verb}"
        if any(c in topic for c in "#+\0"):
            log.warning("request %s named an invalid response topic; using the default", verb)
            topic = f"{self._base}/response/{verb}"
        self._reply(topic, response, message.correlation_data)

    def handle(self, verb: str, payload: bytes) -> dict[str, Any]:
        """Process one request payload; returns the response (never raises)."""
        transaction: str | None = None
        try:
            if verb not in VERBS:
                raise RequestError("invalid_request", f"unknown request {verb!r}")
            if len(payload) > MAX_REQUEST_BYTES:
                raise RequestError(
                    "invalid_request",
                    f"payload too large ({len(payload)} > {MAX_REQUEST_BYTES} bytes)",
                )
            request = _parse(payload)
            if isinstance(request.get("transaction"), str):
                transaction = request["transaction"][:128]
            schema_name, kind = VERBS[verb]
            _check_schema(schema_name, request)
            item, created = self._store(kind, request)
        except RequestError as exc:
            log.info("request %s refused: %s (%s)", verb, exc.code, exc)
            return _response(transaction, error={"code": exc.code, "message": str(exc)})
        except Exception:  # a handler must answer, whatever happened
            log.exception("request %s failed", verb)
            return _response(transaction, error={"code": "internal", "message": "internal error"})
        if self._wake is not None:
            self._wake.set()
        log.info("%s %s stored (outbox id %d%s)", kind.value, verb, item.id,
                 "" if created else ", duplicate")
        return _response(transaction, data={
            "outbox_id": item.id,
            "kind": item.kind.value,
            "external_identifier": item.external_identifier,
            "state": item.state.value,
            "duplicate": not created,
            "claim_url": self._claim(item),
        })

    def _store(self, kind: Kind, request: Mapping[str, Any]) -> tuple[Item, bool]:
        try:
            if kind is Kind.ORDER:
                order = dict(request["order"])
                check_amounts(order)
                customer = request.get("customer") or {}
                if self._shop_uuid is not None:
                    order["business_profile"] = {"uuid": self._shop_uuid}
                if "contact_uuid" in customer:
                    order["contact"] = {"uuid": customer["contact_uuid"]}
                enqueued = self._outbox().enqueue(
                    kind, order["external_identifier"], order,
                    customer_identifier=customer.get("identifier"),
                    transaction=request.get("transaction"),
                )
            else:
                body = request["return"]
                enqueued = self._outbox().enqueue(
                    kind, body["external_identifier"], body,
                    order_external_identifier=body["order"]["external_identifier"],
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
        return enqueued.item, enqueued.created

    def _claim(self, item: Item) -> str | None:
        anonymous = (
            item.kind is Kind.ORDER
            and item.customer_identifier is None
            and "contact" not in item.body
        )
        if not anonymous or self._claim_url is None:
            return None
        return self._claim_url(item)


def _parse(payload: bytes) -> dict[str, Any]:
    try:
        request = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RequestError("invalid_json", f"not UTF-8 JSON: {exc}") from None
    if not isinstance(request, dict):
        raise RequestError("invalid_json", "the payload must be a JSON object")
    return request


def _check_schema(name: str, request: Mapping[str, Any]) -> None:
    try:
        contract.validate(name, request)
    except ValidationError as exc:
        error = best_match([exc]) or exc
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise RequestError("invalid_request", f"{where}: {error.message}") from None


def check_amounts(order: Mapping[str, Any]) -> None:
    """Leat's amount rules (leat-api.md §7.1); raises RequestError naming the first mismatch."""
    seen: set[str] = set()
    lines_total = 0
    for index, line in enumerate(order["line_items"]):
        lines_total += _check_line(line, f"order/line_items/{index}", seen)
        for sub_index, sub in enumerate(line.get("sub_line_items", [])):
            lines_total += _check_line(
                sub, f"order/line_items/{index}/sub_line_items/{sub_index}", seen
            )
    if "order_amount" in order and order["order_amount"] != lines_total:
        raise RequestError(
            "amounts_inconsistent",
            f"order/order_amount is {order['order_amount']} but the line and sub-line totals "
            f"add up to {lines_total}",
        )
    order_discounts = sum(
        d["amount"] for d in order.get("applied_discounts", []) if d["applied_to"] == "ORDER"
    )
    charges = sum(c["total_amount"] for c in order.get("charges", []))
    expected = lines_total - order_discounts + charges
    if order["total_order_amount"] != expected:
        raise RequestError(
            "amounts_inconsistent",
            f"order/total_order_amount is {order['total_order_amount']} but lines {lines_total} "
            f"- order discounts {order_discounts} + charges {charges} = {expected}",
        )


def _check_line(line: Mapping[str, Any], where: str, seen: set[str]) -> int:
    ident = line["external_identifier"]
    if ident in seen:
        raise RequestError("invalid_request", f"{where}: external_identifier {ident!r} repeated")
    seen.add(ident)
    expected = line["price"] * line["quantity"] - line.get("discount_amount", 0)
    if line["total_amount"] != expected:
        raise RequestError(
            "amounts_inconsistent",
            f"{where}/total_amount is {line['total_amount']} but price {line['price']} x "
            f"quantity {line['quantity']} - discount {line.get('discount_amount', 0)} = {expected}",
        )
    return int(line["total_amount"])


def _response(
    transaction: str | None,
    *,
    data: dict[str, Any] | None = None,
    error: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "schema": RESPONSE_SCHEMA,
        "status": "error" if error is not None else "ok",
        "data": data,
        "error": error,
        "transaction": transaction,
    }
