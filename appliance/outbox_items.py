"""What the outbox stores, as the rest of the device sees it: an `Item` (an order, a return
or a give-back command) in its `State`, how its body is kept (canonical JSON) and how long a
failed attempt waits (`backoff_delay`). The queue itself is outbox.py.
"""

from __future__ import annotations

import json
import math
import random
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from appliance.errors import OutboxError


class State(StrEnum):
    """Where an item is in its life."""

    PENDING = "pending"
    SENDING = "sending"
    DELIVERED = "delivered"
    DEAD = "dead"


class Kind(StrEnum):
    """What an item is forwarded as."""

    ORDER = "order"
    RETURN = "return"
    COMMAND = "command"  # a give-back POS command: external_identifier is its request_id


class OutboxFull(OutboxError):
    """The outbox refused a new item: too many waiting, or the disk is (nearly) full."""


class OutboxConflict(OutboxError):
    """The same (kind, external_identifier) was enqueued before with different content."""


@dataclass(frozen=True, slots=True)
class Item:
    """One stored order or return, as read back from the file."""

    id: int
    kind: Kind
    external_identifier: str
    order_external_identifier: str | None
    body: dict[str, Any]
    customer_identifier: str | None
    transaction: str | None
    state: State
    attempts: int
    next_attempt_at: float
    created_at: float
    updated_at: float
    ambiguous: bool
    result: dict[str, Any] | None
    error_code: int | None
    error_message: str | None

    @property
    def anonymous(self) -> bool:
        """An order without a customer: never sent to Leat (a Loyalty Token claim URL
        instead, delivery.py), so Leat has nothing to return of it."""
        contact = self.body.get("contact")
        has_contact = isinstance(contact, Mapping) and bool(contact.get("uuid"))
        return self.kind is Kind.ORDER and not has_contact and not self.customer_identifier


@dataclass(frozen=True)
class Enqueued:
    """What `enqueue()` did: the stored item, and whether this call created it."""

    item: Item
    created: bool


def canonical_json(value: Mapping[str, Any]) -> str:
    """`value` as canonical JSON text (sorted keys, no spaces); OutboxError if not JSON."""
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise OutboxError(f"not storable as JSON: {exc}") from exc


def backoff_delay(
    attempt: int,
    *,
    base_s: float = 1.0,
    cap_s: float = 300.0,
    rng: random.Random | None = None,
    retry_after: float | None = None,
) -> float:
    """Seconds to wait before attempt `attempt + 1`: full jitter, Retry-After as a floor
    (up to `cap_s`: a proxy's "Retry-After: 86400" must not hold orders for a day)."""
    exponent = min(max(attempt, 1) - 1, 62)  # 2**62 s is past any cap; avoids float overflow
    ceiling = min(cap_s, base_s * 2.0**exponent)
    delay = (rng if rng is not None else _RNG).uniform(0.0, max(ceiling, 0.0))
    if retry_after is not None and math.isfinite(retry_after):
        delay = max(delay, min(retry_after, cap_s))
    return delay


_RNG = random.Random()


def item_from_row(row: sqlite3.Row) -> Item:
    """An Item from a row; OutboxError naming the id when the row is not what we wrote."""
    item_id = row["id"]
    try:
        body = json.loads(row["body"])
        result = None if row["result"] is None else json.loads(row["result"])
        if not isinstance(body, dict) or not (result is None or isinstance(result, dict)):
            raise ValueError("body/result is not a JSON object")
        for name in ("external_identifier",):
            if not isinstance(row[name], str) or not row[name]:
                raise ValueError(f"{name} is empty")
        for name in ("order_external_identifier", "customer_identifier", "pos_transaction",
                     "error_message"):
            if row[name] is not None and not isinstance(row[name], str):
                raise ValueError(f"{name} is not text")
        if row["error_code"] is not None and not isinstance(row["error_code"], int):
            raise ValueError("error_code is not an integer")
        if not isinstance(row["attempts"], int) or row["ambiguous"] not in (0, 1):
            raise ValueError("attempts/ambiguous malformed")
        return Item(
            id=int(item_id),
            kind=Kind(row["kind"]),
            external_identifier=row["external_identifier"],
            order_external_identifier=row["order_external_identifier"],
            body=body,
            customer_identifier=row["customer_identifier"],
            transaction=row["pos_transaction"],
            state=State(row["state"]),
            attempts=row["attempts"],
            next_attempt_at=float(row["next_attempt_at"]),
            created_at=float(row["created_at"]),
            updated_at=float(row["updated_at"]),
            ambiguous=bool(row["ambiguous"]),
            result=result,
            error_code=row["error_code"],
            error_message=row["error_message"],
        )
    except (ValueError, TypeError, KeyError) as exc:  # JSONDecodeError is a ValueError
        raise OutboxError(f"outbox item {item_id} is corrupted: {exc}") from exc
