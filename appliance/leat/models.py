"""Typed, validated results of Leat API calls (docs/leat-assumptions.md): contacts, tiers,
rewards, loyalty transactions, promotions, orders, the shop and the program (vouchers,
giftcards and prepaid balances: payments.py).

Every value the appliance uses is read from Leat's JSON through `Fields` (fields.py), which
checks its type: a required field missing or of the wrong type raises `LeatUnavailable`
(ambiguous: the call may have been carried out). Extra fields are ignored, and the
documented variants are accepted (reward `type`/`reward_type`, slim or full collect
responses, `result.type` in any casing, giftcard transactions with nested `card{}`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from appliance.errors import LeatUnavailable
from appliance.leat.fields import Fields, no_attributes, upper

log = logging.getLogger(__name__)

POINTS_TRANSACTION = "POINTS_TRANSACTION"


@dataclass(frozen=True)
class ContactRef:
    """A contact as other objects reference it."""

    uuid: str
    email: str | None = None

    @classmethod
    def parse(cls, f: Fields) -> ContactRef:
        """From `{uuid, email}`."""
        return cls(uuid=f.req_str("uuid"), email=f.opt_str("email"))


@dataclass(frozen=True)
class ContactIdentifier:
    """A loyalty card / identifier; `contact` is None when nobody is linked to it yet."""

    value: str
    name: str | None
    active: bool
    contact: ContactRef | None

    @classmethod
    def parse(cls, f: Fields) -> ContactIdentifier:
        """From Find Contact Identifier's `data`."""
        contact = f.opt_obj("contact")
        return cls(
            value=f.req_str("value"),
            name=f.opt_str("name"),
            active=f.req_bool("active"),
            contact=ContactRef.parse(contact) if contact else None,
        )


@dataclass(frozen=True)
class Tier:
    """A contact's loyalty tier."""

    uuid: str | None
    name: str
    description: str | None = None
    position: int | None = None

    @classmethod
    def parse_optional(cls, f: Fields | None) -> Tier | None:
        """From a tier object; None for no tier: null, `{}`/`[]`, or an object without a name
        (Leat's answer for a contact without a tier: the official PHP SDK's
        `src/Mappers/Tiers/TierMapper.php` maps an empty `name` to null)."""
        if f is None:
            return None
        name = f.raw.get("name")
        if name is None or (isinstance(name, str) and not name.strip()):
            return None
        return cls.parse(f)

    @classmethod
    def parse(cls, f: Fields) -> Tier:
        """From a tier object that has a name."""
        return cls(
            uuid=f.opt_str("uuid"),
            name=f.req_str("name"),
            description=f.opt_str("description"),
            position=f.opt_int("position"),
        )


@dataclass(frozen=True)
class Contact:
    """A contact with what the appliance shows: first name, balances, tier."""

    uuid: str
    email: str | None
    first_name: str | None
    credit_balance: int | None
    prepaid_balance_cents: int | None
    tier: Tier | None

    @classmethod
    def parse(cls, f: Fields) -> Contact:
        """From Get Contact / Find One By / Find Or Create."""
        credit = f.opt_obj("credit_balance")
        prepaid = f.opt_obj("prepaid_balance")
        current = f.opt_obj("current_values")
        tier = f.opt_obj("tier")
        balance = credit.opt_int("balance") if credit else None
        if balance is None and current is not None:
            balance = current.opt_int("loyalty_balance")
        return cls(
            uuid=f.req_str("uuid"),
            email=f.opt_str("email"),
            first_name=_first_name(f, current),
            credit_balance=balance,
            prepaid_balance_cents=prepaid.opt_int("balance_in_cents") if prepaid else None,
            tier=Tier.parse_optional(tier),
        )


def _first_name(f: Fields, current: Fields | None) -> str | None:
    """`current_values.firstname`, else the `firstname` entry of `attributes`; "" is None."""
    if current is not None and isinstance(current.raw.get("firstname"), str):
        name: str = current.raw["firstname"].strip()
        if name:
            return name
    for i, item in enumerate(f.array("attributes")):
        entry = Fields(item, f"{f.where}.attributes[{i}]")
        attribute = entry.opt_obj("attribute")
        if attribute is not None and attribute.opt_str("name") == "firstname":
            value = entry.raw.get("value")
            return (value.strip() or None) if isinstance(value, str) else None
    return None


