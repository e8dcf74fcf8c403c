"""Giftcards and prepaid balances in the Leat sandbox: find, pay or load, reverse."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from appliance.sandbox.input import Input, Page, SandboxError, atom, invalid, new_uuid
from appliance.sandbox.seed import Contact, Giftcard, Shop
from appliance.sandbox.world import Args, World

# ASSUMPTION: no code is documented for a prepaid debit above the balance; 9999 is made up.
PREPAID_INSUFFICIENT: Final = 9999
MAX_GIFTCARD_TXS_PAGE: Final = 100  # List Giftcard Transactions `perPage` (LD)
MAX_PREPAID_TXS_PAGE: Final = 30  # List Prepaid Transactions `limit` (LD)
_COMPARE: Final[dict[str, Callable[[datetime, datetime], bool]]] = {
    "gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le,
}


@dataclass
class GiftcardTx:
    """A giftcard transaction."""

    id: int
    uuid: str
    amount: int
    card: str
    shop: str
    created_at: datetime


@dataclass
class PrepaidTx:
    """A prepaid transaction; `balance_after` is the contact's balance after it."""

    uuid: str
    amount: int
    contact: str
    shop: str
    identifier: str | None
    balance_after: int
    created_at: datetime
    reversed: bool = False


class Payments:
    """Giftcard and prepaid calls over a `World` (called with its lock held)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.giftcard_txs: dict[str, GiftcardTx] = {}
        self.prepaid_txs: dict[str, PrepaidTx] = {}

    def _giftcard(self, uuid: str | None) -> Giftcard:
        found = self.world.giftcards.get(uuid or "")
        if found is None:
            raise SandboxError(5001, "Giftcard not found.")
        return found

    def find_giftcard(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /giftcards/find-one-by?hash=`."""
        hash_ = query.text("hash")
        query.check()
        found = next((g for g in self.world.giftcards.values() if g.hash == hash_), None)
        if found is None:
            raise SandboxError(5001, "Giftcard not found.")
        return self._giftcard_obj(found)

    def get_giftcard(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /giftcards/{uuid}`."""
        return self._giftcard_obj(self._giftcard(args[0]))

    def _giftcard_obj(self, g: Giftcard) -> dict[str, Any]:
        program = self.world.programs[g.program]
        amount = g.amount_in_cents
        return {
            "uuid": g.uuid, "id": g.id, "type": g.type, "hash": g.hash, "active": g.active,
            "upgradeable": g.upgradeable, "amount_in_cents": amount, "amount": amount / 100,
            "display_amount": self.world.money(amount),
            "expiration_date": atom(g.expiration_date),
            "giftcard_program": {"uuid": program.uuid, "name": program.name,
                                 "max_amount_in_cents": program.max_amount_in_cents,
                                 "calculator_flow": "DEFAULT",
                                 "expiration_days": program.expiration_days},
        }

    def _giftcard_move(self, g: Giftcard, amount: int, shop: Shop) -> dict[str, Any]:
        """Check and book `amount` on `g`; the transaction object."""
        if g.expiration_date is not None and g.expiration_date <= self.world.clock():
            raise SandboxError(5002, "Giftcard has expired.")
        if not g.active:
            # ASSUMPTION: an inactive card is 7010 "giftcard not valid".
            raise SandboxError(7010, "Giftcard is not valid.")
        if amount > 0 and not g.upgradeable:
            raise SandboxError(5006, "Giftcard cannot be topped up.")
        if g.amount_in_cents + amount < 0:
            raise SandboxError(5003, "Insufficient giftcard balance.")
        if g.amount_in_cents + amount > self.world.programs[g.program].max_amount_in_cents:
            raise SandboxError(5008, "Top-up exceeds the giftcard's maximum amount.")
        g.amount_in_cents += amount
        tx = GiftcardTx(self.world.next_id(), new_uuid(), amount, g.uuid, shop.uuid,
                        self.world.clock())
        self.giftcard_txs[tx.uuid] = tx
        g.transactions.append(tx.uuid)
        return self._giftcard_tx_obj(tx)

    def _giftcard_tx_obj(self, tx: GiftcardTx) -> dict[str, Any]:
        g, shop = self.world.giftcards[tx.card], self.world.shops[tx.shop]
        return {"id": tx.id, "uuid": tx.uuid, "amount_in_cents": tx.amount, "type": "STANDARD",
                "settled": False, "card": {"id": g.id, "uuid": g.uuid, "hash": g.hash},
                "shop": {"id": shop.id, "uuid": shop.uuid, "name": shop.name},
                "settlements": [], "created_at": atom(tx.created_at)}

    def create_giftcard_tx(self, args: Args, query: Input, body: Input) -> Any:
        """`POST /giftcard-transactions`: negative pays, positive loads."""
        card, amount = body.text("giftcard_uuid"), body.integer("amount_in_cents")
        shop_uuid = body.text("shop_uuid")
        if amount == 0:
            body.fail("amount_in_cents", "The amount in cents must not be 0.")
        body.check()
        g, shop = self._giftcard(card), self.world.shop(shop_uuid)
        return self._giftcard_move(g, amount or 0, shop)

    def get_giftcard_tx(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /giftcard-transactions/{uuid}`."""
        tx = self.giftcard_txs.get(args[0])
        if tx is None:
            raise SandboxError(5010, "Giftcard transaction not found.")
        return self._giftcard_tx_obj(tx)

    def list_giftcard_txs(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /giftcard-transactions`: filtered, sorted, with the slim `meta`.

        Filters (LD "List Giftcard Transactions"): `perPage` (default 10, at most 100),
        `page`, `giftcard_hash`, `giftcard_program_uuid`, `shop_uuid`, `sort`
        (`created_at` ascending by default, `-created_at` descending) and
        `created_at[gt|gte|lt|lte]`. The answer's `meta` is `{page, limit, viewing_from,
        viewing_to, last_page, total}`, as LD's example shows. An unknown hash, program or
        shop lists nothing (ASSUMPTION: LD names no error for them).
        """
        per_page = query.integer("perPage", required=False, minimum=1) or 10
        page = query.integer("page", required=False, minimum=1) or 1
        hash_ = query.text("giftcard_hash", required=False)
        program = query.text("giftcard_program_uuid", required=False)
        shop_uuid = query.text("shop_uuid", required=False)
        sort = query.choice("sort", ("CREATED_AT", "-CREATED_AT"), required=False)
        if per_page > MAX_GIFTCARD_TXS_PAGE:
            query.fail("perPage", f"The per page may not be greater than {MAX_GIFTCARD_TXS_PAGE}.")
        bounds = query.obj("created_at", required=False)
        limits = ({op: bounds.time(op) for op in ("gt", "gte", "lt", "lte")}
                  if bounds is not None else {})
        query.check()
        w = self.world
        found = [
            tx for tx in self.giftcard_txs.values()
            if (hash_ is None or w.giftcards[tx.card].hash == hash_)
            and (program is None or w.giftcards[tx.card].program == program)
            and (shop_uuid is None or tx.shop == shop_uuid)
            and all(t is None or _COMPARE[op](tx.created_at, t) for op, t in limits.items())
        ]
        descending = sort == "-CREATED_AT"
        if descending:  # equal times keep creation order, reversed when descending
            found.reverse()
        found.sort(key=lambda tx: tx.created_at, reverse=descending)
        return Page([self._giftcard_tx_obj(tx) for tx in found], page, per_page,
                    "/api/v3/oauth/clients/giftcard-transactions", slim=True)

    def reverse_giftcard_tx(self, args: Args, query: Input, body: Input) -> Any:
        """`POST /giftcard-transactions/{uuid}/reverse`: only the card's last one (55025)."""
        tx = self.giftcard_txs.get(args[0])
        if tx is None:
            raise SandboxError(5010, "Giftcard transaction not found.")
        g = self.world.giftcards[tx.card]
        if g.transactions[-1] != tx.uuid:
            raise SandboxError(55025, "Only the last transaction of a giftcard can be reversed.")
        return self._giftcard_move(g, -tx.amount, self.world.shops[tx.shop])

    def create_prepaid_tx(self, args: Args, query: Input, body: Input) -> Any:
        """`POST /prepaid-transactions` for `contact_uuid` or `contact_identifier_value`."""
        amount, shop_uuid = body.integer("amount_in_cents"), body.text("shop_uuid")
        contact_uuid = body.text("contact_uuid", required=False)
        value = body.text("contact_identifier_value", required=False)
        if contact_uuid is None and value is None and "contact_uuid" not in body.errors:
            body.fail("contact_uuid", "The contact uuid field is required when contact "
                      "identifier value is not present.")
        if amount == 0:
            body.fail("amount_in_cents", "The amount in cents must not be 0.")
        body.check()
        shop = self.world.shop(shop_uuid)
        ident = self.world.identifier(value, linked=True) if value is not None else None
        contact = self.world.contact(contact_uuid if contact_uuid is not None
                               else ident.contact if ident else None)
        if ident is not None and ident.contact != contact.uuid:
            raise invalid("contact_identifier_value", "The identifier belongs to another contact.")
        return self._prepaid_move(contact, amount or 0, shop, ident.value if ident else None)

    def _prepaid_move(self, contact: Contact, amount: int, shop: Shop, ident: str | None
                      ) -> dict[str, Any]:
        if contact.prepaid_cents + amount < 0:
            raise SandboxError(PREPAID_INSUFFICIENT, "Insufficient prepaid balance.")
        contact.prepaid_cents += amount
        tx = PrepaidTx(new_uuid(), amount, contact.uuid, shop.uuid, ident, contact.prepaid_cents,
                       self.world.clock())
        self.prepaid_txs[tx.uuid] = tx
        return self._prepaid_tx_obj(tx)

    def _prepaid_tx_obj(self, tx: PrepaidTx, *, listed: bool = False) -> dict[str, Any]:
        """A prepaid transaction; `listed` adds the `contact{uuid, email}` list items carry."""
        w, shop = self.world, self.world.shops[tx.shop]
        obj = {"uuid": tx.uuid, "amount_in_cents": tx.amount,
               "prepaid_balance": {"balance_in_cents": tx.balance_after,
                                   "balance": w.money(tx.balance_after)},
               "created_at": atom(tx.created_at),
               "shop": {"id": shop.id, "uuid": shop.uuid, "reference": shop.reference,
                        "name": shop.name},
               "contact_identifier": w.identifier_obj(w.identifiers.get(tx.identifier or ""))}
        if listed:
            obj["contact"] = w.contact_ref(w.contacts[tx.contact])
        return obj

    def list_prepaid_txs(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /prepaid-transactions`: by `contact_uuid` and/or `shop_uuid`, paginated.

        LD "List Prepaid Transactions": `limit` (default 10, at most 30), `page`; errors
        1003, 55031 (contact), 1008 (shop); no time filter and no sort. ASSUMPTION: newest
        first (equal times: the later created first), each item's `prepaid_balance` the
        balance right after it (LD's example shows different balances per item).
        """
        contact_uuid = query.text("contact_uuid", required=False)
        shop_uuid = query.text("shop_uuid", required=False)
        limit = query.integer("limit", required=False, minimum=1) or 10
        page = query.integer("page", required=False, minimum=1) or 1
        if limit > MAX_PREPAID_TXS_PAGE:
            query.fail("limit", f"The limit may not be greater than {MAX_PREPAID_TXS_PAGE}.")
        query.check()
        if contact_uuid is not None:
            self.world.contact(contact_uuid)
        if shop_uuid is not None:
            self.world.shop(shop_uuid)
        found = [tx for tx in reversed(self.prepaid_txs.values())
                 if (contact_uuid is None or tx.contact == contact_uuid)
                 and (shop_uuid is None or tx.shop == shop_uuid)]
        found.sort(key=lambda tx: tx.created_at, reverse=True)
        return Page([self._prepaid_tx_obj(tx, listed=True) for tx in found], page, limit,
                    "/api/v3/oauth/clients/prepaid-transactions")

    def reverse_prepaid_tx(self, args: Args, query: Input, body: Input) -> Any:
        """`POST /prepaid-transactions/{uuid}/reverse`: a new transaction for the opposite.

        ASSUMPTION: an unknown or already reversed transaction is 1003.
        """
        tx = self.prepaid_txs.get(args[0])
        if tx is None or tx.reversed:
            raise invalid("uuid", "The selected prepaid transaction is invalid or reversed.")
        contact, shop = self.world.contacts[tx.contact], self.world.shops[tx.shop]
        result = self._prepaid_move(contact, -tx.amount, shop, tx.identifier)
        tx.reversed = True
        self.prepaid_txs[result["uuid"]].reversed = True  # a reversal is not reversed again
        return result
