"""The money verbs: pay with or load a giftcard, pay with or top up a prepaid balance.

All four take value (`commands.Rule.TAKES`): online only, within the deadline, never queued
and never sent twice. When Leat's answer is lost, the reconcilers below look for the
transaction in Leat's lists (docs/architecture.md, "Money"):

- giftcard: `GET /giftcard-transactions?giftcard_hash=&shop_uuid=&created_at[gte]=` (the
  call's start less the clock skew, newest first), the signed amount, not a transaction
  another request of this device was answered with;
- prepaid: `GET /prepaid-transactions?contact_uuid=&shop_uuid=` (no time filter: newest
  first, read back to the call's start), the same matching.

One match -> `ok` with it; none -> `NotApplied`; two or more (or one Leat lists without a
uuid) -> `CannotTell`: the device never guesses and never sends the call again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from appliance.errors import LeatRejected, LeatUnavailable
from appliance.leat.client import MAX_GIFTCARD_TXS_PAGE, MAX_PREPAID_TXS_PAGE
from appliance.leat.payments import Giftcard, ListedGiftcardTransaction, PrepaidTransaction
from appliance.pos.errors import RequestError
from appliance.pos.verbs import CLOCK_SKEW, CannotTell, Context, Handler, NotApplied

MAX_AMOUNT_CENTS: Final = 10_000_000  # one money command moves at most 100 000.00
MAX_PAGES: Final = 3  # of a transaction list read while reconciling


# ------------------------------------------------------------------------------ giftcard


def giftcard_pay(ctx: Context, args: Mapping[str, Any]) -> dict[str, Any]:
    """Pay `amount_in_cents` with a giftcard (Leat books it negative: 5003 when the balance
    is too low); the balance after is read from Leat again (the answer carries none)."""
    uuid = args.get("giftcard_uuid") or ctx.client.find_giftcard(args["hash"]).uuid
    tx = ctx.client.create_giftcard_transaction(
        giftcard_uuid=uuid, amount_in_cents=-_amount(args))
    return _giftcard_data(ctx, tx.uuid, uuid, args)


def giftcard_load(ctx: Context, args: Mapping[str, Any]) -> dict[str, Any]:
    """Load a giftcard (selling a physical card: refused `already_sold` unless its balance is
    0, as the POS guides check, when `require_unsold` is true, the default)."""
    card = _card(ctx, args)
    if args.get("require_unsold", True) and card.amount_in_cents != 0:
        raise RequestError("already_sold", "the giftcard has a balance, so it was sold already; "
                           "send require_unsold: false to load it anyway. Nothing was loaded")
    tx = ctx.client.create_giftcard_transaction(
        giftcard_uuid=card.uuid, amount_in_cents=_amount(args))
    return _giftcard_data(ctx, tx.uuid, card.uuid, args)


def reconcile_giftcard_pay(ctx: Context, args: Mapping[str, Any]) -> dict[str, Any]:
    """A lost giftcard.pay answer: the card's transactions since the call."""
    return _reconcile_giftcard(ctx, args, "giftcard.pay", -_amount(args))


def reconcile_giftcard_load(ctx: Context, args: Mapping[str, Any]) -> dict[str, Any]:
    """A lost giftcard.load answer: the card's transactions since the call."""
    return _reconcile_giftcard(ctx, args, "giftcard.load", _amount(args))


def _reconcile_giftcard(ctx: Context, args: Mapping[str, Any], verb: str, signed: int
                        ) -> dict[str, Any]:
    card = _card(ctx, args)
    since = ctx.started_at - CLOCK_SKEW
    claimed = ctx.ledger.results(verb)
    found: list[ListedGiftcardTransaction] = []
    for page in range(1, MAX_PAGES + 1):
        items = ctx.client.list_giftcard_transactions(
            giftcard_hash=card.hash, shop_uuid=ctx.client.shop_uuid, created_after=since,
            page=page)
        found += [t for t in items if t.amount_in_cents == signed
                  and t.giftcard_uuid in (None, card.uuid) and t.uuid not in claimed]
        if len(items) < MAX_GIFTCARD_TXS_PAGE:
            break
    else:
        raise CannotTell([t.uuid for t in found], "Leat lists more transactions of the card "
                         "since the call than the device reads")
    match = _one(found, "Leat lists no transaction of this amount on the card since the call")
    return _giftcard_data(ctx, match, card.uuid, args)


def _card(ctx: Context, args: Mapping[str, Any]) -> Giftcard:
    if "giftcard_uuid" in args:
        return ctx.client.get_giftcard(args["giftcard_uuid"])
    return ctx.client.find_giftcard(args["hash"])


def _giftcard_data(ctx: Context, tx_uuid: str, card_uuid: str, args: Mapping[str, Any]
                   ) -> dict[str, Any]:
    """The reply; the balance after is null when it cannot be read (the move stands)."""
    try:
        balance: int | None = ctx.client.get_giftcard(card_uuid).amount_in_cents
    except (LeatRejected, LeatUnavailable):
        balance = None
    return {"uuid": tx_uuid, "transaction_uuid": tx_uuid, "giftcard_uuid": card_uuid,
            "amount_in_cents": _amount(args), "balance_in_cents": balance}


# ------------------------------------------------------------------------------- prepaid


