"""What each command verb asks Leat, and how a value-taking one is reconciled.

A handler returns the reply's `data`, or raises `LeatRejected` / `LeatUnavailable` /
`RequestError`; `runner.py` turns those into replies. A reconciler asks Leat what happened
to an ambiguous call (Leat's answer lost: read timeout, reset after sending, 5xx): it returns
the `data` of the call that did happen, raises `NotApplied` when Leat shows it did not, and
`LeatUnavailable` when it cannot tell yet, `CannotTell` when it never will (money.py).
Nothing here sends a value-taking call twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from appliance.codes import Code, Kind
from appliance.errors import LeatRejected, LeatUnavailable
from appliance.outbox import Outbox
from appliance.outbox_items import Kind as ItemKind
from appliance.outbox_items import State
from appliance.pos.errors import RequestError
from appliance.pos.ledger import Ledger
from appliance.resolve import Resolution, Resolver, voucher_block

if TYPE_CHECKING:
    from appliance.leat.client import LeatClient

CLOCK_SKEW: Final = timedelta(seconds=5)  # Leat's clock against ours, for "since the call"
MAX_PAGES: Final = 3  # of loyalty transactions searched while reconciling


class NotApplied(Exception):
    """Leat shows the ambiguous call did not happen."""


class CannotTell(Exception):
    """Leat shows several transactions the ambiguous call may have made (or one it lists
    without a uuid), and nothing tells them apart: a final outcome (`cannot_tell`), never
    guessed, never retried; `candidates` are their uuids (those Leat lists with one)."""

    def __init__(self, candidates: list[str | None], why: str) -> None:
        super().__init__(why)
        self.candidates = [c for c in candidates if c is not None]
        self.unnamed = len(candidates) - len(self.candidates)


@dataclass
class Context:
    """What a handler may use besides its arguments."""

    client: LeatClient
    resolver: Resolver
    ledger: Ledger
    outbox: Callable[[], Outbox]
    started_at: datetime  # when the call was first sent (UTC)


Handler = Callable[[Context, Mapping[str, Any]], dict[str, Any]]


# ----------------------------------------------------------------------------- reads


def contact_lookup(ctx: Context, args: Mapping[str, Any]) -> dict[str, Any]:
    """By typed card number, e-mail (find-one-by, or find-or-create with `create`) or uuid."""
    if "identifier" in args:
        code = Code(Kind.LOYALTY_CARD, args["identifier"], args["identifier"])
        return _identified(ctx.resolver.resolve(code))
    if "email" in args:
        try:
            find = (ctx.client.find_or_create_contact if args.get("create")
                    else ctx.client.find_contact_by_email)
            contact = find(args["email"])
        except LeatRejected as exc:
            return _identified(Resolution("unknown", True, _reason(exc)))
        return _identified(ctx.resolver.resolve_contact(contact.uuid))
    return _identified(ctx.resolver.resolve_contact(args["contact_uuid"]))


def voucher_validate(ctx: Context, args: Mapping[str, Any]) -> dict[str, Any]:
    """The voucher (found by code, validated for this shop), with the contact it belongs to
    (`voucher.contact_uuid`: "use the contact linked to the voucher")."""
    return _identified(ctx.resolver.resolve_voucher(args["code"]))


def order_get(ctx: Context, args: Mapping[str, Any]) -> dict[str, Any]:
    """The device's outbox state of the order, else whether Leat has it."""
    ext = args["external_identifier"]
    item = ctx.outbox().find(ItemKind.ORDER, ext)
    if item is not None:
        result = item.result or {}
        state = {State.PENDING: "queued", State.SENDING: "queued"}.get(item.state,
                                                                       item.state.value)
        return {
            "external_identifier": ext, "source": "device", "state": state,
            "points": result.get("points") if state == "delivered" else None,
            "leat_uuid": result.get("leat_uuid"),
            "reason": (None if item.state is not State.DEAD else
                       {"code": item.error_code or 0, "message": item.error_message or ""}),
        }
    order = ctx.client.find_order(ext)
    return {
        "external_identifier": ext, "source": "leat",
        "state": "unknown" if order is None else "delivered",
        "points": None, "leat_uuid": None if order is None else order.uuid, "reason": None,
    }


def points_preview(ctx: Context, args: Mapping[str, Any]) -> dict[str, Any]:
    """Leat's order simulate for a basket, or its credit calculation for an amount."""
    if "order" in args:
        body = dict(args["order"])
        if ctx.client.shop_uuid:
            body["business_profile"] = {"uuid": ctx.client.shop_uuid}
        if "contact_uuid" in args:
            body["contact"] = {"uuid": args["contact_uuid"]}
        return {"points": ctx.client.simulate_order(body)}
    return {"points": ctx.client.calculate_credits(
        unit_value=args["unit_value"], contact_uuid=args.get("contact_uuid"))}


