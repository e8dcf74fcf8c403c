"""The Leat sandbox's shared data: records, clock, lookups and how records render.

`World` holds everything the call groups (contacts, rewards, vouchers, payments, orders)
read and change; each group depends on it and on nothing else of the sandbox state, and
`state.State` composes them. `World` is not thread-safe: the HTTP layer holds `World.lock`.
Behaviour the Leat sources leave open is chosen here and marked `ASSUMPTION:`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from appliance.sandbox.input import SandboxError, atom, new_uuid
from appliance.sandbox.seed import Contact, Identifier, Reward, Seed, Shop

# ASSUMPTION: the channel of loyalty transactions made through the OAuth API (values unknown;
# the SDK's test data has "BUSINESS_DASHBOARD").
CHANNEL: Final = "OAUTH_API"
EMAIL: Final = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£"}

Args = tuple[str, ...]


@dataclass
class Reception:
    """A reward reception or a credit reception (points spent or given)."""

    kind: str  # "reward_reception" | "credit_reception"
    uuid: str
    contact: str
    shop: str
    credits: int
    identifier: str | None
    created_at: datetime
    reward: str | None = None
    expires_at: datetime | None = None
    unit_value: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    reversed: bool = False


class World:
    """All sandbox data of one seed, the clock, lookups and rendering (no API calls)."""

    def __init__(self, seed: Seed, clock: Callable[[], datetime]) -> None:
        self.lock = threading.Lock()
        self.seed = seed
        self.clock = clock
        self.shops = {s.uuid: s for s in seed.shops}
        self.tiers = {t.uuid: t for t in seed.tiers}
        self.contacts = {c.uuid: c for c in seed.contacts}
        self.identifiers = {i.value: i for i in seed.identifiers}
        self.rewards = {r.uuid: r for r in seed.rewards}  # seed order: unsorted on purpose
        self.collectables = {c.uuid: c for c in seed.collectables}
        self.collections: dict[str, str] = {}  # collectable-reward-redemption -> collectable
        self.promotions = {p.uuid: p for p in seed.promotions}
        self.vouchers = {v.uuid: v for v in seed.vouchers}
        self.programs = {p.uuid: p for p in seed.giftcard_programs}
        self.giftcards = {g.uuid: g for g in seed.giftcards}
        self.receptions: dict[str, Reception] = {}  # loyalty transactions, oldest first
        self._ids = iter(range(90001, 10**9))

    def next_id(self) -> int:
        """A fresh numeric id."""
        return next(self._ids)

    # ------------------------------------------------------------------------- lookups

    def shop(self, uuid: str | None) -> Shop:
        """The shop, or 1008."""
        found = self.shops.get(uuid or "")
        if found is None:
            raise SandboxError(1008, "Shop not found.")
        return found

    def contact(self, uuid: str | None) -> Contact:
        """The contact, or 55031."""
        found = self.contacts.get(uuid or "")
        if found is None:
            raise SandboxError(55031, "Contact not found.")
        return found

    def identifier(self, value: str | None, *, linked: bool = False) -> Identifier:
        """The active identifier, or 60003 / 60004 (and 60011 if `linked` and unlinked)."""
        found = self.identifiers.get(value or "")
        if found is None:
            raise SandboxError(60003, "Contact identifier not found.")
        if not found.active:
            raise SandboxError(60004, "Contact identifier is inactive.")
        if linked and found.contact is None:
            raise SandboxError(60011, "Contact identifier is not linked to a contact.")
        return found

    def reward(self, uuid: str | None) -> Reward:
        found = self.rewards.get(uuid or "")
        if found is None:
            raise SandboxError(6003, "Reward not found.")
        return found

    # ------------------------------------------------------------------------ rendering

    def money(self, cents: int) -> str:
        """A display amount such as `€20.00` (never parse it)."""
        sign = "-" if cents < 0 else ""
        return f"{sign}{_SYMBOLS.get(self.seed.currency, '')}{abs(cents) / 100:.2f}"

    @staticmethod
    def contact_ref(c: Contact) -> dict[str, Any]:
        """`{uuid, email}`."""
        return {"uuid": c.uuid, "email": c.email}

    @staticmethod
    def contact_balance(c: Contact) -> dict[str, Any]:
        """`{uuid, email, credit_balance{id, balance}}` as loyalty transactions carry it."""
        return {"uuid": c.uuid, "email": c.email,
                "credit_balance": {"id": c.id, "balance": c.credits}}

    @staticmethod
    def shop_obj(s: Shop) -> dict[str, Any]:
        """A shop as List/Get Shops return it."""
        return {"id": s.id, "uuid": s.uuid, "name": s.name, "type": s.type,
                "reference": s.reference}

    def shop_embed(self, s: Shop) -> dict[str, Any]:
        """A shop inside a transaction."""
        return {**self.shop_obj(s), "address": None}

    def tier_obj(self, uuid: str | None) -> dict[str, Any]:
        """A contact's tier. ASSUMPTION: no tier is an object without a name, not null (the
        official PHP SDK's `TierMapper` maps an empty name to "no tier")."""
        tier = self.tiers.get(uuid or "")
        if tier is None:
            return {"uuid": None, "name": None, "description": None, "position": None,
                    "media": None}
        return {"uuid": tier.uuid, "name": tier.name, "description": tier.description,
                "position": tier.position, "media": None}

    def identifier_obj(self, ident: Identifier | None) -> dict[str, Any] | None:
        if ident is None:
            return None
        contact = self.contacts.get(ident.contact or "")
        return {"name": ident.name, "value": ident.value, "active": ident.active,
                "contact": self.contact_ref(contact) if contact else None}

    def contact_obj(self, c: Contact) -> dict[str, Any]:
        default = next((i.value for i in self.identifiers.values() if i.contact == c.uuid), None)
        tier = self.tier_obj(c.tier)
        prepaid = c.prepaid_cents / 100
        values = {"email": c.email, "firstname": c.firstname, "lastname": c.lastname}
        return {
            "id": c.id, "uuid": c.uuid, "email": c.email,
            "attributes": [
                {"value": value, "attribute": {"name": name, "type": "text", "label": label,
                                               "description": None, "options": []}}
                for name, label, value in (("firstname", "First name", c.firstname),
                                           ("lastname", "Last name", c.lastname),
                                           ("email", "Email", c.email))
            ],
            "tier": tier,
            "subscriptions": [],
            "credit_balance": {"id": c.id, "balance": c.credits},
            "prepaid_balance": {"balance_in_cents": c.prepaid_cents,
                                "balance": self.money(c.prepaid_cents)},
            "current_values": {**values, "loyalty_balance": c.credits,
                               "prepaid_balance": int(prepaid) if prepaid.is_integer() else prepaid,
                               "default_contact_identifier": default,
                               "tier": tier["name"]},
            "current_display_values": {**values, "loyalty_balance": str(c.credits),
                                       "prepaid_balance": self.money(c.prepaid_cents)},
        }

    @staticmethod
    def reward_obj(r: Reward, *, detail: bool = False) -> dict[str, Any]:
        """A reward, custom attributes flattened onto it."""
        obj: dict[str, Any] = {
            **r.attributes,
            "id": r.id, "uuid": r.uuid, "title": r.title, "description": r.description,
            "type": r.reward_type, "reward_type": r.reward_type, "is_active": r.is_active,
            "required_credits": r.required_credits, "media": None,
            "pre_redeemable": r.pre_redeemable, "expiration_duration": r.expiration_duration,
        }
        if detail:
            obj.update(cost_price=None, stock=r.stock, active=r.is_active)
        return obj

    def reception_obj(self, rec: Reception) -> dict[str, Any]:
        contact = self.contacts[rec.contact]
        obj: dict[str, Any] = {
            "type": rec.kind, "uuid": rec.uuid, "credits": rec.credits,
            "contact": self.contact_balance(contact),
            "contact_identifier": self.identifier_obj(self.identifiers.get(rec.identifier or "")),
            "shop": self.shop_embed(self.shops[rec.shop]), "created_at": atom(rec.created_at),
            "channel": CHANNEL,
        }
        if rec.kind == "credit_reception":
            unit = self.seed.loyalty_program.get("unit") or {}
            obj.update(unit_value=rec.unit_value,
                       unit={"id": 1, "name": unit.get("name", "purchase_amount"),
                             "label": unit.get("label"), "prefix": unit.get("prefix", ""),
                             "is_default": True})
            obj.update(rec.extra)
        else:
            reward = self.rewards[rec.reward or ""]
            collectable = self.collectables.get(rec.uuid)
            obj.update(title=reward.title, reward=self.reward_obj(reward),
                       expires_at=atom(rec.expires_at),
                       has_been_collected=bool(collectable and collectable.redemption))
        return obj

    def give_credits(self, contact_uuid: str, shop: str, credits: int, ident: str | None,
                     *, unit_value: float | None = None, extra: dict[str, Any] | None = None
                     ) -> dict[str, Any]:
        """Book `credits` for the contact as a new credit reception; its object."""
        self.contacts[contact_uuid].credits += credits
        rec = Reception("credit_reception", new_uuid(), contact_uuid, shop, credits, ident,
                        self.clock(), unit_value=unit_value, extra=extra or {})
        self.receptions[rec.uuid] = rec
        return self.reception_obj(rec)
