"""Resolve a classified code through Leat into the body of an `events/identification`.

Round trips (Leat's contact, giftcard, voucher docs): a loyalty card costs two: find the
identifier, then the contact (balances and tier are on the contact), its rewards, its
collectable rewards and its vouchers concurrently (and the program's name for points, once).
A giftcard costs one; a voucher one, or two when it is linked to a contact and can be
validated. A Loyalty Token URL costs none: its signature is checked locally when the account
secret is configured.

A value that could be a card number or a giftcard hash (`Code.alternatives`) is asked of
Leat rather than guessed: the identifier lookup first; only when Leat does not know the
identifier (60003), the giftcard lookup. A giftcard found so is reported with
`Resolution.kind` GIFTCARD; unknown to both, it stays an unknown loyalty card.

The whole resolution has a deadline: past it, or when Leat is unreachable, the result is
`offline` and unverified (docs/architecture.md); calls still running finish in the
background, bounded by the client's own timeouts and the pool size.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qsl, urlsplit

from appliance.codes import Code, Kind
from appliance.errors import LeatAuthError, LeatError, LeatRejected, LeatUnavailable
from appliance.leat.token import verify
from appliance.privacy import mask_email

log = logging.getLogger(__name__)

T = TypeVar("T")
RESOLVABLE = frozenset({Kind.LOYALTY_CARD, Kind.GIFTCARD, Kind.VOUCHER, Kind.LOYALTY_TOKEN})
DEFAULT_POINTS_NAME = "points"
IDENTIFIER_NOT_FOUND = 60003
GIFTCARD_NOT_FOUND = 5001

# Leat error codes -> identification status (Leat's error-handling docs)
STATUS_BY_CODE: Mapping[int, str] = {
    60003: "unknown", 60004: "inactive", 60011: "inactive", 55031: "unknown",
    80004: "unknown", 80005: "redeemed", 80006: "expired", 80012: "inactive",
    80014: "inactive", 80017: "locked", 80019: "redeemed", 80020: "inactive",
    5001: "unknown", 5002: "expired", 7010: "inactive",
}
VOUCHER_STATUS = {"REDEEMED": "redeemed", "EXPIRED": "expired", "LOCKED": "locked",
                  "DEACTIVATED": "inactive", "INACTIVE": "inactive"}


class LeatLike(Protocol):
    """The `LeatClient` calls the resolver uses."""

    def find_contact_identifier(self, value: str) -> Any: ...
    def get_contact(self, uuid: str) -> Any: ...
    def list_rewards(self, *, contact_uuid: str | None = None,
                     shop_uuid: str | None = None) -> list[Any]: ...
    def list_collectable_rewards(self, contact_uuid: str) -> list[Any]: ...
    def list_vouchers(self, *, contact_uuid: str) -> list[Any]: ...
    def get_loyalty_program(self) -> Any: ...
    def find_giftcard(self, hash: str) -> Any: ...
    def find_voucher(self, code: str) -> Any: ...
    def validate_voucher(self, uuid: str, *, shop_uuid: str | None = None,
                         contact_uuid: str | None = None) -> Any: ...
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Resolution:
    """What Leat said; the parts map 1:1 onto identification.schema.json."""

    status: str
    verified: bool
    reason: dict[str, Any] | None = None
    contact: dict[str, Any] | None = None
    giftcard: dict[str, Any] | None = None
    voucher: dict[str, Any] | None = None
    token: dict[str, Any] | None = None
    kind: Kind | None = None  # what Leat found, when the code could be more than one kind

    @property
    def ok(self) -> bool:
        """True when the code is usable."""
        return self.status == "ok"


OFFLINE = Resolution(status="offline", verified=False)


class _Deadline(Exception):
    """The resolution ran out of time."""


@dataclass
class _Clock:
    """Remaining time until the deadline."""

    deadline: float
    now: Callable[[], float] = field(default=time.monotonic)

    def left(self) -> float:
        return self.deadline - self.now()


class Resolver:
    """Resolves codes through Leat with bounded concurrency and a deadline."""

    def __init__(
        self,
        client: LeatLike,
        *,
        shop_uuid: str | None,
        deadline_s: float = 1.5,
        account_secret: str | None = None,
        max_parallel: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._shop_uuid = shop_uuid
        self._deadline_s = deadline_s
        self._account_secret = account_secret
        self._clock = clock
        self._pool = ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="leat")
        self._points_name: str | None = None
        self._lock = threading.Lock()
        self.reachable: bool | None = None  # last known, for the retained state

    def close(self) -> None:
        """Stop the worker pool and close the client (calls in flight end on their timeouts)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def resolve(self, code: Code) -> Resolution:
        """Resolve one code; never raises for Leat trouble (that is `offline`)."""
        if code.kind is Kind.LOYALTY_TOKEN:
            return self._token(code)
        clock = _Clock(self._clock() + self._deadline_s, self._clock)
        try:
            if code.kind is Kind.LOYALTY_CARD:
                result = self._loyalty_card(
                    code.value, clock, or_giftcard=Kind.GIFTCARD in code.alternatives
                )
            elif code.kind is Kind.GIFTCARD:
                result = self._giftcard(code.value, clock)
            elif code.kind is Kind.VOUCHER:
                result = self._voucher(code.value, clock)
            else:
                raise ValueError(f"cannot resolve a code of kind {code.kind}")
        except _Deadline:
            log.warning("Leat slower than %.1f s: %s published unverified",
                        self._deadline_s, code.kind.value)
            self.reachable = False
            return OFFLINE
        except LeatAuthError:
            log.error("Leat refused our credentials (401): check the token or OAuth client")
            self.reachable = False
            return OFFLINE
        except LeatUnavailable as exc:
            log.warning("Leat unavailable (%s): %s published unverified", exc, code.kind.value)
            self.reachable = False
            return OFFLINE
        self.reachable = True
        return result

    # -- the three flows -------------------------------------------------------------------

    def _loyalty_card(self, value: str, clock: _Clock, *, or_giftcard: bool = False
                      ) -> Resolution:
        try:
            identifier = self._wait(self._pool.submit(self._client.find_contact_identifier, value),
                                    clock)
        except LeatRejected as exc:
            if or_giftcard and exc.code == IDENTIFIER_NOT_FOUND:
                giftcard = self._giftcard(value, clock)
                if (giftcard.reason or {}).get("code") != GIFTCARD_NOT_FOUND:
                    return replace(giftcard, kind=Kind.GIFTCARD)
            return _refused(exc)
        if not identifier.active:
            return Resolution("inactive", True, {"code": 60004, "message": "identifier inactive"})
        if identifier.contact is None:
            return Resolution(
                "inactive", True,
                {"code": 60011, "message": "identifier not linked to a contact"},
            )
        return self._contact(identifier.contact.uuid, clock)

    def resolve_contact(self, uuid: str) -> Resolution:
        """The contact block of `uuid` (as a card identifies it); `offline` on Leat trouble."""
        return self._guarded(lambda clock: self._contact(uuid, clock), "contact")

    def resolve_voucher(self, code: str) -> Resolution:
        """The voucher block of `code` (as a scan identifies it); `offline` on Leat trouble."""
        return self._guarded(lambda clock: self._voucher(code, clock), "voucher")

    def _guarded(self, flow: Callable[[_Clock], Resolution], what: str) -> Resolution:
        clock = _Clock(self._clock() + self._deadline_s, self._clock)
        try:
            return flow(clock)
        except (_Deadline, LeatAuthError, LeatUnavailable) as exc:
            log.warning("Leat unavailable for a %s (%s)", what, exc or "deadline")
            return OFFLINE

    def _contact(self, uuid: str, clock: _Clock) -> Resolution:
        calls: dict[str, Future[Any]] = {
            "contact": self._pool.submit(self._client.get_contact, uuid),
            "rewards": self._pool.submit(
                self._client.list_rewards, contact_uuid=uuid, shop_uuid=self._shop_uuid
            ),
            "collectables": self._pool.submit(self._client.list_collectable_rewards, uuid),
            "vouchers": self._pool.submit(self._client.list_vouchers, contact_uuid=uuid),
        }
        if self._points_name is None:
            calls["program"] = self._pool.submit(self._client.get_loyalty_program)
        try:
            contact = self._wait(calls["contact"], clock)
        except LeatRejected as exc:
            return _refused(exc)
        rewards = self._optional(calls["rewards"], clock, "rewards") or []
        collectables = self._optional(calls["collectables"], clock, "collectable rewards") or []
        vouchers = self._optional(calls["vouchers"], clock, "vouchers") or []
        if "program" in calls:
            program = self._optional(calls["program"], clock, "loyalty program")
            if program is not None:
                with self._lock:
                    self._points_name = program.custom_credit_name or DEFAULT_POINTS_NAME
        points = int(contact.credit_balance or 0)
        return Resolution(
            "ok",
            True,
            contact={
                "uuid": contact.uuid,
                "first_name": contact.first_name or None,
                "email_masked": mask_email(contact.email) if contact.email else None,
                "tier": contact.tier.name if contact.tier is not None else None,
                "points": points,
                "points_name": self._points_name or DEFAULT_POINTS_NAME,
                "prepaid_balance_cents": int(contact.prepaid_balance_cents or 0),
                "rewards": [_reward(r, points) for r in rewards if r.is_active],
                "offers": [
                    *(_voucher_offer(v) for v in vouchers if v.status == "ACTIVE"),
                    *(_collectable_offer(c) for c in collectables if not c.has_been_collected),
                ],
            },
        )

    def _giftcard(self, value: str, clock: _Clock) -> Resolution:
        try:
            card = self._wait(self._pool.submit(self._client.find_giftcard, value), clock)
        except LeatRejected as exc:
            return _refused(exc)
        expires = card.expiration_date
        if not card.active:
            status = "inactive"
        elif expires is not None and expires <= datetime.now(UTC):
            status = "expired"
        elif card.amount_in_cents <= 0:
            status = "empty"
        else:
            status = "ok"
        return Resolution(status, True, giftcard=giftcard_block(card, usable=status in (
            "ok", "empty")))

    def _voucher(self, code: str, clock: _Clock) -> Resolution:
        try:
            voucher = self._wait(self._pool.submit(self._client.find_voucher, code), clock)
        except LeatRejected as exc:
            return _refused(exc)
        status = VOUCHER_STATUS.get(str(voucher.status).upper(), "ok")
        expires = voucher.expiration_date
        if status == "ok" and expires is not None and expires <= datetime.now(UTC):
            status = "expired"
        reason = None
        if status == "ok" and voucher.contact is not None:
            try:
                self._wait(self._pool.submit(
                    self._client.validate_voucher, voucher.uuid,
                    shop_uuid=self._shop_uuid, contact_uuid=voucher.contact.uuid,
                ), clock)
            except LeatRejected as exc:
                status, reason = STATUS_BY_CODE.get(exc.code, "inactive"), _reason(exc)
        return Resolution(status, True, reason, voucher=voucher_block(voucher, status == "ok"))

    def _token(self, code: Code) -> Resolution:
        params = dict(parse_qsl(urlsplit(code.text).query))
        body = {
            "unique_id": params.get("unique_id", ""),
            "unit_name": params.get("unit_name", ""),
            "unit_value": params.get("unit_value", ""),
            "signature_checked": self._account_secret is not None,
        }
        if self._account_secret is None:
            return Resolution("ok", False, token=body)
        if verify(params, self._account_secret):
            return Resolution("ok", True, token=body)
        return Resolution("invalid", True, {"code": 0, "message": "signature does not match"},
                          token=body)

    # -- helpers ---------------------------------------------------------------------------

    def _wait(self, future: Future[T], clock: _Clock) -> T:
        left = clock.left()
        if left <= 0:
            raise _Deadline
        try:
            return future.result(timeout=left)
        except FutureTimeout:
            raise _Deadline from None

    def _optional(self, future: Future[T], clock: _Clock, what: str) -> T | None:
        """A part the identification can do without: refused or failed -> None (logged)."""
        try:
            return self._wait(future, clock)
        except LeatRejected as exc:  # its message may quote personal data: log the code only
            log.warning("Leat refused %s (code %d)", what, exc.code)
        except (LeatUnavailable, _Deadline) as exc:
            log.warning("no %s from Leat in time (%s)", what, exc or "deadline")
        except LeatError as exc:
            log.warning("Leat %s failed: %s", what, exc)
        return None