# ----------------------------------------------------------------------- value-taking


def reward_redeem(ctx: Context, args: Mapping[str, Any]) -> dict[str, Any]:
    """Spend points on a reward (a reward reception); the balance after is in the reply."""
    reception = ctx.client.create_reward_reception(
        contact_uuid=args["contact_uuid"], reward_uuid=args["reward_uuid"],
        contact_identifier_value=args.get("identifier"),
    )
    points = reception.credit_balance
    if points is None:
        points = _balance(ctx, args["contact_uuid"])
    return {
        "uuid": reception.uuid, "reward_uuid": args["reward_uuid"],
        "title": reception.title or (reception.reward.title if reception.reward else None),
        "credits": reception.credits, "points": points,
        "digital_reward_code": reception.digital_reward_code,
    }


def reconcile_reward_redeem(ctx: Context, args: Mapping[str, Any]) -> dict[str, Any]:
    """A reward reception of this reward for this contact since the call, not another
    request's: found -> it happened (the contact's loyalty transactions, newest first)."""
    since = ctx.started_at - CLOCK_SKEW
    taken = ctx.ledger.results("reward.redeem")
    for page in range(1, MAX_PAGES + 1):
        items = ctx.client.list_loyalty_transactions(
            contact_uuid=args["contact_uuid"], kind="reward_receptions",
            created_after=since, page=page,
        )
        for item in items:
            if item.reward_uuid == args["reward_uuid"] and item.uuid not in taken:
                return {
                    "uuid": item.uuid, "reward_uuid": args["reward_uuid"], "title": None,
                    "credits": item.credits, "points": _balance(ctx, args["contact_uuid"]),
                    "digital_reward_code": None,
                }
        if len(items) < 100:
            break
    raise NotApplied("Leat lists no reception of this reward since the call")


def reward_collect(ctx: Context, args: Mapping[str, Any]) -> dict[str, Any]:
    """Collect a pre-redeemed reward; `uuid` (the collection) undoes it."""
    result = ctx.client.collect_reward(args["collectable_uuid"])
    return {"uuid": result.uuid, "collectable_uuid": args["collectable_uuid"],
            "status": result.status}


def reconcile_reward_collect(ctx: Context, args: Mapping[str, Any]) -> dict[str, Any]:
    """The contact's collectable rewards: collected now -> it happened (Leat lists no
    collection uuid: the reply's `uuid` is then null)."""
    for item in ctx.client.list_collectable_rewards(args["contact_uuid"]):
        if item.uuid == args["collectable_uuid"]:
            if item.has_been_collected:
                return {"uuid": None, "collectable_uuid": item.uuid, "status": "COLLECTED"}
            raise NotApplied("the reward is still waiting to be collected")
    raise NotApplied("Leat no longer lists the collectable reward")


def voucher_lock(ctx: Context, args: Mapping[str, Any]) -> dict[str, Any]:
    """Lock a voucher for an hour; the device keeps the release key (the ledger, with the
    outcome, in one transaction)."""
    uuid = args.get("voucher_uuid") or ctx.client.find_voucher(args["code"]).uuid
    lock = ctx.client.lock_voucher(uuid)
    return {
        "voucher_uuid": uuid, "code": args["code"], "status": lock.status,
        "release_key": lock.release_key,
        "system_release_at": _iso(lock.system_release_at),
    }


def reconcile_voucher_lock(ctx: Context, args: Mapping[str, Any]) -> dict[str, Any]:
    """The voucher's status: LOCKED means our lock happened, but its release key is lost."""
    voucher = ctx.client.find_voucher(args["code"])
    if voucher.status == "LOCKED":
        raise RequestError(
            "release_key_lost", "the voucher was locked, but Leat's answer with the release "
            "key was lost: it stays locked until Leat releases it (one hour after the lock)",
        )
    raise NotApplied(f"the voucher is {voucher.status}")


def voucher_redeem(ctx: Context, args: Mapping[str, Any]) -> dict[str, Any]:
    """Redeem a voucher (with the lock's release key, given or remembered, when locked).

    With a `contact_uuid`, a voucher linked to another contact is refused `wrong_contact`
    before Leat is asked to redeem it: Leat documents the contact only for an unlinked
    voucher, and what it does with another one is unknown (docs/leat-assumptions.md V2).
    """
    contact = args.get("contact_uuid")
    if contact is not None:
        owner = ctx.client.find_voucher(args["code"]).contact
        if owner is not None and owner.uuid.lower() != contact.lower():  # uuids: any case
            raise RequestError("wrong_contact", "the voucher belongs to another contact: "
                               "leave contact_uuid out or give the voucher's own (as "
                               "voucher.validate names it). Nothing was redeemed")
    key = args.get("release_key") or ctx.ledger.release_key(args["code"])
    redemption = ctx.client.redeem_voucher(
        code=args["code"], contact_uuid=args.get("contact_uuid"), release_key=key,
    )
    return {
        "uuid": redemption.redemption_uuid or redemption.voucher.uuid,
        "redemption_uuid": redemption.redemption_uuid,
        "voucher": voucher_block(redemption.voucher, False),
    }


