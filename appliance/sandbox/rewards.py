"""Rewards, reward and credit receptions, collectables and loyalty transactions (sandbox)."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final

from appliance.sandbox.input import Input, Page, SandboxError, atom, invalid, new_uuid
from appliance.sandbox.seed import Collectable
from appliance.sandbox.world import Args, Reception, World


class Rewards:
    """The reward and credit calls over a `World` (called with its lock held)."""

    def __init__(self, world: World) -> None:
        self.world = world

    # -------------------------------------------------------------------------- rewards

    def list_rewards(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /rewards`: active rewards in seed order (unsorted on purpose).

        ASSUMPTION: `contact_uuid` does not drop rewards the contact cannot afford.
        """
        shop_uuid = query.text("shop_uuid", required=False)
        contact_uuid = query.text("contact_uuid", required=False)
        query.check()
        if shop_uuid is not None:
            self.world.shop(shop_uuid)
        if contact_uuid is not None:
            self.world.contact(contact_uuid)
        return [self.world.reward_obj(r) for r in self.world.rewards.values() if r.is_active]

    def get_reward(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /rewards/{uuid}`."""
        return self.world.reward_obj(self.world.reward(args[0]), detail=True)

    def create_reward_reception(self, args: Args, query: Input, body: Input) -> Any:
        """`POST /reward-receptions`: spend points; a pre-redeemable reward becomes collectable."""
        contact_uuid, reward_uuid = body.text("contact_uuid"), body.text("reward_uuid")
        shop_uuid = body.text("shop_uuid")
        value = body.text("contact_identifier_value", required=False)
        body.check()
        contact, shop = self.world.contact(contact_uuid), self.world.shop(shop_uuid)
        reward = self.world.reward(reward_uuid)
        ident = self.world.identifier(value) if value is not None else None
        if not reward.is_active:
            raise SandboxError(1052, "Reward is not active.")
        if reward.stock is not None and reward.stock <= 0:
            raise SandboxError(1018, "The stock on this reward is empty.")
        if reward.claim_limit is not None and self._claims(contact.uuid, reward.uuid) >= (
            reward.claim_limit
        ):
            # ASSUMPTION: the claim limit counts per contact ("your claim limit", LD), reversed
            # receptions excluded.
            raise SandboxError(1019, "You have reached your claim limit on this reward.")
        if contact.credits < reward.required_credits:
            raise SandboxError(1017, "Onvoldoende punten.|Insufficient credits.")
        now = self.world.clock()
        contact.credits -= reward.required_credits
        if reward.stock is not None:
            reward.stock -= 1
        expires = (None if reward.expiration_duration is None
                   else now + timedelta(seconds=reward.expiration_duration))
        rec = Reception("reward_reception", new_uuid(), contact.uuid, shop.uuid,
                        -reward.required_credits, ident.value if ident else None, now,
                        reward=reward.uuid, expires_at=expires)
        self.world.receptions[rec.uuid] = rec
        if reward.pre_redeemable:
            self.world.collectables[rec.uuid] = Collectable(rec.uuid, contact.uuid, reward.uuid,
                                                            now, expires)
        return self.world.reception_obj(rec)

    def _claims(self, contact: str, reward: str) -> int:
        """How many live receptions of `reward` the contact has."""
        return sum(1 for r in self.world.receptions.values()
                   if r.kind == "reward_reception" and r.contact == contact
                   and r.reward == reward and not r.reversed)

    def _reception(self, uuid: str, kind: str) -> Reception:
        rec = self.world.receptions.get(uuid)
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
        collectable = self.world.collectables.get(rec.uuid)
        if collectable is not None and collectable.redemption is not None:
            # ASSUMPTION: a collected reward must have its collection reversed first.
            raise invalid("uuid", "The reward has been collected; reverse the collection first.")
        rec.reversed = True
        if collectable is not None:
            collectable.reversed = True
        reward = self.world.rewards[rec.reward or ""]
        if reward.stock is not None:
            reward.stock += 1
        return self.world.give_credits(rec.contact, rec.shop, -rec.credits, rec.identifier)

    # -------------------------------------------------------------- collectable rewards

    def list_collectables(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /collectable-rewards?contact_uuid=`: waiting and collected ones."""
        contact_uuid = query.text("contact_uuid")
        query.check()
        w = self.world
        contact = w.contact(contact_uuid)
        return [
            {"type": "reward_reception", "uuid": c.uuid, "contact": w.contact_balance(contact),
             "created_at": atom(c.created_at), "title": w.rewards[c.reward].title,
             "reward": w.reward_obj(w.rewards[c.reward]), "expires_at": atom(c.expires_at),
             "has_been_collected": c.redemption is not None}
            for c in w.collectables.values() if c.contact == contact.uuid and not c.reversed
        ]

    def collect(self, args: Args, query: Input, body: Input) -> Any:
        """`PUT /collectable-rewards/collect/{uuid}`: the slim `{uuid, status: COLLECTED}`."""
        c = self.world.collectables.get(args[0])
        now = self.world.clock()
        if c is None or c.reversed or (c.expires_at is not None and c.expires_at <= now):
            raise SandboxError(80300, "Collectable reward not found or expired.")
        if c.redemption is not None:
            # ASSUMPTION: collecting twice is refused with 1003.
            raise invalid("uuid", "The reward has already been collected.")
        c.redemption = new_uuid()
        self.world.collections[c.redemption] = c.uuid
        return {"uuid": c.redemption, "status": "COLLECTED"}

    def reverse_collect(self, args: Args, query: Input, body: Input) -> Any:
        """`POST /collectable-rewards/{redemption uuid}/reverse`: collectable again."""
        c = self.world.collectables.get(self.world.collections.get(args[0], ""))
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
        default = (self.world.seed.loyalty_program.get("unit") or {}).get("name", "purchase_amount")
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
        shop, contact = self.world.shop(shop_uuid), self.world.contact(contact_uuid)
        ident = self.world.identifier(value) if value is not None else None
        amount = credits if credits is not None else math.trunc(unit_value or 0)
        extra = {"pos_transaction_uuid": pos} if pos else {}
        return self.world.give_credits(contact.uuid, shop.uuid, amount,
                                       ident.value if ident else None,
                                       unit_value=unit_value, extra=extra)

    def calculate_credits(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /credit-receptions/calculate`: the credits `unit_value` would earn."""
        shop_uuid, unit_value = query.text("shop_uuid"), query.number("unit_value")
        contact_uuid = query.text("contact_uuid", required=False)
        self._check_unit(query)
        self.world.shop(shop_uuid)
        if contact_uuid is not None:
            self.world.contact(contact_uuid)
        return {"credits": math.trunc(unit_value or 0)}

    def reverse_credit_reception(self, args: Args, query: Input, body: Input) -> Any:
        """`POST /credit-receptions/{uuid}/reverse`: a new reception with negated credits."""
        rec = self._reception(args[0], "credit_reception")
        rec.reversed = True
        back = None if rec.unit_value is None else -rec.unit_value
        result = self.world.give_credits(rec.contact, rec.shop, -rec.credits, rec.identifier,
                                    unit_value=back)
        self.world.receptions[result["uuid"]].reversed = True
        return result

    # ------------------------------------------------------------- loyalty transactions

    def list_transactions(self, args: Args, query: Input, body: Input) -> Any:
        """`GET /loyalty-transactions`: reward and credit receptions, filtered and paginated.

        Filters (PD `loyalty-transactions`; LD; official PHP SDK `LoyaltyTransactionsResource
        ::list`): `contact_uuid`, `shop_uuid`, `type` (`credit_receptions` or
        `reward_receptions`), `limit` (default 10, at most 100), `page`, and (LD only) `sort`
        (`created_at` / `-created_at`) and `created_at[gt|gte|lt|lte]`.
        Newest first without `sort` and each item's `contact.credit_balance` the balance now,
        as in the recorded answer of Leat's OpenAPI file (leat-docs `leat-openapi.yaml`: ten
        items by descending `created_at`, all with the same balance; its slim `meta`).
        ASSUMPTION: the singular type names the items carry are accepted too; points booked
        by orders are not listed (no source shows an order's points among them).
        """
        contact_uuid = query.text("contact_uuid", required=False)
        shop_uuid = query.text("shop_uuid", required=False)
        kind = query.choice("type", _TX_TYPES, required=False)
        limit = query.integer("limit", required=False, minimum=1) or 10
        page = query.integer("page", required=False, minimum=1) or 1
        sort = query.choice("sort", ("CREATED_AT", "-CREATED_AT"), required=False)
        if limit > MAX_TRANSACTIONS:
            query.fail("limit", f"The limit may not be greater than {MAX_TRANSACTIONS}.")
        bounds = query.obj("created_at", required=False)
        limits = ({op: bounds.time(op) for op in ("gt", "gte", "lt", "lte")}
                  if bounds is not None else {})
        query.check()
        w = self.world
        if contact_uuid is not None:
            w.contact(contact_uuid)
        if shop_uuid is not None:
            w.shop(shop_uuid)
        wanted = None if kind is None else kind.lower().removesuffix("s")
        found = [
            r for r in w.receptions.values()
            if (contact_uuid is None or r.contact == contact_uuid)
            and (shop_uuid is None or r.shop == shop_uuid)
            and (wanted is None or r.kind == wanted)
            and all(t is None or _COMPARE[op](r.created_at, t) for op, t in limits.items())
        ]
        if sort != "CREATED_AT":  # equal times keep creation order, reversed when descending
            found.reverse()
        found.sort(key=lambda r: r.created_at, reverse=sort != "CREATED_AT")
        return Page([w.reception_obj(r) for r in found], page, limit,
                    "/api/v3/oauth/clients/loyalty-transactions", slim=True)


MAX_TRANSACTIONS: Final = 100
_TX_TYPES: Final = ("CREDIT_RECEPTIONS", "REWARD_RECEPTIONS", "CREDIT_RECEPTION",
                    "REWARD_RECEPTION")
_COMPARE: Final[dict[str, Callable[[datetime, datetime], bool]]] = {
    "gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le,
}
