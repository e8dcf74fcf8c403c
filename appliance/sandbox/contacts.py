"""Shops, the loyalty program, contact identifiers, contacts and balances in the Leat sandbox."""

from __future__ import annotations

from typing import Any

from appliance.sandbox.input import Input, SandboxError, new_uuid
from appliance.sandbox.seed import Contact
from appliance.sandbox.world import EMAIL, Args, World


class Contacts:
    """The shop, program and contact calls over a `World` (called with its lock held)."""

    def __init__(self, world: World) -> None:
        self.world = world

    # ------------------------------------------------------------------- shops, program

    def health(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /` (health check). ASSUMPTION: an empty object."""
        return {}

    def list_shops(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /shops`."""
        return [self.world.shop_obj(s) for s in self.world.shops.values()]

    def get_shop(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /shops/{uuid}`."""
        return self.world.shop_obj(self.world.shop(args[0]))

    def loyalty_program(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /loyalty-program`."""
        program = dict(self.world.seed.loyalty_program)
        program.setdefault("max_amount", None)
        program.setdefault("custom_credit_name", None)
        return program

    def units(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /units`: the program's one unit, the default."""
        unit = self.world.seed.loyalty_program.get("unit") or {"name": "purchase_amount"}
        return [{**unit, "is_default": True}]

    # ------------------------------------------------------------ identifiers, contacts

    def find_identifier(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /contact-identifiers/find?contact_identifier_value=`."""
        value = query.text("contact_identifier_value")
        query.check()
        return self.world.identifier_obj(self.world.identifier(value))

    def get_contact(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /contacts/{uuid}`."""
        return self.world.contact_obj(self.world.contact(args[0]))

    def _email(self, query: Input) -> str:
        email = query.text("email")
        if email is not None and not EMAIL.fullmatch(email):
            query.fail("email", "The email must be a valid email address.")
        query.check()
        return email or ""

    def find_contact(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /contacts/find-one-by?email=` (case-insensitive)."""
        email = self._email(query).casefold()
        found = next((c for c in self.world.contacts.values() if c.email.casefold() == email), None)
        if found is None:
            raise SandboxError(55031, "Contact not found.")
        return self.world.contact_obj(found)

    def find_or_create_contact(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /contacts/find-or-create?email=`: a new contact has no points and no tier."""
        email = self._email(query)
        found = next((c for c in self.world.contacts.values()
                      if c.email.casefold() == email.casefold()), None)
        if found is None:
            found = Contact(self.world.next_id(), new_uuid(), email, "", "", 0, 0, None)
            self.world.contacts[found.uuid] = found
        return self.world.contact_obj(found)

    def credit_balance(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /contacts/{uuid}/credit-balance`."""
        return {"balance": self.world.contact(args[0]).credits}

    def prepaid_balance(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /contacts/{uuid}/prepaid-balance`."""
        cents = self.world.contact(args[0]).prepaid_cents
        return {"balance_in_cents": cents, "balance": self.world.money(cents)}

    def tier(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /contacts/{uuid}/tier`: a nameless tier object for a contact without one."""
        return self.world.tier_obj(self.world.contact(args[0]).tier)