def voucher_block(voucher: Any, valid: bool) -> dict[str, Any]:
    """The `voucher` block of an identification (and of the voucher commands' replies)."""
    promotion = voucher.promotion
    return {
        "uuid": voucher.uuid,
        "code": voucher.code,
        "status": str(voucher.status),
        "name": voucher.name,
        "expires_at": _iso(voucher.expiration_date),
        "valid": valid,
        "contact_uuid": voucher.contact.uuid if voucher.contact is not None else None,
        "redemptions_remaining": voucher.redemptions_remaining,
        "promotion": promotion.name if promotion is not None else None,
        "attributes": _scalars(promotion.attributes if promotion is not None else {}),
    }


def _refused(exc: LeatRejected) -> Resolution:
    return Resolution(STATUS_BY_CODE.get(exc.code, "unknown"), True, _reason(exc))


def _reason(exc: LeatRejected) -> dict[str, Any]:
    return {"code": exc.code, "message": exc.leat_message[:200]}



def giftcard_block(card: Any, *, usable: bool) -> dict[str, Any]:
    """The `giftcard` block of an identification: what a till needs to take, sell or load it.

    `sold`: a PHYSICAL card with balance 0 is unsold (Leat's POS guide checks exactly that
    before selling one: a spent card looks the same), a DIGITAL one exists once sold; null
    for another type. `max_amount_cents` is its program's limit on the balance (a load above
    it is Leat's 5008), `upgradeable` whether it can be loaded at all (5006), and
    `loadable_cents` what a load may add now (0 when it cannot be loaded, null when Leat did
    not say the limit). `usable`: neither inactive nor expired.
    """
    balance = int(card.amount_in_cents)
    kind = card.type
    limit = card.max_amount_in_cents
    if not usable or card.upgradeable is False:
        loadable: int | None = 0
    elif limit is None or card.upgradeable is None:
        loadable = None
    else:
        loadable = max(int(limit) - balance, 0)
    return {
        "uuid": card.uuid,
        "balance_cents": balance,
        "active": bool(card.active),
        "expires_at": _iso(card.expiration_date),
        "type": kind,
        "sold": (balance != 0) if kind == "PHYSICAL" else (True if kind == "DIGITAL" else None),
        "upgradeable": card.upgradeable,
        "max_amount_cents": limit,
        "loadable_cents": loadable,
    }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat(timespec="seconds")


