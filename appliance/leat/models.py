"""Typed, validated results of Leat API calls (docs/leat-assumptions.md).

Every value the appliance uses is read from Leat's JSON through `Fields`, which checks its
type. A required field that is missing or of the wrong type raises
`LeatUnavailable("malformed response from Leat: <path>", ambiguous=True)`: the call may have
been carried out, but we cannot tell what Leat did. Extra fields are ignored, and the
documented variants are accepted (reward `type`/`reward_type`, slim or full collect
responses, `result.type` in any casing, giftcard transactions with nested `card{}`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from appliance.errors import LeatUnavailable

log = logging.getLogger(__name__)

POINTS_TRANSACTION = "POINTS_TRANSACTION"

_EMPTY: Mapping[str, object] = MappingProxyType({})


def _no_attributes() -> Mapping[str, object]:
    return _EMPTY


def malformed(where: str) -> LeatUnavailable:
    """The error for a response that lacks `where` or has it in the wrong type."""
    return LeatUnavailable(f"malformed response from Leat: {where}", ambiguous=True)


class Fields:
    """Typed access to one JSON object of a response; `where` names it in errors."""

    def __init__(self, raw: object, where: str = "data") -> None:
        if not isinstance(raw, dict):
            raise malformed(where)
        self.raw: dict[str, Any] = raw
        self.where = where

    def _path(self, key: str) -> str:
        return f"{self.where}.{key}"

    def has(self, key: str) -> bool:
        """True when `key` is present and not null."""
        return self.raw.get(key) is not None

    def req_str(self, key: str) -> str:
        """A required string."""
        value = self.raw.get(key)
        if not isinstance(value, str):
            raise malformed(self._path(key))
        return value

    def opt_str(self, key: str) -> str | None:
        """An optional string (absent or null gives None)."""
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise malformed(self._path(key))
        return value

    def req_int(self, key: str) -> int:
        """A required integer (an integral JSON float such as 50.0 is accepted)."""
        value = self.opt_int(key)
        if value is None:
            raise malformed(self._path(key))
        return value

    def opt_int(self, key: str) -> int | None:
        """An optional integer."""
        value = self.raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool):
            raise malformed(self._path(key))
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise malformed(self._path(key))

    def req_bool(self, key: str) -> bool:
        """A required boolean."""
        value = self.raw.get(key)
        if not isinstance(value, bool):
            raise malformed(self._path(key))
        return value

    def opt_bool(self, key: str, default: bool) -> bool:
        """An optional boolean with a default for absent or null."""
        value = self.raw.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise malformed(self._path(key))
        return value

    def opt_datetime(self, key: str) -> datetime | None:
        """An optional ISO-8601 timestamp; one without an offset is taken as UTC."""
        text = self.opt_str(key)
        if text is None or not text.strip():
            return None
        try:
            value = datetime.fromisoformat(text.strip())
        except ValueError:
            raise malformed(self._path(key)) from None
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

    def req_obj(self, key: str) -> Fields:
        """A required nested object."""
        return Fields(self.raw.get(key), self._path(key))

    def opt_obj(self, key: str) -> Fields | None:
        """An optional nested object; absent, null, `{}` or `[]` (PHP's empty array) give None."""
        value = self.raw.get(key)
        if value is None or value in ({}, []):
            return None
        return Fields(value, self._path(key))

    def array(self, key: str) -> list[object]:
        """An optional array (absent or null gives [])."""
        value = self.raw.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise malformed(self._path(key))
        return value

    def extras(self, known: frozenset[str]) -> Mapping[str, object]:
        """The keys not in `known` (Leat flattens custom attributes onto objects), read-only."""
        values = {k: v for k, v in self.raw.items() if k not in known}
        nested = self.raw.get("attributes")
        if isinstance(nested, dict):
            values.update(nested)
        return MappingProxyType(values) if values else _EMPTY


def parse_list(raw: object, where: str = "data") -> list[Fields]:
    """Each object of a JSON array."""
    if not isinstance(raw, list):
        raise malformed(where)
    return [Fields(item, f"{where}[{i}]") for i, item in enumerate(raw)]


def _upper(value: str | None) -> str | None:
    return value.upper() if value is not None else None


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
    attributes: Mapping[str, object] = field(default_factory=_no_attributes, compare=False)

    @classmethod
    def parse(cls, f: Fields) -> Reward:
        """From a reward object (`reward_type` or `type`, `is_active` or `active`)."""
        kind = f.opt_str("reward_type") or f.opt_str("type")
        active = f.opt_bool("is_active", f.opt_bool("active", True))
        return cls(
            uuid=f.req_str("uuid"),
            title=f.req_str("title"),
            required_credits=f.req_int("required_credits"),
            reward_type=_upper(kind),
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
    attributes: Mapping[str, object] = field(default_factory=_no_attributes, compare=False)

    @classmethod
    def parse(cls, f: Fields) -> Promotion:
        """From a promotion object (custom attributes flattened or under `attributes`)."""
        return cls(
            uuid=f.req_str("uuid"), name=f.opt_str("name"), attributes=f.extras(_PROMOTION_KEYS)
        )


@dataclass(frozen=True)
class Voucher:
    """A voucher; `status` is ACTIVE, REDEEMED, EXPIRED, DEACTIVATED, INACTIVE or LOCKED."""

    uuid: str
    code: str
    status: str
    name: str | None
    expiration_date: datetime | None
    redeemed_at: datetime | None
    is_redeemed: bool
    redemptions_remaining: int | None
    contact: ContactRef | None
    promotion: Promotion | None
    attributes: Mapping[str, object] = field(default_factory=_no_attributes, compare=False)

    @classmethod
    def parse(cls, f: Fields) -> Voucher:
        """From a voucher object."""
        status = f.req_str("status").upper()
        contact = f.opt_obj("contact")
        promotion = f.opt_obj("promotion")
        attributes = f.opt_obj("attributes")
        return cls(
            uuid=f.req_str("uuid"),
            code=f.req_str("code"),
            status=status,
            name=f.opt_str("name"),
            expiration_date=f.opt_datetime("expiration_date"),
            redeemed_at=f.opt_datetime("redeemed_at"),
            is_redeemed=f.opt_bool("is_redeemed", status == "REDEEMED"),
            redemptions_remaining=f.opt_int("redemptions_remaining"),
            contact=ContactRef.parse(contact) if contact else None,
            promotion=Promotion.parse(promotion) if promotion else None,
            attributes=MappingProxyType(dict(attributes.raw)) if attributes else _EMPTY,
        )


@dataclass(frozen=True)
class VoucherLock:
    """A voucher lock (or its release); redeem with `release_key` while locked."""

    voucher_uuid: str
    status: str
    release_key: str | None
    system_release_at: datetime | None
    locked_at: datetime | None = None

    @classmethod
    def parse(cls, f: Fields) -> VoucherLock:
        """From `{voucher{uuid, status}, lock{release_key, system_release_at, ...}}`."""
        voucher = f.req_obj("voucher")
        lock = f.opt_obj("lock")
        return cls(
            voucher_uuid=voucher.req_str("uuid"),
            status=voucher.req_str("status").upper(),
            release_key=lock.opt_str("release_key") if lock else None,
            system_release_at=lock.opt_datetime("system_release_at") if lock else None,
            locked_at=lock.opt_datetime("locked_at") if lock else None,
        )


@dataclass(frozen=True)
class VoucherRedemption:
    """A redeemed voucher; reverse it by `redemption_uuid` (newer Leat) or the voucher uuid."""

    voucher: Voucher
    redemption_uuid: str | None

    @classmethod
    def parse(cls, f: Fields) -> VoucherRedemption:
        """From the voucher object plus `voucher_redemption{uuid}`, or `{voucher, ...}`."""
        body = f.req_obj("voucher") if not f.has("code") and f.has("voucher") else f
        redemption = f.opt_obj("voucher_redemption")
        return cls(
            voucher=Voucher.parse(body),
            redemption_uuid=redemption.req_str("uuid") if redemption else None,
        )


@dataclass(frozen=True)
class VoucherReversal:
    """A reversed voucher redemption; `reversed_uuid` is the uuid Leat accepted."""

    reversed_uuid: str
    voucher: Voucher | None


@dataclass(frozen=True)
class Giftcard:
    """A giftcard; `amount_in_cents` is its current balance."""

    uuid: str
    hash: str
    active: bool
    amount_in_cents: int
    expiration_date: datetime | None
    type: str | None
    upgradeable: bool | None = None  # can be loaded (5006 otherwise)
    max_amount_in_cents: int | None = None  # its program's limit on the balance (5008)
    program_name: str | None = None

    @classmethod
    def parse(cls, f: Fields) -> Giftcard:
        """From a giftcard object (with its `giftcard_program{}` when Leat includes it)."""
        program = f.opt_obj("giftcard_program")
        upgradeable = f.raw.get("upgradeable")
        return cls(
            uuid=f.req_str("uuid"),
            hash=f.req_str("hash"),
            active=f.req_bool("active"),
            amount_in_cents=f.req_int("amount_in_cents"),
            expiration_date=f.opt_datetime("expiration_date"),
            type=_upper(f.opt_str("type")),
            upgradeable=upgradeable if isinstance(upgradeable, bool) else None,
            max_amount_in_cents=program.opt_int("max_amount_in_cents") if program else None,
            program_name=program.opt_str("name") if program else None,
        )


@dataclass(frozen=True)
class GiftcardTransaction:
    """A giftcard payment (negative) or top-up; Leat does not say the balance after it."""

    uuid: str
    amount_in_cents: int
    giftcard_uuid: str | None
    shop_uuid: str | None
    type: str | None
    created_at: datetime | None
    id: int | None = None  # Leat's list items may show `uuid: null`, never a null id

    @classmethod
    def parse(cls, f: Fields) -> GiftcardTransaction:
        """From a transaction with nested `card{}`/`shop{}` (the SDK's `card_id` is ignored)."""
        card = f.opt_obj("card")
        shop = f.opt_obj("shop")
        return cls(
            uuid=f.req_str("uuid"),
            amount_in_cents=f.req_int("amount_in_cents"),
            giftcard_uuid=card.opt_str("uuid") if card else None,
            shop_uuid=shop.opt_str("uuid") if shop else None,
            type=f.opt_str("type"),
            created_at=f.opt_datetime("created_at"),
            id=f.opt_int("id"),
        )


@dataclass(frozen=True)
class ListedGiftcardTransaction:
    """One item of List Giftcard Transactions (LD): its `uuid` may be null there.

    LD's example lists `{id, uuid: null, amount_in_cents, type, settled, card{id, uuid:
    null}, shop{id, uuid, name}, settlements, created_at}`: an item without a uuid is still
    a transaction that happened (a reconciler must count it, never skip it).
    """

    id: int | None
    uuid: str | None
    amount_in_cents: int
    giftcard_uuid: str | None
    shop_uuid: str | None
    settled: bool
    created_at: datetime | None

    @classmethod
    def parse(cls, f: Fields) -> ListedGiftcardTransaction:
        """From a list item."""
        card, shop = f.opt_obj("card"), f.opt_obj("shop")
        return cls(
            id=f.opt_int("id"),
            uuid=f.opt_str("uuid"),
            amount_in_cents=f.req_int("amount_in_cents"),
            giftcard_uuid=card.opt_str("uuid") if card else None,
            shop_uuid=shop.opt_str("uuid") if shop else None,
            settled=f.opt_bool("settled", False),
            created_at=f.opt_datetime("created_at"),
        )


@dataclass(frozen=True)
class PrepaidTransaction:
    """A prepaid payment (negative) or top-up, with the contact's balance after it.

    `contact_uuid` is set on list items only (LD's List Prepaid Transactions example
    carries `contact{uuid, email}`; the create and reverse answers do not).
    """

    uuid: str
    amount_in_cents: int
    balance_after_cents: int | None
    created_at: datetime | None
    shop_uuid: str | None = None
    contact_uuid: str | None = None

    @classmethod
    def parse(cls, f: Fields) -> PrepaidTransaction:
        """From a prepaid transaction object (an answer or a list item)."""
        balance, shop, contact = f.opt_obj("prepaid_balance"), f.opt_obj("shop"), f.opt_obj(
            "contact")
        return cls(
            uuid=f.req_str("uuid"),
            amount_in_cents=f.req_int("amount_in_cents"),
            balance_after_cents=balance.opt_int("balance_in_cents") if balance else None,
            created_at=f.opt_datetime("created_at"),
            shop_uuid=shop.opt_str("uuid") if shop else None,
            contact_uuid=contact.opt_str("uuid") if contact else None,
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
            status=_upper(f.opt_str("status")),
            payment_status=_upper(f.opt_str("payment_status")),
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
        kind = _upper(f.opt_str("type"))
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
            status=_upper(ret.opt_str("status")),
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
