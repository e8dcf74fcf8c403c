"""Giftcards and prepaid balances in the Leat sandbox: find, pay or load, reverse."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from appliance.sandbox.input import Input, SandboxError, atom, invalid, new_uuid
from appliance.sandbox.seed import Contact, Giftcard, Shop
from appliance.sandbox.world import Args, World

# ASSUMPTION: no code is documented for a prepaid debit above the balance; 9999 is made up.
PREPAID_INSUFFICIENT: Final = 9999


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
        return {"uuid": tx.uuid, "amount_in_cents": amount,
                "prepaid_balance": {"balance_in_cents": tx.balance_after,
                                    "balance": self.world.money(tx.balance_after)},
                "created_at": atom(tx.created_at),
                "shop": {"id": shop.id, "uuid": shop.uuid, "reference": shop.reference,
                         "name": shop.name},
                "contact_identifier": self.world.identifier_obj(
                    self.world.identifiers.get(ident or ""))}

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