def reconcile_voucher_redeem(ctx: Context, args: Mapping[str, Any]) -> dict[str, Any]:
    """The voucher's status: REDEEMED since the call -> it happened."""
    voucher = ctx.client.find_voucher(args["code"])
    since = ctx.started_at - CLOCK_SKEW
    if voucher.status == "REDEEMED" and (voucher.redeemed_at is None
                                         or voucher.redeemed_at >= since):
        return {"uuid": voucher.uuid, "redemption_uuid": None,
                "voucher": voucher_block(voucher, False)}
    raise NotApplied(f"the voucher is {voucher.status}")


HANDLERS: Final[Mapping[str, Handler]] = {
    "contact.lookup": contact_lookup,
    "order.get": order_get,
    "points.preview": points_preview,
    "voucher.validate": voucher_validate,
    "reward.redeem": reward_redeem,
    "reward.collect": reward_collect,
    "voucher.lock": voucher_lock,
    "voucher.redeem": voucher_redeem,
}
RECONCILERS: Final[Mapping[str, Handler]] = {
    "reward.redeem": reconcile_reward_redeem,
    "reward.collect": reconcile_reward_collect,
    "voucher.lock": reconcile_voucher_lock,
    "voucher.redeem": reconcile_voucher_redeem,
}


def give_back_args(ctx: Context, verb: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments a give-back command is stored with: a remembered release key added, and
    the optional args the durable executor settles a lost answer with (`commands_durable`),
    filled from what this device's own value-taking command took when the POS left them out
    (reward.reverse: the contact, so the outcome carries the new balance;
    reward.collect_reverse: the collectable and contact; voucher.release / voucher.reverse:
    the code)."""
    stored = dict(args)
    if verb == "voucher.release" and "release_key" not in stored:
        key = ctx.ledger.release_key(stored["voucher_uuid"])
        if key is None:
            raise RequestError(
                "invalid_request",
                "release_key: this device holds no lock on the voucher; send the release key",
            )
        stored["release_key"] = key
    for name in _TAKEN_BY[verb]:
        taken = ctx.ledger.taken(stored[name]) if isinstance(stored.get(name), str) else None
        if taken is not None:
            known = {"contact_uuid": taken.contact_uuid, "code": taken.code,
                     "collectable_uuid": taken.collectable_uuid}
            for arg in _FILLED[verb]:
                if arg not in stored and known[arg]:
                    stored[arg] = known[arg]
            break
    return stored


# give-back verb -> the args naming what was taken (the first one found is used)...
_TAKEN_BY: Final[Mapping[str, tuple[str, ...]]] = {
    "reward.reverse": ("reception_uuid",),
    "reward.collect_reverse": ("redemption_uuid",),
    "voucher.release": ("voucher_uuid",),
    "voucher.reverse": ("redemption_uuid", "voucher_uuid"),
    "giftcard.reverse": ("transaction_uuid",),
    "prepaid.reverse": ("transaction_uuid",),
}
# ...and the optional args filled from it
_FILLED: Final[Mapping[str, tuple[str, ...]]] = {
    "reward.reverse": ("contact_uuid",),
    "reward.collect_reverse": ("collectable_uuid", "contact_uuid"),
    "voucher.release": ("code",),
    "voucher.reverse": ("code",),
    "giftcard.reverse": (),
    "prepaid.reverse": ("contact_uuid",),
}


# --------------------------------------------------------------------------- helpers


def _identified(resolution: Resolution) -> dict[str, Any]:
    if resolution.status == "offline":
        raise LeatUnavailable("Leat was not reachable, or did not answer within the deadline "
                              "(the device log names the cause)", ambiguous=False)
    return {
        "status": resolution.status, "reason": resolution.reason,
        "contact": resolution.contact, "voucher": resolution.voucher,
    }


def _balance(ctx: Context, contact_uuid: str) -> int | None:
    try:
        return ctx.client.get_credit_balance(contact_uuid)
    except (LeatRejected, LeatUnavailable):
        return None


def _reason(exc: LeatRejected) -> dict[str, Any]:
    return {"code": exc.code, "message": exc.leat_message[:200]}


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat(timespec="seconds")