_REWARD_KEYS = frozenset(
    [
        "id",
        "uuid",
        "title",
        "description",
        "type",
        "reward_type",
        "is_active",
        "active",
        "required_credits",
        "media",
        "pre_redeemable",
        "expiration_duration",
        "cost_price",
        "stock",
        "attributes",
    ]
)


@dataclass(frozen=True)
class Reward:
    """A reward to spend points on; `attributes` holds its (flattened) custom attributes."""

    uuid: str
    title: str
    required_credits: int
    reward_type: str | None
    is_active: bool
    pre_redeemable: bool
    description: str | None = None
    attributes: Mapping[str, object] = field(default_factory=no_attributes, compare=False)

    @classmethod
    def parse(cls, f: Fields) -> Reward:
        """From a reward object (`reward_type` or `type`, `is_active` or `active`)."""
        kind = f.opt_str("reward_type") or f.opt_str("type")
        active = f.opt_bool("is_active", f.opt_bool("active", True))
        return cls(
            uuid=f.req_str("uuid"),
            title=f.req_str("title"),
            required_credits=f.req_int("required_credits"),
            reward_type=upper(kind),
            is_active=active,
            pre_redeemable=f.opt_bool("pre_redeemable", False),
            description=f.opt_str("description"),
            attributes=f.extras(_REWARD_KEYS),
        )


@dataclass(frozen=True)
class RewardReception:
    """Points spent on a reward; `credits` is negative, `credit_balance` is the balance after."""

    uuid: str
    type: str | None
    title: str | None
    credits: int | None
    credit_balance: int | None
    reward: Reward | None
    has_been_collected: bool
    expires_at: datetime | None
    created_at: datetime | None
    digital_reward_code: str | None = None

    @classmethod
    def parse(cls, f: Fields) -> RewardReception:
        """From Create Reward Reception (physical or digital)."""
        reward = f.opt_obj("reward") or f.opt_obj("digital_reward")
        code = f.opt_obj("digital_reward_code")
        return cls(
            uuid=f.req_str("uuid"),
            type=f.opt_str("type"),
            title=f.opt_str("title"),
            credits=f.opt_int("credits"),
            credit_balance=_contact_balance(f),
            reward=Reward.parse(reward) if reward else None,
            has_been_collected=f.opt_bool("has_been_collected", False),
            expires_at=f.opt_datetime("expires_at"),
            created_at=f.opt_datetime("created_at"),
            digital_reward_code=code.opt_str("code") if code else None,
        )


def _contact_balance(f: Fields) -> int | None:
    """`contact.credit_balance.balance` of a loyalty transaction (the balance after it)."""
    contact = f.opt_obj("contact")
    credit = contact.opt_obj("credit_balance") if contact else None
    return credit.opt_int("balance") if credit else None


@dataclass(frozen=True)
class CreditReception:
    """Points given (or taken back, when negative), e.g. by reversing a reward reception."""

    uuid: str
    type: str | None
    credits: int | None
    credit_balance: int | None
    created_at: datetime | None

    @classmethod
    def parse(cls, f: Fields) -> CreditReception:
        """From a credit_reception object."""
        return cls(
            uuid=f.req_str("uuid"),
            type=f.opt_str("type"),
            credits=f.opt_int("credits"),
            credit_balance=_contact_balance(f),
            created_at=f.opt_datetime("created_at"),
        )


