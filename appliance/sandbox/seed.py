"""The Leat sandbox's records and its seed file: loading, validation, and fresh state.

A seed is a JSON object (see `seed.json` and docs/sandbox.md). Every problem is
reported at once, each with its path (`seed.contacts[0].email: ...`), as a `SeedError`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from appliance.errors import ConfigError

log = logging.getLogger(__name__)

BUNDLED_SEED = Path(__file__).with_name("seed.json")

T = TypeVar("T")


class SeedError(ConfigError):
    """The sandbox seed is invalid; `problems` names every bad field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(problems)
        self.args = ("invalid sandbox seed:\n  " + "\n  ".join(self.problems),)


# ------------------------------------------------------------------------------- records


@dataclass
class Shop:
    """A shop (business profile)."""

    id: int
    uuid: str
    name: str
    type: str
    reference: str | None


@dataclass
class Tier:
    """A loyalty tier."""

    uuid: str
    name: str
    description: str | None
    position: int


@dataclass
class Contact:
    """A contact and its balances."""

    id: int
    uuid: str
    email: str
    firstname: str
    lastname: str
    credits: int
    prepaid_cents: int
    tier: str | None  # tier uuid


@dataclass
class Identifier:
    """A contact identifier (loyalty card); `contact` is a contact uuid or None."""

    value: str
    name: str
    active: bool
    contact: str | None


@dataclass
class Reward:
    """A reward; `attributes` are its custom attributes (flattened in responses)."""

    id: int
    uuid: str
    title: str
    description: str | None
    reward_type: str
    required_credits: int
    pre_redeemable: bool
    expiration_duration: int | None
    is_active: bool
    stock: int | None
    attributes: dict[str, Any]
    claim_limit: int | None = None  # receptions per contact (reversed ones not counted)


@dataclass
class Collectable:
    """A collectable reward (the reception of a pre-redeemable reward)."""

    uuid: str
    contact: str
    reward: str
    created_at: datetime
    expires_at: datetime | None
    redemption: str | None = None  # collectable-reward-redemption uuid while collected
    reversed: bool = False  # the reward reception was reversed


@dataclass
class Promotion:
    """A promotion; its custom attributes carry the discount rules."""

    uuid: str
    name: str
    description: str | None
    attributes: dict[str, Any]


@dataclass
class VoucherLock:
    """A lock on a voucher; it lapses one hour after `locked_at`."""

    release_key: str
    locked_at: datetime


@dataclass
class Redemption:
    """One redemption of a voucher."""

    uuid: str
    created_at: datetime
    contact: str | None
    reversed: bool = False


@dataclass
class Voucher:
    """A voucher; `status` is the stored status (LOCKED and EXPIRED are computed)."""

    id: int
    uuid: str
    code: str
    name: str
    description: str | None
    status: str
    promotion: str
    contact: str | None
    expiration_date: datetime | None
    activation_date: datetime | None
    redeemed_at: datetime | None
    lock: VoucherLock | None = None
    redemptions: list[Redemption] = field(default_factory=list)


@dataclass
class GiftcardProgram:
    """A giftcard program."""

    uuid: str
    name: str
    max_amount_in_cents: int
    expiration_days: int | None


@dataclass
class Giftcard:
    """A giftcard; `amount_in_cents` is its balance, `transactions` its history (uuids)."""

    id: int
    uuid: str
    hash: str
    type: str
    active: bool
    upgradeable: bool
    amount_in_cents: int
    expiration_date: datetime | None
    program: str
    transactions: list[str] = field(default_factory=list)


@dataclass
class Seed:
    """A validated seed: credentials and the initial records."""

    personal_access_token: str
    oauth_clients: dict[str, str]  # client id -> secret
    currency: str
    loyalty_program: dict[str, Any]
    shops: list[Shop]
    tiers: list[Tier]
    contacts: list[Contact]
    identifiers: list[Identifier]
    rewards: list[Reward]
    collectables: list[Collectable]
    promotions: list[Promotion]
    vouchers: list[Voucher]
    giftcard_programs: list[GiftcardProgram]
    giftcards: list[Giftcard]


# ------------------------------------------------------------------------------ loading


