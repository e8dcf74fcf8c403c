"""Vouchers in the Leat sandbox: list, find, validate, lock, release, redeem, reverse.

Locks last one hour and lapse lazily; reverse accepts a voucher or a redemption uuid.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Final

from appliance.sandbox.input import Input, Page, SandboxError, atom, invalid, new_uuid
from appliance.sandbox.seed import Redemption, Voucher, VoucherLock
from appliance.sandbox.world import Args, World

LOCK_DURATION: Final = timedelta(hours=1)
STATUSES: Final = ("ACTIVE", "REDEEMED", "EXPIRED", "DEACTIVATED", "INACTIVE", "LOCKED")
MAX_PAGE: Final = 500  # ASSUMPTION: the largest `limit` List Vouchers accepts


class Vouchers:
    """The voucher calls over a `World` (called with its lock held)."""

    def __init__(self, world: World) -> None:
        self.world = world

    def _voucher(self, uuid: str) -> Voucher:
        found = self.world.vouchers.get(uuid)
        if found is None:
            raise SandboxError(80004, "Voucher not found.")
        return found

    def _voucher_status(self, v: Voucher) -> str:
        """The status now: locks lapse after an hour, dates expire (computed lazily)."""
        if v.status != "ACTIVE":
            return v.status
        now = self.world.clock()
        if v.expiration_date is not None and v.expiration_date <= now:
            return "EXPIRED"
        if v.lock is not None and now >= v.lock.locked_at + LOCK_DURATION:
            v.lock = None
        return "LOCKED" if v.lock is not None else "ACTIVE"

    def _voucher_obj(self, v: Voucher) -> dict[str, Any]:
        status = self._voucher_status(v)
        live = [r for r in v.redemptions if not r.reversed]
        times = len(live) or (1 if v.status == "REDEEMED" else 0)
        promotion = self.world.promotions[v.promotion]
        contact = self.world.contacts.get(v.contact or "")
        return {
            "uuid": v.uuid, "code": v.code, "status": status, "name": v.name,
            "description": v.description, "expiration_date": atom(v.expiration_date),
            "activation_date": atom(v.activation_date), "redeemed_at": atom(v.redeemed_at),
            "is_redeemed": status == "REDEEMED", "redemptions_remaining": max(0, 1 - times),
            "times_redeemed": times, "total_redemptions_allowed": 1,
            "attributes": dict(promotion.attributes),
            "contact": self.world.contact_ref(contact) if contact else None,
            "promotion": {**promotion.attributes, "uuid": promotion.uuid, "name": promotion.name,
                          "description": promotion.description, "voucher_limit": None,
                          "limit_per_contact": None, "expiration_duration": None},
        }

    def find_voucher(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /vouchers/find?code=`."""
        code = query.text("code")
        query.check()
        return self._voucher_obj(self._by_code(code or ""))

    def list_vouchers(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /vouchers`: filtered by `contact_uuid`, `promotion_uuid`, `status`; paginated.

        ASSUMPTION: `limit` defaults to 30 (at most 500), `page` to 1; the status filter
        uses the status now (LOCKED and EXPIRED computed).
        """
        contact_uuid = query.text("contact_uuid", required=False)
        promotion_uuid = query.text("promotion_uuid", required=False)
        status = query.choice("status", STATUSES, required=False)
        limit = query.integer("limit", required=False, minimum=1) or 30
        page = query.integer("page", required=False, minimum=1) or 1
        if limit > MAX_PAGE:
            query.fail("limit", f"The limit may not be greater than {MAX_PAGE}.")
        query.check()
        if contact_uuid is not None:
            self.world.contact(contact_uuid)
        found = [
            self._voucher_obj(v) for v in self.world.vouchers.values()
            if (contact_uuid is None or v.contact == contact_uuid)
            and (promotion_uuid is None or v.promotion == promotion_uuid)
        ]
        found = [v for v in found if status is None or v["status"] == status]
        return Page(found, page, limit, "/api/v3/oauth/clients/vouchers")

    def _by_code(self, code: str) -> Voucher:
        found = next((v for v in self.world.vouchers.values() if v.code == code), None)
        if found is None:
            raise SandboxError(80004, "Voucher not found.")
        return found

    def _usable(self, v: Voucher, release_key: str | None = None) -> None:
        """Raise the Leat error that stops `v` being used (a matching key passes a lock)."""
        status = self._voucher_status(v)
        refusals = {"REDEEMED": (80005, "Voucher has already been redeemed."),
                    "EXPIRED": (80006, "Voucher has expired."),
                    "DEACTIVATED": (80012, "Voucher is deactivated."),
                    "INACTIVE": (80014, "Voucher is inactive.")}
        if status in refusals:
            raise SandboxError(*refusals[status])
        if status == "LOCKED" and (v.lock is None or v.lock.release_key != release_key):
            raise SandboxError(80017, "Voucher is locked.")

    def validate_voucher(self, args: Args, query: Input, body: Input) -> Any:
        """`POST /vouchers/{uuid}/validate`.

        ASSUMPTION: the response is `{"valid": true, "voucher": <voucher>}`; an unusable
        voucher gets the error Redeem would give (a locked one 80017), and a voucher of
        another contact 1003.
        """
        v = self._voucher(args[0])
        shop_uuid = body.text("shop_uuid")
        contact_uuid = body.text("contact_uuid", required=v.contact is None)
        body.check()
        self.world.shop(shop_uuid)
        if contact_uuid is not None:
            contact = self.world.contact(contact_uuid)
            if v.contact is not None and v.contact != contact.uuid:
                raise invalid("contact_uuid", "The voucher belongs to another contact.")
        self._usable(v)
        return {"valid": True, "voucher": self._voucher_obj(v)}

    def lock_voucher(self, args: Args, query: Input, body: Input) -> Any:
        """`POST /vouchers/{uuid}/lock`: reserved for an hour, released lazily after that."""
        v = self._voucher(args[0])
        self._usable(v)
        now = self.world.clock()
        v.lock = VoucherLock(new_uuid(), now)
        return {"voucher": {"uuid": v.uuid, "status": "LOCKED"},
                "lock": {"release_key": v.lock.release_key, "locked_at": atom(now),
                         "unlocked_at": None, "system_release_at": atom(now + LOCK_DURATION)}}

    def release_voucher(self, args: Args, query: Input, body: Input) -> Any:
        """`POST /vouchers/{uuid}/release` with the lock's `release_key`.

        ASSUMPTION: releasing an unlocked voucher, or with a wrong key, is 1003.
        """
        v = self._voucher(args[0])
        key = body.text("release_key")
        body.check()
        status = self._voucher_status(v)
        if status in ("REDEEMED", "EXPIRED"):
            self._usable(v)
        if v.lock is None:
            raise invalid("release_key", "The voucher is not locked.")
        if v.lock.release_key != key:
            raise invalid("release_key", "The release key is invalid.")
        lock, v.lock = v.lock, None
        return {"voucher": {"uuid": v.uuid, "status": "ACTIVE"},
                "lock": {"release_key": lock.release_key, "locked_at": atom(lock.locked_at),
                         "unlocked_at": atom(self.world.clock()), "system_release_at": None}}

    def redeem_voucher(self, args: Args, query: Input, body: Input) -> Any:
        """`POST /vouchers/redeem`: the voucher plus `voucher_redemption{uuid, created_at}`.

        ASSUMPTION: `shop_uuid` is required (LD 2026; PD 2025 had it optional).
        """
        code, shop_uuid = body.text("code"), body.text("shop_uuid")
        contact_uuid = body.text("contact_uuid", required=False)
        key = body.text("release_key", required=False)
        body.check()
        v = self._by_code(code or "")
        if v.contact is None and contact_uuid is None:
            raise invalid("contact_uuid", "The contact uuid field is required when the voucher "
                          "has no contact.")
        self.world.shop(shop_uuid)
        contact = self.world.contact(contact_uuid) if contact_uuid is not None else None
        self._usable(v, key)
        now = self.world.clock()
        redemption = Redemption(new_uuid(), now, contact.uuid if contact else v.contact)
        v.status, v.redeemed_at, v.lock = "REDEEMED", now, None
        v.redemptions.append(redemption)
        return {**self._voucher_obj(v),
                "voucher_redemption": {"uuid": redemption.uuid, "created_at": atom(now)}}

    def reverse_voucher(self, args: Args, query: Input, body: Input) -> Any:
        """`POST /vouchers/{uuid}/reverse` by voucher uuid or voucher-redemption uuid.

        ASSUMPTION: the response is the voucher object (ACTIVE again); a voucher that is
        not redeemed is refused with 1003.
        """
        v = self.world.vouchers.get(args[0])
        redemption: Redemption | None = None
        if v is None:
            for candidate in self.world.vouchers.values():
                redemption = next((r for r in candidate.redemptions if r.uuid == args[0]), None)
                if redemption is not None:
                    v = candidate
                    break
        if v is None:
            raise SandboxError(80004, "Voucher not found.")
        if redemption is None:
            redemption = next((r for r in reversed(v.redemptions) if not r.reversed), None)
        if v.status != "REDEEMED" or (redemption is not None and redemption.reversed):
            raise invalid("uuid", "The voucher redemption is not active.")
        if redemption is not None:
            redemption.reversed = True
        v.status, v.redeemed_at = "ACTIVE", None
        return self._voucher_obj(v)