@dataclass(frozen=True)
class LoyaltyTransaction:
    """One item of List Loyalty Transactions: a reward or a credit reception.

    `type` is the item's own (`reward_reception`, `digital_reward_reception`,
    `credit_reception`; official PHP SDK `Enum/LoyaltyTransactionType`); `credits` is
    negative for points spent; `credit_balance` is the contact's balance as the item carries
    it (whether that is the balance now or after the item is undocumented: compare balances
    from `get_credit_balance`); `reward_uuid` is set for reward receptions.
    """

    uuid: str
    type: str
    credits: int | None
    created_at: datetime | None
    contact_uuid: str | None
    credit_balance: int | None
    shop_uuid: str | None
    reward_uuid: str | None
    contact_identifier: str | None
    has_been_collected: bool

    @classmethod
    def parse(cls, f: Fields) -> LoyaltyTransaction:
        """From an item of `GET /loyalty-transactions`."""
        contact, shop = f.opt_obj("contact"), f.opt_obj("shop")
        reward = f.opt_obj("reward") or f.opt_obj("digital_reward")
        ident = f.opt_obj("contact_identifier")
        return cls(
            uuid=f.req_str("uuid"),
            type=f.req_str("type"),
            credits=f.opt_int("credits"),
            created_at=f.opt_datetime("created_at"),
            contact_uuid=contact.opt_str("uuid") if contact else None,
            credit_balance=_contact_balance(f),
            shop_uuid=shop.opt_str("uuid") if shop else None,
            reward_uuid=reward.opt_str("uuid") if reward else None,
            contact_identifier=ident.opt_str("value") if ident else None,
            has_been_collected=f.opt_bool("has_been_collected", False),
        )


@dataclass(frozen=True)
class CollectableReward:
    """A pre-redeemed reward waiting to be collected; collect it by its `uuid`."""

    uuid: str
    title: str | None
    reward: Reward | None
    has_been_collected: bool
    expires_at: datetime | None
    created_at: datetime | None

    @classmethod
    def parse(cls, f: Fields) -> CollectableReward:
        """From an item of List Collectable Rewards."""
        reward = f.opt_obj("reward")
        return cls(
            uuid=f.req_str("uuid"),
            title=f.opt_str("title"),
            reward=Reward.parse(reward) if reward else None,
            has_been_collected=f.opt_bool("has_been_collected", False),
            expires_at=f.opt_datetime("expires_at"),
            created_at=f.opt_datetime("created_at"),
        )


@dataclass(frozen=True)
class CollectResult:
    """Outcome of collecting (status "COLLECTED") or reversing a collection ("REVERSED")."""

    uuid: str
    status: str

    @classmethod
    def parse(cls, f: Fields) -> CollectResult:
        """From the slim `{uuid, status}` or the older full collectable object."""
        status = f.opt_str("status")
        if status is None:
            status = "COLLECTED" if f.req_bool("has_been_collected") else "PENDING"
        return cls(uuid=f.req_str("uuid"), status=status.upper())


_PROMOTION_KEYS = frozenset(
    [
        "id",
        "uuid",
        "name",
        "description",
        "voucher_limit",
        "limit_per_contact",
        "expiration_duration",
        "attributes",
        "type",
        "status",
        "media",
    ]
)


@dataclass(frozen=True)
class Promotion:
    """The promotion a voucher belongs to; discount rules live in its `attributes`."""

    uuid: str
    name: str | None
    attributes: Mapping[str, object] = field(default_factory=no_attributes, compare=False)

    @classmethod
    def parse(cls, f: Fields) -> Promotion:
        """From a promotion object (custom attributes flattened or under `attributes`)."""
        return cls(
            uuid=f.req_str("uuid"), name=f.opt_str("name"), attributes=f.extras(_PROMOTION_KEYS)
        )


@dataclass(frozen=True)
class Order:
    """An order as Leat stores it (amounts in minor units)."""

    uuid: str
    external_identifier: str
    status: str | None
    payment_status: str | None
    currency: str | None
    total_order_amount: int | None
    contact_uuid: str | None
    created_at: datetime | None

    @classmethod
    def parse(cls, f: Fields) -> Order:
        """From an order object."""
        contact = f.opt_obj("contact")
        return cls(
            uuid=f.req_str("uuid"),
            external_identifier=f.req_str("external_identifier"),
            status=upper(f.opt_str("status")),
            payment_status=upper(f.opt_str("payment_status")),
            currency=f.opt_str("currency"),
            total_order_amount=f.opt_int("total_order_amount"),
            contact_uuid=contact.opt_str("uuid") if contact else None,
            created_at=f.opt_datetime("created_at"),
        )


