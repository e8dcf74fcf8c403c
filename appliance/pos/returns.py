"""A return checked at the door against its order, when this device holds that order.

A return names the order's lines by their external_identifier and how many of each came
back (Leat's Order Returns docs: "send only the returned lines"). One that names a line the
order does not have, returns more of a line than is left after the earlier returns, returns
nothing at all, or belongs to an order that is dead here or had no customer (never sent to
Leat: a claim URL instead) could never be delivered: it is
refused now, named, instead of being acked and going dead later (the sandbox, like Leat as far
as we can tell, answers 1003 for each). A return of an order this device does not hold (rung
up on another till) is checked by Leat alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from appliance.outbox_items import Item, State
from appliance.pos.errors import RequestError

LINE_KEYS = ("line_items", "sub_line_items")


def check_return(body: Mapping[str, Any], order: Item | None, earlier: Iterable[Item]) -> None:
    """`RequestError` (`invalid_request`) naming the first reason `body` (a schema-valid
    return) cannot be delivered; `order` is its order when held here, `earlier` the returns
    of that order stored before (any other external_identifier; dead ones do not count)."""
    if not any(body.get(key) for key in (*LINE_KEYS, "charges")):
        raise RequestError("invalid_request", "return: names no line_items, sub_line_items or "
                           "charges: nothing to return")
    if order is None:
        return
    name = order.external_identifier
    if order.state is State.DEAD:
        raise RequestError("invalid_request", f"return/order: order {name!r} is dead on this "
                           "device (Leat refused it), so it has nothing to return")
    if order.anonymous:
        raise RequestError("invalid_request", f"return/order: order {name!r} had no customer, "
                           "so it was never sent to Leat (a claim URL was made instead): Leat "
                           "has nothing to return")
    ordered = _quantities(order.body.get("line_items") or ())
    returned: Counter[str] = Counter()
    for item in earlier:
        if item.state is not State.DEAD and item.external_identifier != body["external_identifier"]:
            for key in LINE_KEYS:
                returned.update(_quantities(item.body.get(key) or (), nested=False))
    for key in LINE_KEYS:
        for index, line in enumerate(body.get(key) or ()):
            line_id, quantity = line["external_identifier"], line["quantity"]
            where = f"return/{key}/{index}"
            if line_id not in ordered:
                raise RequestError("invalid_request", f"{where}/external_identifier: "
                                   f"{line_id!r} is not a line of order {name!r}")
            returned[line_id] += quantity
            if returned[line_id] > ordered[line_id]:
                left = ordered[line_id] - returned[line_id] + quantity
                raise RequestError("invalid_request", f"{where}/quantity: {quantity} of "
                                   f"{line_id!r}, but only {left} of the {ordered[line_id]} "
                                   "ordered are left to return")


def _quantities(lines: Iterable[Any], nested: bool = True) -> Counter[str]:
    """Quantity per line external_identifier (an order's sub-lines too when `nested`)."""
    counts: Counter[str] = Counter()
    for line in lines:
        if not isinstance(line, Mapping):
            continue
        line_id, quantity = line.get("external_identifier"), line.get("quantity")
        if isinstance(line_id, str) and isinstance(quantity, int):
            counts[line_id] += quantity
        if nested:
            counts.update(_quantities(line.get("sub_line_items") or (), nested=False))
    return counts