def read_seed(source: Path | Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The raw seed: the bundled demo seed (None), a JSON file, or a mapping as given."""
    if source is None:
        source = BUNDLED_SEED
    if isinstance(source, Path):
        try:
            raw = json.loads(source.read_text(encoding="utf-8"))
        except OSError as exc:
            raise SeedError([f"{source}: cannot read ({exc.strerror or exc})"]) from exc
        except json.JSONDecodeError as exc:
            raise SeedError([f"{source}: not JSON ({exc})"]) from exc
        if not isinstance(raw, dict):
            raise SeedError([f"{source}: the seed must be a JSON object"])
        return raw
    return source


def parse_seed(raw: Mapping[str, Any]) -> Seed:
    """Validate `raw` into fresh records; raises `SeedError` listing every problem."""
    r = _Reader(raw, "seed", [])
    program = r.obj("loyalty_program")
    if program is not None:
        program.text("name")
    seed = Seed(
        personal_access_token=r.text("personal_access_token"),
        oauth_clients={
            c.text("client_id"): c.text("client_secret") for c in r.items("oauth_clients")
        },
        currency=r.text("currency", "EUR"),
        loyalty_program=dict(program.raw) if program is not None else {},
        shops=[_shop(x) for x in r.items("shops")],
        tiers=[_tier(x) for x in r.items("tiers")],
        contacts=[_contact(x) for x in r.items("contacts")],
        identifiers=[_identifier(x) for x in r.items("contact_identifiers")],
        rewards=[_reward(x) for x in r.items("rewards")],
        collectables=[_collectable(x) for x in r.items("collectable_rewards", required=False)],
        promotions=[_promotion(x) for x in r.items("promotions", required=False)],
        vouchers=[_voucher(x) for x in r.items("vouchers", required=False)],
        giftcard_programs=[_program(x) for x in r.items("giftcard_programs", required=False)],
        giftcards=[_giftcard(x) for x in r.items("giftcards", required=False)],
    )
    _check_references(seed, r.problems)
    if r.problems:
        raise SeedError(r.problems)
    return seed


def _shop(r: _Reader) -> Shop:
    return Shop(r.integer("id"), r.text("uuid"), r.text("name"), r.choice("type", _SHOP_TYPES),
                r.opt_text("reference"))


def _tier(r: _Reader) -> Tier:
    return Tier(r.text("uuid"), r.text("name"), r.opt_text("description"), r.integer("position"))


def _contact(r: _Reader) -> Contact:
    return Contact(
        id=r.integer("id"), uuid=r.text("uuid"), email=r.text("email"),
        firstname=r.text("firstname", ""), lastname=r.text("lastname", ""),
        credits=r.integer("credit_balance", 0),
        prepaid_cents=r.integer("prepaid_balance_in_cents", 0),
        tier=r.opt_text("tier"),
    )


def _identifier(r: _Reader) -> Identifier:
    return Identifier(r.text("value"), r.text("name", "Loyalty Card"), r.boolean("active", True),
                      r.opt_text("contact"))


def _reward(r: _Reader) -> Reward:
    attributes = r.obj("attributes", required=False)
    return Reward(
        id=r.integer("id"), uuid=r.text("uuid"), title=r.text("title"),
        description=r.opt_text("description"),
        reward_type=r.choice("reward_type", ("PHYSICAL", "DIGITAL"), "PHYSICAL"),
        required_credits=r.integer("required_credits"),
        pre_redeemable=r.boolean("pre_redeemable", False),
        expiration_duration=r.opt_integer("expiration_duration"),
        is_active=r.boolean("is_active", True), stock=r.opt_integer("stock"),
        attributes=dict(attributes.raw) if attributes is not None else {},
        claim_limit=r.opt_integer("claim_limit"),
    )


def _collectable(r: _Reader) -> Collectable:
    return Collectable(r.text("uuid"), r.text("contact"), r.text("reward"),
                       r.time("created_at") or _EPOCH, r.time("expires_at", required=False))


def _promotion(r: _Reader) -> Promotion:
    attributes = r.obj("attributes", required=False)
    return Promotion(r.text("uuid"), r.text("name"), r.opt_text("description"),
                     dict(attributes.raw) if attributes is not None else {})


def _voucher(r: _Reader) -> Voucher:
    return Voucher(
        id=r.integer("id"), uuid=r.text("uuid"), code=r.text("code"), name=r.text("name"),
        description=r.opt_text("description"), status=r.choice("status", _VOUCHER_STATUSES),
        promotion=r.text("promotion"), contact=r.opt_text("contact"),
        expiration_date=r.time("expiration_date", required=False),
        activation_date=r.time("activation_date", required=False),
        redeemed_at=r.time("redeemed_at", required=False),
    )


def _program(r: _Reader) -> GiftcardProgram:
    return GiftcardProgram(r.text("uuid"), r.text("name"), r.integer("max_amount_in_cents"),
                           r.opt_integer("expiration_days"))


def _giftcard(r: _Reader) -> Giftcard:
    return Giftcard(
        id=r.integer("id"), uuid=r.text("uuid"), hash=r.text("hash"),
        type=r.choice("type", ("PHYSICAL", "DIGITAL")), active=r.boolean("active", True),
        upgradeable=r.boolean("upgradeable", True), amount_in_cents=r.integer("amount_in_cents"),
        expiration_date=r.time("expiration_date", required=False), program=r.text("program"),
    )


_SHOP_TYPES = ("physical", "web")
_VOUCHER_STATUSES = ("ACTIVE", "REDEEMED", "EXPIRED", "DEACTIVATED", "INACTIVE")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _check_references(seed: Seed, problems: list[str]) -> None:
    """Unique keys and references between records."""

    def unique(name: str, values: list[str]) -> set[str]:
        seen: set[str] = set()
        for i, value in enumerate(values):
            if value in seen:
                problems.append(f"seed.{name}[{i}]: duplicate {value!r}")
            seen.add(value)
        return seen

    def refer(name: str, values: list[str | None], known: set[str], what: str) -> None:
        for i, value in enumerate(values):
            if value is not None and value not in known:
                problems.append(f"seed.{name}[{i}]: unknown {what} {value!r}")

    unique("shops", [s.uuid for s in seed.shops])
    tiers = unique("tiers", [t.uuid for t in seed.tiers])
    contacts = unique("contacts", [c.uuid for c in seed.contacts])
    unique("contacts", [c.email.casefold() for c in seed.contacts])
    unique("contact_identifiers", [i.value for i in seed.identifiers])
    rewards = unique("rewards", [r.uuid for r in seed.rewards])
    promotions = unique("promotions", [p.uuid for p in seed.promotions])
    unique("vouchers", [v.code for v in seed.vouchers])
    unique("vouchers", [v.uuid for v in seed.vouchers])
    programs = unique("giftcard_programs", [p.uuid for p in seed.giftcard_programs])
    unique("giftcards", [g.hash for g in seed.giftcards])
    refer("contacts", [c.tier for c in seed.contacts], tiers, "tier")
    refer("contact_identifiers", [i.contact for i in seed.identifiers], contacts, "contact")
    refer("collectable_rewards", [c.contact for c in seed.collectables], contacts, "contact")
    refer("collectable_rewards", [c.reward for c in seed.collectables], rewards, "reward")
    refer("vouchers", [v.promotion for v in seed.vouchers], promotions, "promotion")
    refer("vouchers", [v.contact for v in seed.vouchers], contacts, "contact")
    refer("giftcards", [g.program for g in seed.giftcards], programs, "giftcard program")
    if not seed.shops and not problems:
        problems.append("seed.shops: at least one shop is needed")


class _Reader:
    """Typed access to one seed object; problems are collected with their paths."""

    def __init__(self, raw: Mapping[str, Any], where: str, problems: list[str]) -> None:
        self.raw, self.where, self.problems = raw, where, problems

    def _get(self, key: str, required: bool) -> Any:
        value = self.raw.get(key)
        if value is None and required:
            self.problems.append(f"{self.where}.{key}: missing")
        return value

    def _typed(self, key: str, ok: Callable[[Any], bool], what: str, default: T, required: bool
               ) -> Any:
        value = self._get(key, required)
        if value is None:
            return default
        if not ok(value):
            self.problems.append(f"{self.where}.{key}: expected {what}, got {value!r}")
            return default
        return value

    def text(self, key: str, default: str | None = None) -> str:
        """A required string (or `default` when absent)."""
        value = self._typed(key, lambda v: isinstance(v, str) and v != "", "a non-empty string",
                            default or "", default is None)
        return str(value)

    def opt_text(self, key: str) -> str | None:
        """An optional string."""
        value = self._typed(key, lambda v: isinstance(v, str), "a string or null", None, False)
        return value if isinstance(value, str) else None

    def integer(self, key: str, default: int | None = None) -> int:
        """A required integer (or `default` when absent)."""
        return int(self._typed(key, _is_int, "an integer", default or 0, default is None))

    def opt_integer(self, key: str) -> int | None:
        """An optional integer."""
        value = self._typed(key, _is_int, "an integer or null", None, False)
        return int(value) if value is not None else None

    def boolean(self, key: str, default: bool) -> bool:
        """A boolean with a default."""
        return bool(self._typed(key, lambda v: isinstance(v, bool), "true or false", default,
                                False))

    def choice(self, key: str, options: tuple[str, ...], default: str | None = None) -> str:
        """One of `options`."""
        value = self.text(key, default)
        if value and value not in options:
            self.problems.append(f"{self.where}.{key}: expected one of {', '.join(options)}")
        return value

    def time(self, key: str, required: bool = True) -> datetime | None:
        """An ISO-8601 timestamp (UTC when it has no offset)."""
        value = self._typed(key, lambda v: isinstance(v, str), "an ISO-8601 string", None,
                            required)
        if value is None:
            return None
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            self.problems.append(f"{self.where}.{key}: not an ISO-8601 time: {value!r}")
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    def obj(self, key: str, required: bool = True) -> _Reader | None:
        """A nested object."""
        value = self._typed(key, lambda v: isinstance(v, dict), "an object", None, required)
        return _Reader(value, f"{self.where}.{key}", self.problems) if value is not None else None

    def items(self, key: str, required: bool = True) -> list[_Reader]:
        """A list of objects."""
        value = self._typed(key, lambda v: isinstance(v, list), "a list", [], required)
        readers = []
        for i, item in enumerate(value):
            if isinstance(item, dict):
                readers.append(_Reader(item, f"{self.where}.{key}[{i}]", self.problems))
            else:
                self.problems.append(f"{self.where}.{key}[{i}]: expected an object")
        return readers


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
