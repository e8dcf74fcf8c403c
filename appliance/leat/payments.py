"""Typed, validated results of the Leat calls that spend or check stored value at the till:
vouchers, giftcards and prepaid balances (docs/leat-assumptions.md; read through fields.py,
as models.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from appliance.leat.fields import EMPTY, Fields, no_attributes, upper
from appliance.leat.models import ContactRef, Promotion


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
    attributes: Mapping[str, object] = field(default_factory=no_attributes, compare=False)

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
            attributes=MappingProxyType(dict(attributes.raw)) if attributes else EMPTY,
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
            type=upper(f.opt_str("type")),
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