def _scalars(attributes: Mapping[str, object]) -> dict[str, Any]:
    """Custom attributes with scalar values only (the contract allows nothing else)."""
    return {
        str(k)[:64]: v for k, v in attributes.items()
        if isinstance(v, str | int | float | bool) or v is None
    }


def _reward(reward: Any, points: int) -> dict[str, Any]:
    return {
        "uuid": reward.uuid,
        "title": reward.title,
        "required_credits": int(reward.required_credits),
        "affordable": points >= int(reward.required_credits),
        "pre_redeemable": bool(reward.pre_redeemable),
        "attributes": _scalars(reward.attributes),
    }


def _voucher_offer(voucher: Any) -> dict[str, Any]:
    promotion = voucher.promotion
    return {
        "type": "voucher",
        "uuid": voucher.uuid,
        "title": voucher.name or (promotion.name if promotion is not None else voucher.code),
        "code": voucher.code,
        "expires_at": _iso(voucher.expiration_date),
        "attributes": _scalars(promotion.attributes if promotion is not None else {}),
    }


def _collectable_offer(collectable: Any) -> dict[str, Any]:
    reward = getattr(collectable, "reward", None)
    return {
        "type": "collectable_reward",
        "uuid": collectable.uuid,
        "title": collectable.title,
        "code": None,
        "expires_at": _iso(collectable.expires_at),
        "attributes": _scalars(reward.attributes if reward is not None else {}),
    }