@dataclass(frozen=True)
class PointsResult:
    """What processing did: `type` (upper-cased) and, for points transactions, the points."""

    type: str | None
    points: int | None
    new_balance: int | None

    @classmethod
    def parse(cls, f: Fields | None) -> PointsResult:
        """From `result`: `{type, data{points, new_balance}}` (or the draft's `points` beside)."""
        if f is None:
            return cls(type=None, points=None, new_balance=None)
        kind = upper(f.opt_str("type"))
        data = f.opt_obj("data")
        source = data if data is not None and (data.has("points") or data.has("new_balance")) else f
        if kind not in (None, POINTS_TRANSACTION):
            log.info("Leat order result of type %s, not points", kind)
            return cls(type=kind, points=None, new_balance=None)
        return cls(
            type=kind, points=source.opt_int("points"), new_balance=source.opt_int("new_balance")
        )


@dataclass(frozen=True)
class OrderResult:
    """A processed order: the order (None from Process Order) and the points it earned."""

    order: Order | None
    points: int | None
    new_balance: int | None
    result_type: str | None = None

    @classmethod
    def parse_created(cls, f: Fields, external_identifier: str) -> OrderResult:
        """From create-and-process's `{order, result}`. An answer without the order, or with
        another order than `external_identifier`, says nothing of what Leat did with ours:
        `LeatUnavailable(ambiguous=True)`, so the order is looked up before it is sent again.
        """
        order = Order.parse(f.req_obj("order"))
        if order.external_identifier != external_identifier:
            raise LeatUnavailable(
                "malformed response from Leat: data.order.external_identifier is another "
                "order's", ambiguous=True)
        return cls.parse(f)

    @classmethod
    def parse(cls, f: Fields) -> OrderResult:
        """From `{order, result}` (create-and-process) or a bare result (process)."""
        if f.has("order") or "result" in f.raw:
            order = Order.parse(f.req_obj("order")) if f.has("order") else None
            result = PointsResult.parse(f.opt_obj("result"))
        else:
            order = None
            result = PointsResult.parse(f)
        return cls(
            order=order,
            points=result.points,
            new_balance=result.new_balance,
            result_type=result.type,
        )


@dataclass(frozen=True)
class ReturnResult:
    """A processed order return and the points correction it caused."""

    uuid: str
    status: str | None
    order_uuid: str | None
    points: int | None
    new_balance: int | None
    result_type: str | None = None

    @classmethod
    def parse(cls, f: Fields) -> ReturnResult:
        """From `{return{uuid, status, order{uuid}}, result}`."""
        ret = f.req_obj("return")
        order = ret.opt_obj("order")
        result = PointsResult.parse(f.opt_obj("result"))
        return cls(
            uuid=ret.req_str("uuid"),
            status=upper(ret.opt_str("status")),
            order_uuid=order.opt_str("uuid") if order else None,
            points=result.points,
            new_balance=result.new_balance,
            result_type=result.type,
        )


@dataclass(frozen=True)
class Shop:
    """A shop (business profile)."""

    uuid: str
    name: str
    type: str | None
    reference: str | None

    @classmethod
    def parse(cls, f: Fields) -> Shop:
        """From a shop object."""
        reference = f.raw.get("reference")
        return cls(
            uuid=f.req_str("uuid"),
            name=f.req_str("name"),
            type=f.opt_str("type"),
            reference=str(reference) if isinstance(reference, str | int) else None,
        )


@dataclass(frozen=True)
class LoyaltyProgram:
    """The account's loyalty program; `custom_credit_name` is what the merchant calls points."""

    name: str
    custom_credit_name: str | None
    id: int | None
    max_amount: int | None
    unit_name: str | None
    unit_label: str | None
    unit_prefix: str | None

    @classmethod
    def parse(cls, f: Fields) -> LoyaltyProgram:
        """From Get Loyalty Program."""
        unit = f.opt_obj("unit")
        return cls(
            name=f.req_str("name"),
            custom_credit_name=f.opt_str("custom_credit_name"),
            id=f.opt_int("id"),
            max_amount=f.opt_int("max_amount"),
            unit_name=unit.opt_str("name") if unit else None,
            unit_label=unit.opt_str("label") if unit else None,
            unit_prefix=unit.opt_str("prefix") if unit else None,
        )
