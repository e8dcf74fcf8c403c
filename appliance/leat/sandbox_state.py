"""The Leat sandbox's state and business rules: one method per API call, no HTTP.

Every handler validates its whole input before it changes anything, so a `SandboxError`
leaves the state as it was. `State` is not thread-safe: the HTTP layer holds `State.lock`.
Behaviour the Leat sources leave open is chosen here and marked `ASSUMPTION:`.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from appliance.leat.sandbox_input import Input, SandboxError, atom, invalid, new_uuid
from appliance.leat.sandbox_orders import Orders
from appliance.leat.sandbox_payments import Payments
from appliance.leat.sandbox_seed import (
    Collectable,
    Contact,
    Identifier,
    Reward,
    Seed,
    Shop,
)
from appliance.leat.sandbox_vouchers import Vouchers

# ASSUMPTION: the channel of loyalty transactions made through the OAuth API (values unknown;
# the SDK's test data has "BUSINESS_DASHBOARD").
CHANNEL: Final = "OAUTH_API"
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
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


class State:
    """All sandbox data of one seed, and the Leat calls that read and change it."""

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
        self.receptions: dict[str, Reception] = {}
        self._ids = iter(range(90001, 10**9))
        self.orders = Orders(self)
        self.voucher_calls = Vouchers(self)
        self.payments = Payments(self)

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

    def _reward(self, uuid: str | None) -> Reward:
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

    def _tier_obj(self, uuid: str | None) -> dict[str, Any]:
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

    def _contact_obj(self, c: Contact) -> dict[str, Any]:
        default = next((i.value for i in self.identifiers.values() if i.contact == c.uuid), None)
        tier = self._tier_obj(c.tier)
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

    def _reception_obj(self, rec: Reception) -> dict[str, Any]:
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

    # ------------------------------------------------------------------- shops, program

    def health(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /` (health check). ASSUMPTION: an empty object."""
        return {}

    def list_shops(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /shops`."""
        return [self.shop_obj(s) for s in self.shops.values()]

    def get_shop(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /shops/{uuid}`."""
        return self.shop_obj(self.shop(args[0]))

    def loyalty_program(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /loyalty-program`."""
        program = dict(self.seed.loyalty_program)
        program.setdefault("max_amount", None)
        program.setdefault("custom_credit_name", None)
        return program

    def units(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /units`: the program's one unit, the default."""
        unit = self.seed.loyalty_program.get("unit") or {"name": "purchase_amount"}
        return [{**unit, "is_default": True}]

    # ------------------------------------------------------------ identifiers, contacts

    def find_identifier(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /contact-identifiers/find?contact_identifier_value=`."""
        value = query.text("contact_identifier_value")
        query.check()
        return self.identifier_obj(self.identifier(value))

    def get_contact(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /contacts/{uuid}`."""
        return self._contact_obj(self.contact(args[0]))

    def _email(self, query: Input) -> str:
        email = query.text("email")
        if email is not None and not _EMAIL.fullmatch(email):
            query.fail("email", "The email must be a valid email address.")
        query.check()
        return email or ""

    def find_contact(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /contacts/find-one-by?email=` (case-insensitive)."""
        email = self._email(query).casefold()
        found = next((c for c in self.contacts.values() if c.email.casefold() == email), None)
        if found is None:
            raise SandboxError(55031, "Contact not found.")
        return self._contact_obj(found)

    def find_or_create_contact(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /contacts/find-or-create?email=`: a new contact has no points and no tier."""
        email = self._email(query)
        found = next((c for c in self.contacts.values()
                      if c.email.casefold() == email.casefold()), None)
        if found is None:
            found = Contact(self.next_id(), new_uuid(), email, "", "", 0, 0, None)
            self.contacts[found.uuid] = found
        return self._contact_obj(found)

    def credit_balance(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /contacts/{uuid}/credit-balance`."""
        return {"balance": self.contact(args[0]).credits}

    def prepaid_balance(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /contacts/{uuid}/prepaid-balance`."""
        cents = self.contact(args[0]).prepaid_cents
        return {"balance_in_cents": cents, "balance": self.money(cents)}

    def tier(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /contacts/{uuid}/tier`: a nameless tier object for a contact without one."""
        return self._tier_obj(self.contact(args[0]).tier)

    # -------------------------------------------------------------------------- rewards

    def list_rewards(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /rewards`: active rewards in seed order (unsorted on purpose).

        ASSUMPTION: `contact_uuid` does not drop rewards the contact cannot afford.
        """
        shop_uuid = query.text("shop_uuid", required=False)
        contact_uuid = query.text("contact_uuid", required=False)
        query.check()
        if shop_uuid is not None:
            self.shop(shop_uuid)
        if contact_uuid is not None:
            self.contact(contact_uuid)
        return [self.reward_obj(r) for r in self.rewards.values() if r.is_active]

    def get_reward(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /rewards/{uuid}`."""
        return self.reward_obj(self._reward(args[0]), detail=True)

    def create_reward_reception(self, args: Args, query: Input, body: Input) -> Any:
        """`POST /reward-receptions`: spend points; a pre-redeemable reward becomes collectable."""
        contact_uuid, reward_uuid = body.text("contact_uuid"), body.text("reward_uuid")
        shop_uuid = body.text("shop_uuid")
        value = body.text("contact_identifier_value", required=False)
        body.check()
        contact, shop = self.contact(contact_uuid), self.shop(shop_uuid)
        reward = self._reward(reward_uuid)
        ident = self.identifier(value) if value is not None else None
        if not reward.is_active:
            raise SandboxError(1052, "Reward is not active.")
        if reward.stock is not None and reward.stock <= 0:
            raise SandboxError(1018, "Reward is out of stock.")
        if contact.credits < reward.required_credits:
            raise SandboxError(1017, "Onvoldoende punten.|Insufficient credits.")
        now = self.clock()
        contact.credits -= reward.required_credits
        if reward.stock is not None:
            reward.stock -= 1
        expires = (None if reward.expiration_duration is None
                   else now + timedelta(seconds=reward.expiration_duration))
        rec = Reception("reward_reception", new_uuid(), contact.uuid, shop.uuid,
                        -reward.required_credits, ident.value if ident else None, now,
                        reward=reward.uuid, expires_at=expires)
        self.receptions[rec.uuid] = rec
        if reward.pre_redeemable:
            self.collectables[rec.uuid] = Collectable(rec.uuid, contact.uuid, reward.uuid, now,
                                                      expires)
        return self._reception_obj(rec)

    def _reception(self, uuid: str, kind: str) -> Reception:
        rec = self.receptions.get(uuid)
        if rec is None or rec.kind != kind:
            if kind == "credit_reception":
                raise SandboxError(1028, "Credit reception not found.")
            # ASSUMPTION: only 1003 is documented for reversing an unknown reward reception.
            raise invalid("uuid", "The selected reward reception is invalid.")
        if rec.reversed:
            # ASSUMPTION: a second reverse is refused with 1003.
            raise invalid("uuid", "The reception has already been reversed.")
        return rec

    def reverse_reward_reception(self, args: Args, query: Input, body: Input) -> Any:
        """`POST /reward-receptions/{uuid}/reverse`: points back, as a credit reception."""
        rec = self._reception(args[0], "reward_reception")
        collectable = self.collectables.get(rec.uuid)
        if collectable is not None and collectable.redemption is not None:
            # ASSUMPTION: a collected reward must have its collection reversed first.
            raise invalid("uuid", "The reward has been collected; reverse the collection first.")
        rec.reversed = True
        if collectable is not None:
            collectable.reversed = True
        reward = self.rewards[rec.reward or ""]
        if reward.stock is not None:
            reward.stock += 1
        return self._give_credits(rec.contact, rec.shop, -rec.credits, rec.identifier)

    def _give_credits(self, contact_uuid: str, shop: str, credits: int, ident: str | None,
                      *, unit_value: float | None = None, extra: dict[str, Any] | None = None
                      ) -> dict[str, Any]:
        self.contacts[contact_uuid].credits += credits
        rec = Reception("credit_reception", new_uuid(), contact_uuid, shop, credits, ident,
                        self.clock(), unit_value=unit_value, extra=extra or {})
        self.receptions[rec.uuid] = rec
        return self._reception_obj(rec)

    # -------------------------------------------------------------- collectable rewards

    def list_collectables(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /collectable-rewards?contact_uuid=`: waiting and collected ones."""
        contact_uuid = query.text("contact_uuid")
        query.check()
        contact = self.contact(contact_uuid)
        return [
            {"type": "reward_reception", "uuid": c.uuid, "contact": self.contact_balance(contact),
             "created_at": atom(c.created_at), "title": self.rewards[c.reward].title,
             "reward": self.reward_obj(self.rewards[c.reward]), "expires_at": atom(c.expires_at),
             "has_been_collected": c.redemption is not None}
            for c in self.collectables.values() if c.contact == contact.uuid and not c.reversed
        ]

    def collect(self, args: Args, query: Input, body: Input) -> Any:
        """`PUT /collectable-rewards/collect/{uuid}`: the slim `{uuid, status: COLLECTED}`."""
        c = self.collectables.get(args[0])
        now = self.clock()
        if c is None or c.reversed or (c.expires_at is not None and c.expires_at <= now):
            raise SandboxError(80300, "Collectable reward not found or expired.")
        if c.redemption is not None:
            # ASSUMPTION: collecting twice is refused with 1003.
            raise invalid("uuid", "The reward has already been collected.")
        c.redemption = new_uuid()
        self.collections[c.redemption] = c.uuid
        return {"uuid": c.redemption, "status": "COLLECTED"}

    def reverse_collect(self, args: Args, query: Input, body: Input) -> Any:
        """`POST /collectable-rewards/{redemption uuid}/reverse`: collectable again."""
        c = self.collectables.get(self.collections.get(args[0], ""))
        if c is None or c.redemption != args[0]:
            # ASSUMPTION: no error is documented; 80300 like an unknown collectable.
            raise SandboxError(80300, "Collectable reward redemption not found.")
        c.redemption = None
        return {"uuid": args[0], "status": "REVERSED"}

    # ---------------------------------------------------------------- credit receptions

    def _check_unit(self, src: Input) -> None:
        """Validate `src` (1003) and its optional `unit_name` (60007 unless the program's)."""
        unit_name = src.text("unit_name", required=False)
        src.check()
        default = (self.seed.loyalty_program.get("unit") or {}).get("name", "purchase_amount")
        if unit_name is not None and unit_name != default:
            raise SandboxError(60007, "Unit not found.")

    def create_credit_reception(self, args: Args, query: Input, body: Input) -> Any:
        """`POST /credit-receptions`: `credits` as given, or 1 per whole unit of `unit_value`."""
        shop_uuid, contact_uuid = body.text("shop_uuid"), body.text("contact_uuid")
        credits = body.integer("credits", required=False)
        unit_value = body.number("unit_value", required=False)
        value = body.text("contact_identifier_value", required=False)
        pos = body.text("pos_transaction_uuid", required=False)
        if credits is None and unit_value is None and not body.errors:
            body.fail("credits", "The credits field is required when unit value is not present.")
        self._check_unit(body)
        shop, contact = self.shop(shop_uuid), self.contact(contact_uuid)
        ident = self.identifier(value) if value is not None else None
        amount = credits if credits is not None else math.trunc(unit_value or 0)
        extra = {"pos_transaction_uuid": pos} if pos else {}
        return self._give_credits(contact.uuid, shop.uuid, amount, ident.value if ident else None,
                                  unit_value=unit_value, extra=extra)

    def calculate_credits(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /credit-receptions/calculate`: the credits `unit_value` would earn."""
        shop_uuid, unit_value = query.text("shop_uuid"), query.number("unit_value")
        contact_uuid = query.text("contact_uuid", required=False)
        self._check_unit(query)
        self.shop(shop_uuid)
        if contact_uuid is not None:
            self.contact(contact_uuid)
        return {"credits": math.trunc(unit_value or 0)}

    def reverse_credit_reception(self, args: Args, query: Input, body: Input) -> Any:
        """`POST /credit-receptions/{uuid}/reverse`: a new reception with negated credits."""
        rec = self._reception(args[0], "credit_reception")
        rec.reversed = True
        back = None if rec.unit_value is None else -rec.unit_value
        result = self._give_credits(rec.contact, rec.shop, -rec.credits, rec.identifier,
                                    unit_value=back)
        self.receptions[result["uuid"]].reversed = True
        return result


# (method, path pattern relative to /api/v3/oauth/clients, State method or "orders.<method>");
# "{}" is one path segment. More specific patterns come first.
ROUTES: Final[tuple[tuple[str, str, str], ...]] = (
    ("GET", "", "health"),
    ("GET", "/shops", "list_shops"),
    ("GET", "/shops/{}", "get_shop"),
    ("GET", "/loyalty-program", "loyalty_program"),
    ("GET", "/units", "units"),
    ("GET", "/contact-identifiers/find", "find_identifier"),
    ("GET", "/contacts/find-one-by", "find_contact"),
    ("GET", "/contacts/find-or-create", "find_or_create_contact"),
    ("GET", "/contacts/{}", "get_contact"),
    ("GET", "/contacts/{}/credit-balance", "credit_balance"),
    ("GET", "/contacts/{}/prepaid-balance", "prepaid_balance"),
    ("GET", "/contacts/{}/tier", "tier"),
    ("GET", "/rewards", "list_rewards"),
    ("GET", "/rewards/{}", "get_reward"),
    ("POST", "/reward-receptions", "create_reward_reception"),
    ("POST", "/reward-receptions/{}/reverse", "reverse_reward_reception"),
    ("GET", "/collectable-rewards", "list_collectables"),
    ("PUT", "/collectable-rewards/collect/{}", "collect"),
    ("POST", "/collectable-rewards/{}/reverse", "reverse_collect"),
    ("GET", "/vouchers", "voucher_calls.list_vouchers"),
    ("GET", "/vouchers/find", "voucher_calls.find_voucher"),
    ("POST", "/vouchers/redeem", "voucher_calls.redeem_voucher"),
    ("POST", "/vouchers/{}/validate", "voucher_calls.validate_voucher"),
    ("POST", "/vouchers/{}/lock", "voucher_calls.lock_voucher"),
    ("POST", "/vouchers/{}/release", "voucher_calls.release_voucher"),
    ("POST", "/vouchers/{}/reverse", "voucher_calls.reverse_voucher"),
    ("GET", "/giftcards/find-one-by", "payments.find_giftcard"),
    ("GET", "/giftcards/{}", "payments.get_giftcard"),
    ("POST", "/giftcard-transactions", "payments.create_giftcard_tx"),
    ("GET", "/giftcard-transactions/{}", "payments.get_giftcard_tx"),
    ("POST", "/giftcard-transactions/{}/reverse", "payments.reverse_giftcard_tx"),
    ("POST", "/prepaid-transactions", "payments.create_prepaid_tx"),
    ("POST", "/prepaid-transactions/{}/reverse", "payments.reverse_prepaid_tx"),
    ("POST", "/credit-receptions", "create_credit_reception"),
    ("GET", "/credit-receptions/calculate", "calculate_credits"),
    ("POST", "/credit-receptions/{}/reverse", "reverse_credit_reception"),
    ("POST", "/orders/create-and-process", "orders.create_and_process"),
    ("GET", "/orders/find", "orders.find"),
    ("GET", "/orders", "orders.list_orders"),
    ("POST", "/orders", "orders.create"),
    ("GET", "/orders/{}", "orders.get"),
    ("POST", "/orders/{}/process", "orders.process"),
    ("POST", "/order-returns/create-and-process", "orders.create_return"),
)

Handler = Callable[[Args, Input, Input], Any]


def handler(state: State, name: str) -> Handler:
    """The bound handler named in `ROUTES`."""
    owner: Any = state
    for part in name.split("."):
        owner = getattr(owner, part)
    result: Handler = owner
    return result
