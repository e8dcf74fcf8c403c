"""Orders and order returns in the Leat sandbox, with its (documented) points rule.

Points rule (the sandbox's own; Leat's real rules are account-specific):
    eligible = sum of line_items[].total_amount + sum of sub_line_items[].total_amount
               - sum of applied_discounts[].amount whose applied_to is ORDER
    points   = max(eligible, 0) // 100   (1 point per whole currency unit; charges excluded)
Line-level discounts are already inside the (sub) line totals (Leat's Create Order docs), so only
order-level ones are subtracted. A CANCELLED order earns 0. Points are booked when the
order is processed. A return takes back `points * returned / eligible` (rounded down, over
all returns of the order so far, so returning everything takes back exactly all points);
`returned` is the returned lines' `total_amount` (or the original line's total pro rata by
quantity) minus the return's own applied discounts. Return points are negative.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from appliance.sandbox.input import Input, SandboxError, atom, invalid, new_uuid
from appliance.sandbox.world import Args, World

ORDER_STATUSES: Final = ("CREATED", "PENDING", "COMPLETED", "CANCELLED")
PAYMENT_STATUSES: Final = ("UNPAID", "PENDING", "PAID")
RETURN_STATUSES: Final = ("PENDING", "COMPLETED")
# Every value any source shows (docs/leat-assumptions.md, O5).
APPLIED_TO: Final = ("ORDER", "ORDER_LINES", "LINE_ITEM", "LINE_ITEMS", "SUB_LINE_ITEMS",
                     "CHARGES")
DISCOUNT_TYPES: Final = ("PERCENTAGE", "ABSOLUTE")
LINE_RESULTS: Final = ("GIFTCARD_TRANSACTION", "PREPAID_TRANSACTION", "VOUCHER")
OFFER_TYPES: Final = ("REWARD_REDEMPTION", "COLLECTABLE_REWARD_REDEMPTION", "VOUCHER_REDEMPTION")
PAYMENT_TYPES: Final = ("GIFTCARD_TRANSACTION", "PREPAID_TRANSACTION")
# ASSUMPTION: no "order not found" code is documented; 9404 is made up (message "... not found").
ORDER_NOT_FOUND: Final = 9404
POINTS_TRANSACTION: Final = "POINTS_TRANSACTION"


@dataclass
class OrderRecord:
    """A stored order and its points bookkeeping."""

    order: dict[str, Any]
    contact: str
    eligible: int
    points: int
    processed: bool = False
    returned_amount: int = 0
    returned_points: int = 0
    returned_qty: dict[str, float] = field(default_factory=dict)


class Orders:
    """The Orders API over a `World` (called with its lock held)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.records: dict[str, OrderRecord] = {}  # by order uuid, in creation order
        self.by_external: dict[str, str] = {}
        self.returns: list[dict[str, Any]] = []
        self.return_ids: set[str] = set()

    # ----------------------------------------------------------------------------- input

    def _line(self, src: Input, *, sub: bool) -> dict[str, Any]:
        """One (sub) line item, normalised, with a new uuid."""
        ext, name = src.text("external_identifier"), src.text("name")
        quantity = src.number("quantity")
        price, total = src.integer("price"), src.integer("total_amount")
        discount = src.integer("discount_amount", required=False)
        product = src.obj("product", required=False)
        product_ext = product.text("external_identifier") if product else None
        line: dict[str, Any] = {
            "uuid": self._uuid(), "external_identifier": ext, "name": name,
            "quantity": _whole(quantity), "price": price, "total_amount": total,
            "discount_amount": discount or 0,
            "product": {"external_identifier": product_ext, "name": name} if product_ext else None,
        }
        if not sub:
            result = src.obj("result", required=False)
            line["result"] = ({"uuid": result.text("uuid"), "type": result.choice("type",
                              LINE_RESULTS)} if result else None)
            line["sub_line_items"] = [self._line(s, sub=True) for s in src.items("sub_line_items")]
        return line

    def _discount(self, src: Input) -> dict[str, Any]:
        offer = src.obj("offer", required=False)
        return {
            "uuid": self._uuid(), "external_identifier": src.text("external_identifier"),
            "name": src.text("name"), "amount": src.integer("amount"),
            "type": src.choice("type", DISCOUNT_TYPES, required=False),
            "value": src.number("value", required=False),
            "applied_to": src.choice("applied_to", APPLIED_TO),
            **{key: [{"external_identifier": ref.text("external_identifier")}
                     for ref in src.items(key)]
               for key in ("line_items", "sub_line_items", "charges")},
            "offer": ({"uuid": offer.text("uuid"), "type": offer.choice("type", OFFER_TYPES)}
                      if offer else None),
        }

    def _charge(self, src: Input) -> dict[str, Any]:
        definition = src.obj("charge_definition", required=False)
        kind = definition.text("external_identifier") if definition else None
        return {
            "uuid": self._uuid(), "external_identifier": src.text("external_identifier"),
            "type": kind or src.text("type", required=False), "name": src.text("name"),
            "amount": src.integer("amount", required=False),
            "discount_amount": src.integer("discount_amount", required=False) or 0,
            "total_amount": src.integer("total_amount"),
            "charge_definition": {"external_identifier": kind} if kind else None,
        }

    @staticmethod
    def _uuid() -> str:
        return new_uuid()

    def _read(self, body: Input, *, simulate: bool = False) -> tuple[dict[str, Any], str, str]:
        """The validated order object (not stored yet), its contact and shop uuids.

        ASSUMPTION: a simulation takes the same body, but its contact is optional and its
        external_identifier may repeat one already used (nothing is stored).
        """
        ext = body.text("external_identifier")
        if ext is not None and ext in self.by_external and not simulate:
            # ASSUMPTION (docs/leat-assumptions.md, O3): a repeated external_identifier is 1003.
            body.fail("external_identifier", "The external identifier has already been taken.")
        # ASSUMPTION: an order without a contact is refused (the docs mark it required).
        contact = body.obj("contact", required=not simulate)
        contact_uuid = contact.text("uuid") if contact else None
        profile = body.obj("business_profile")
        shop_uuid = profile.text("uuid") if profile else None
        lines = [self._line(item, sub=False) for item in body.items("line_items", required=True)]
        order: dict[str, Any] = {
            "uuid": self._uuid(), "external_identifier": ext,
            "reference": body.text("reference", required=False),
            "status": body.choice("status", ORDER_STATUSES),
            "payment_status": body.choice("payment_status", PAYMENT_STATUSES),
            "currency": body.text("currency", required=False) or self.world.seed.currency,
            "total_order_amount": body.integer("total_order_amount"),
            "order_amount": body.integer("order_amount", required=False),
            "total_discount_amount": body.integer("total_discount_amount", required=False),
            "paid_at": body.time("paid_at"), "completed_at": body.time("completed_at"),
            "line_items": lines,
            "applied_discounts": [self._discount(d) for d in body.items("applied_discounts")],
            "charges": [self._charge(c) for c in body.items("charges")],
            "payments": [{"uuid": p.text("uuid"), "type": p.choice("type", PAYMENT_TYPES)}
                         for p in body.items("payments")],
        }
        seen: set[str] = set()
        for i, line in enumerate(lines):
            for j, item in enumerate([line, *line["sub_line_items"]]):
                key = f"line_items.{i}" + (f".sub_line_items.{j - 1}" if j else "")
                if item["external_identifier"] in seen:
                    body.fail(f"{key}.external_identifier",
                              "The line item external identifier must be unique in the order.")
                seen.add(item["external_identifier"])
        body.check()
        return order, contact_uuid or "", shop_uuid or ""

    # ----------------------------------------------------------------------------- calls

    @staticmethod
    def _points(order: dict[str, Any]) -> tuple[int, int, int]:
        """`(line totals, eligible amount, points)` by the rule in this module's docstring."""
        totals = sum(li["total_amount"] + sum(s["total_amount"] for s in li["sub_line_items"])
                     for li in order["line_items"])
        order_discounts = sum(d["amount"] for d in order["applied_discounts"]
                              if d["applied_to"] == "ORDER")
        eligible = max(totals - order_discounts, 0)
        return totals, eligible, 0 if order["status"] == "CANCELLED" else eligible // 100

    def _store(self, body: Input) -> OrderRecord:
        """Validate and store a new order (not processed)."""
        world = self.world
        order, contact_uuid, shop_uuid = self._read(body)
        contact, shop = world.contact(contact_uuid), world.shop(shop_uuid)
        totals, eligible, points = self._points(order)
        now = world.clock()
        if order["order_amount"] is None:
            order["order_amount"] = totals
        if order["total_discount_amount"] is None:
            order["total_discount_amount"] = sum(d["amount"] for d in order["applied_discounts"])
        order.update(
            formatted_total_order_amount=world.money(order["total_order_amount"]),
            total_charges_amount=sum(c["total_amount"] for c in order["charges"]),
            paid_at=atom(order["paid_at"]), completed_at=atom(order["completed_at"]),
            created_at=atom(now), updated_at=atom(now),
            contact=world.contact_ref(contact),
            business_profile={"uuid": shop.uuid, "name": shop.name},
        )
        record = OrderRecord(order, contact.uuid, eligible, points)
        self.records[order["uuid"]] = record
        self.by_external[order["external_identifier"]] = order["uuid"]
        return record

    def _process(self, record: OrderRecord) -> dict[str, Any]:
        """Book the order's points (once)."""
        if record.processed:
            # ASSUMPTION: processing an order again is refused with 1003 (no double points).
            raise invalid("order", "The order has already been processed.")
        contact = self.world.contacts[record.contact]
        contact.credits += record.points
        record.processed = True
        return {"type": POINTS_TRANSACTION,
                "data": {"points": record.points, "new_balance": contact.credits}}

    def create_and_process(self, args: Args, query: Input, body: Input) -> Any:
        """`POST /orders/create-and-process`: `{order, result}`."""
        record = self._store(body)
        return {"order": record.order, "result": self._process(record)}

    def simulate(self, args: Args, query: Input, body: Input) -> Any:
        """`POST /orders/simulate`: the points the order would earn; nothing is stored.

        The shape is LD's `{"type": "points_transaction", "data": {"points"}}` (lower-case
        type, unlike process). ASSUMPTION: a known contact or shop is checked (55031, 1008).
        """
        order, contact_uuid, shop_uuid = self._read(body, simulate=True)
        self.world.shop(shop_uuid)
        if contact_uuid:
            self.world.contact(contact_uuid)
        return {"type": "points_transaction", "data": {"points": self._points(order)[2]}}

    def create(self, args: Args, query: Input, body: Input) -> Any:
        """`POST /orders`: the order object, not processed."""
        return self._store(body).order

    def process(self, args: Args, query: Input, body: Input) -> Any:
        """`POST /orders/{uuid}/process`: `{type, data{points, new_balance}}`."""
        return self._process(self._record(args[0]))

    def _record(self, uuid: str) -> OrderRecord:
        record = self.records.get(uuid)
        if record is None:
            raise SandboxError(ORDER_NOT_FOUND, "Order not found.")
        return record

    def find(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /orders/find?external_identifier=`."""
        ext = query.text("external_identifier")
        query.check()
        return self._record(self.by_external.get(ext or "", "")).order

    def get(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /orders/{uuid}`."""
        return self._record(args[0]).order

    def list_orders(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /orders`: every order, oldest first (no pagination)."""
        return [r.order for r in self.records.values()]

    def create_return(self, args: Args, query: Input, body: Input) -> Any:
        """`POST /order-returns/create-and-process`: negative points for the returned part."""
        ref = body.obj("order")
        order_uuid = ref.text("uuid", required=False) if ref else None
        order_ext = ref.text("external_identifier", required=False) if ref else None
        if ref is not None and order_uuid is None and order_ext is None:
            body.fail("order", "The order.uuid or order.external_identifier field is required.")
        ext = body.text("external_identifier")
        if ext is not None and ext in self.return_ids:
            # ASSUMPTION: like orders, a repeated return external_identifier is 1003.
            body.fail("external_identifier", "The external identifier has already been taken.")
        status = body.choice("status", RETURN_STATUSES, required=False) or "COMPLETED"
        lines = [(item.text("external_identifier"), item.number("quantity"),
                  item.integer("total_amount", required=False))
                 for item in body.items("line_items")]
        subs = [(item.text("external_identifier"), item.number("quantity"),
                 item.integer("total_amount", required=False))
                for item in body.items("sub_line_items")]
        discounts = sum(d.integer("amount") or 0 for d in body.items("applied_discounts"))
        charges = body.items("charges")
        for charge in charges:
            charge.text("external_identifier")
        if not (lines or subs or charges) and not body.errors:
            body.fail("line_items", "A return needs line items, sub line items or charges.")
        body.check()
        record = self._record(order_uuid or self.by_external.get(order_ext or "", ""))
        originals: dict[str, dict[str, Any]] = {}
        for line in record.order["line_items"]:
            originals[line["external_identifier"]] = line
            originals.update((s["external_identifier"], s) for s in line["sub_line_items"])
        check = Input({})
        returned, wanted = 0, dict(record.returned_qty)
        line_returns: dict[str, list[dict[str, Any]]] = {"line_items": [], "sub_line_items": []}
        for key, items in (("line_items", lines), ("sub_line_items", subs)):
            for i, (line_ext, qty, total) in enumerate(items):
                original = originals.get(line_ext or "")
                if original is None:
                    check.fail(f"{key}.{i}.external_identifier",
                               "The selected line item is not part of the order.")
                    continue
                wanted[line_ext or ""] = wanted.get(line_ext or "", 0) + (qty or 0)
                if (qty or 0) <= 0 or wanted[line_ext or ""] > original["quantity"]:
                    check.fail(f"{key}.{i}.quantity",
                               "The quantity exceeds what is left to return of the line.")
                    continue
                returned += (total if total is not None else
                             original["total_amount"] * (qty or 0) // original["quantity"])
                line_returns[key].append({"uuid": self._uuid(), "quantity": _whole(qty),
                                          "line_item": {"uuid": original["uuid"]}})
        check.check()
        record.returned_qty = wanted
        record.returned_amount += max(returned - discounts, 0)
        points_back = 0
        if record.processed and record.eligible > 0:
            share = min(record.returned_amount, record.eligible)
            points_back = record.points * share // record.eligible - record.returned_points
        record.returned_points += points_back
        contact = self.world.contacts[record.contact]
        contact.credits -= points_back
        self.return_ids.add(ext or "")
        ret = {"uuid": self._uuid(), "external_identifier": ext, "status": status,
               "order": {"uuid": record.order["uuid"]},
               "line_item_returns": line_returns["line_items"],
               "sub_line_item_returns": line_returns["sub_line_items"],
               "created_at": atom(self.world.clock())}
        self.returns.append(ret)
        # ASSUMPTION: the points of a return are negative (sources only show positive copies).
        return {"return": ret, "result": {"type": POINTS_TRANSACTION,
                                          "data": {"points": -points_back,
                                                   "new_balance": contact.credits}}}

    def view(self) -> list[dict[str, Any]]:
        """Orders with the sandbox's bookkeeping under `sandbox` (for tests and integrators)."""
        return [{**r.order, "sandbox": {"processed": r.processed, "points": r.points,
                                        "returned_points": r.returned_points}}
                for r in self.records.values()]


def _whole(value: float | None) -> float | int | None:
    """`value` as an int when it is whole (quantities print as 1, not 1.0)."""
    return int(value) if value is not None and float(value).is_integer() else value
