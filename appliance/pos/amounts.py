"""Leat's amounts on an order: a line is price x quantity - discount_amount (Leat's order docs);
the totals never refuse an order, they are named as warnings."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from appliance.pos.errors import RequestError


def check_amounts(order: Mapping[str, Any]) -> list[str]:
    """Check the amounts as Leat defines them; return what looks inconsistent, as warnings.

    A line (or sub-line) whose total_amount is not price x quantity - discount_amount is
    malformed (Leat's own definition of a line in its Create Order docs): RequestError. The order
    totals never refuse an order: Leat computes points from the lines, charges and discounts,
    calls the totals "mainly for visual and reference purposes", and its sources disagree on
    whether line discounts count again (its documented example: order_amount 3175, a 225
    discount applied to a line, charges 381, total 3331). They are named as warnings instead.
    """
    seen: set[str] = set()
    lines_total = sum(
        _check_line(line, where, seen) for line, where in _lines(order["line_items"])
    )
    warnings = []
    if "order_amount" in order and order["order_amount"] != lines_total:
        warnings.append(
            f"order/order_amount is {order['order_amount']} but the line and sub-line totals "
            f"add up to {lines_total}"
        )
    discounts = order.get("applied_discounts", [])
    order_level = sum(d["amount"] for d in discounts if d["applied_to"] == "ORDER")
    every = sum(d["amount"] for d in discounts)
    charges = sum(c["total_amount"] for c in order.get("charges", []))
    candidates = {lines_total - order_level + charges, lines_total - every + charges}
    if order["total_order_amount"] not in candidates:
        warnings.append(
            f"order/total_order_amount is {order['total_order_amount']} but lines "
            f"{lines_total} - discounts + charges {charges} = "
            + " or ".join(str(c) for c in sorted(candidates))
        )
    if "total_discount_amount" in order:
        line_discounts = sum(
            line.get("discount_amount", 0) for line, _ in _lines(order["line_items"])
        )
        if order["total_discount_amount"] not in {every, every + line_discounts}:
            warnings.append(
                f"order/total_discount_amount is {order['total_discount_amount']} but the "
                f"applied discounts add up to {every} (and the line discounts to "
                f"{line_discounts})"
            )
    return warnings


def _lines(lines: list[Mapping[str, Any]]) -> Iterator[tuple[Mapping[str, Any], str]]:
    for index, line in enumerate(lines):
        yield line, f"order/line_items/{index}"
        for sub_index, sub in enumerate(line.get("sub_line_items", [])):
            yield sub, f"order/line_items/{index}/sub_line_items/{sub_index}"


def _check_line(line: Mapping[str, Any], where: str, seen: set[str]) -> int:
    ident = line["external_identifier"]
    if ident in seen:
        raise RequestError("invalid_request", f"{where}: external_identifier {ident!r} repeated")
    seen.add(ident)
    discount = line.get("discount_amount", 0)
    expected = line["price"] * line["quantity"] - discount
    if line["total_amount"] != expected:
        raise RequestError(
            "amounts_inconsistent",
            f"{where}/total_amount is {line['total_amount']} but price {line['price']} x "
            f"quantity {line['quantity']} - discount_amount {discount} = {expected}",
        )
    return int(line["total_amount"])