def prepaid_pay(ctx: Context, args: Mapping[str, Any]) -> dict[str, Any]:
    """Pay from the contact's prepaid balance (the answer carries the balance after)."""
    return _prepaid(ctx, args, -_amount(args))


def prepaid_topup(ctx: Context, args: Mapping[str, Any]) -> dict[str, Any]:
    """Top up the contact's prepaid balance."""
    return _prepaid(ctx, args, _amount(args))


def _prepaid(ctx: Context, args: Mapping[str, Any], signed: int) -> dict[str, Any]:
    tx = ctx.client.create_prepaid_transaction(
        amount_in_cents=signed, contact_uuid=args.get("contact_uuid"),
        contact_identifier_value=args.get("identifier"))
    return _prepaid_data(tx, args.get("contact_uuid"), args)


def reconcile_prepaid_pay(ctx: Context, args: Mapping[str, Any]) -> dict[str, Any]:
    """A lost prepaid.pay answer: the contact's newest prepaid transactions."""
    return _reconcile_prepaid(ctx, args, "prepaid.pay", -_amount(args))


def reconcile_prepaid_topup(ctx: Context, args: Mapping[str, Any]) -> dict[str, Any]:
    """A lost prepaid.topup answer: the contact's newest prepaid transactions."""
    return _reconcile_prepaid(ctx, args, "prepaid.topup", _amount(args))


def _reconcile_prepaid(ctx: Context, args: Mapping[str, Any], verb: str, signed: int
                       ) -> dict[str, Any]:
    """Leat's list has no time filter and no client reference: read newest first back to the
    call's start (ASSUMPTION: Leat lists newest first; a page that is not is `CannotTell`)."""
    contact = args.get("contact_uuid") or _contact_of(ctx, args["identifier"])
    since = ctx.started_at - CLOCK_SKEW
    claimed = ctx.ledger.results(verb)
    found: list[PrepaidTransaction] = []
    for page in range(1, MAX_PAGES + 1):
        items = ctx.client.list_prepaid_transactions(
            contact_uuid=contact, shop_uuid=ctx.client.shop_uuid, page=page)
        times = [t.created_at for t in items if t.created_at is not None]
        if times != sorted(times, reverse=True):
            raise CannotTell([t.uuid for t in found], "Leat did not list the contact's "
                             "prepaid transactions newest first")
        recent = [t for t in items if t.created_at is None or t.created_at >= since]
        found += [t for t in recent if t.amount_in_cents == signed and t.uuid not in claimed]
        if len(recent) < len(items) or len(items) < MAX_PREPAID_TXS_PAGE:
            break
    else:
        raise CannotTell([t.uuid for t in found], "Leat lists more prepaid transactions of "
                         "the contact since the call than the device reads")
    match = _one(found, "Leat lists no prepaid transaction of this amount since the call")
    tx = next(t for t in found if t.uuid == match)
    return _prepaid_data(tx, contact, args)


def _contact_of(ctx: Context, identifier: str) -> str:
    try:
        ident = ctx.client.find_contact_identifier(identifier)
    except LeatRejected as exc:  # unknown or inactive: Leat refused the call as well
        raise NotApplied(f"Leat does not know the identifier ({exc.code})") from None
    if ident.contact is None:
        raise NotApplied("the identifier belongs to no contact")
    return ident.contact.uuid


def _prepaid_data(tx: PrepaidTransaction, contact: str | None, args: Mapping[str, Any]
                  ) -> dict[str, Any]:
    return {"uuid": tx.uuid, "transaction_uuid": tx.uuid,
            "contact_uuid": contact or tx.contact_uuid, "amount_in_cents": _amount(args),
            "balance_in_cents": tx.balance_after_cents}


# ------------------------------------------------------------------------------- helpers


def _amount(args: Mapping[str, Any]) -> int:
    """The positive amount the POS sent (the schema bounds it; checked again: money)."""
    amount = args["amount_in_cents"]
    if not isinstance(amount, int) or isinstance(amount, bool) or not (
            0 < amount <= MAX_AMOUNT_CENTS):
        raise RequestError("invalid_request",
                           f"amount_in_cents: an integer 1..{MAX_AMOUNT_CENTS} is required")
    return amount


def _one(found: list[Any], none: str) -> str:
    """The uuid of the one transaction found; `NotApplied` without; `CannotTell` when more
    than one, or one without a uuid (Leat's list may show `uuid: null`)."""
    if not found:
        raise NotApplied(none)
    uuid: str | None = found[0].uuid
    if len(found) > 1 or uuid is None:
        raise CannotTell([t.uuid for t in found], f"Leat lists {len(found)} transaction(s) of "
                         "this amount since the call, not told apart")
    return uuid


HANDLERS: Final[Mapping[str, Handler]] = {
    "giftcard.pay": giftcard_pay,
    "giftcard.load": giftcard_load,
    "prepaid.pay": prepaid_pay,
    "prepaid.topup": prepaid_topup,
}
RECONCILERS: Final[Mapping[str, Handler]] = {
    "giftcard.pay": reconcile_giftcard_pay,
    "giftcard.load": reconcile_giftcard_load,
    "prepaid.pay": reconcile_prepaid_pay,
    "prepaid.topup": reconcile_prepaid_topup,
}
