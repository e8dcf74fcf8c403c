"""Give-back POS commands: run once through the durable outbox, whatever happens on the way.

A give-back command hands value back to the customer (points, a collectable reward, a
voucher, giftcard or prepaid money), so it must happen eventually: the POS request layer
stores it as an outbox item of kind COMMAND (key: the POS's `request_id`, body `{"verb",
"args"}`), answers `accepted`, and the forwarder calls `execute()` until Leat has it; the
final outcome goes out on `events/command`. Leat documents no idempotency key for these
calls, so exactly once rests on two things: the outbox never sends an item twice at once,
and an attempt that may have reached Leat (read timeout, reset after sending, a crash while
SENDING: the item is `ambiguous`) is settled by asking Leat before, or by reading its answer
to, the repeat.

Verb by verb (args as stored; uuids are Leat's):

- `reward.reverse` {reception_uuid, contact_uuid?}: `POST /reward-receptions/{uuid}/reverse`.
  Leat lets a reception be reversed once, so the repeat cannot give the points twice; an
  ambiguous repeat that Leat refuses as "already reversed" (1003, ASSUMPTION: the sandbox's
  message; Leat documents only 1003) is delivered, its balance read from the contact when
  `contact_uuid` is given. Any other refusal of an ambiguous repeat (an unknown uuid is 1003
  too) cannot tell "ours went through" from "never possible": kept, with the alert.
- `reward.collect_reverse` {redemption_uuid, collectable_uuid?, contact_uuid?}:
  `POST /collectable-rewards/{redemption uuid}/reverse`. When ambiguous and the collectable
  and contact are known, `GET /collectable-rewards?contact_uuid=` tells: no longer collected
  means done (nothing is sent), still collected means send. Leat answers 80300 both for an
  unknown redemption and, in the sandbox, for one reversed already (ASSUMPTION), so an
  ambiguous 80300 without that check is kept, with the alert.
- `voucher.release` {voucher_uuid, release_key, code?}: `POST /vouchers/{uuid}/release`.
  When ambiguous and the code is known, `GET /vouchers/find` tells: not LOCKED means the lock
  is gone (ours released it, or Leat let it lapse after its hour): done; LOCKED means send,
  and a refusal then (a wrong key: 1003) is final. Without the code, an ambiguous 1003 is kept.
  A lock lapses by itself, so a release refused after an outage of over an hour is asked
  about the same way (not LOCKED: done) rather than failed.
- `voucher.reverse` {redemption_uuid? | voucher_uuid?, code?}: `POST /vouchers/{uuid}/reverse`,
  by the redemption uuid (Leat 2026) and, on 80004, the voucher uuid (`LeatClient`). When
  ambiguous and the code is known, the voucher's status tells: not REDEEMED means done.
  REDEEMED (maybe redeemed again since) means send: Leat refuses reversing a redemption
  twice, so a repeat by redemption uuid cannot undo the newer redemption, and its 1003
  ("not active", ASSUMPTION: the sandbox's answer) means ours was reversed: delivered.
  By voucher uuid alone a REDEEMED voucher is sent again (Leat cannot say whose
  redemption it reverses: pass the redemption uuid).

- `giftcard.reverse` {transaction_uuid, giftcard_uuid?, hash?}:
  `POST /giftcard-transactions/{uuid}/reverse`; the balance after is read back from the card
  (`GET /giftcards/{uuid}`: Leat's answer has none). Leat reverses only a card's LAST
  transaction (55025), by booking a new one "for the negative amount" (Leat's docs; R1 in
  docs/leat-assumptions.md), which then is the last:
  so when ambiguous, the card's transactions since ours (`GET /giftcard-transactions?
  giftcard_hash=&sort=created_at&created_at[gte]=`) tell: the one right after ours is of the
  opposite amount means ours was reversed: done, nothing is sent; none after ours means send;
  another one after ours means Leat will refuse it (55025), which is then final. Ours not in
  the list (or Leat's list answers without uuids) cannot tell: a repeat refused then is kept,
  with the alert. The card is the transaction's (else the stored arg), its hash read from it.
- `prepaid.reverse` {transaction_uuid, contact_uuid?}: `POST /prepaid-transactions/{uuid}/
  reverse`, whose answer carries the balance after. When ambiguous, the contact's newest
  transactions (`GET /prepaid-transactions?contact_uuid=`, newest first, up to 90; without
  the contact, this shop's, whose items name their contact) tell: a transaction of the
  opposite amount for the same contact, newer than ours, means ours was reversed: done
  (Leat's docs: a reversal is a new transaction "for the negative amount"; a top-up of
  exactly that amount between the attempt and the check is taken for it: R2); none means
  send. Ours not among them: cannot tell, a repeat refused then (1003 in the
  sandbox for a reversed one) is kept, with the alert.

A refusal of an attempt that never reached Leat before is final: DEAD with Leat's code and
message (not found, wrong release key, ...). A read that Leat refuses decides nothing (the
command is not failed by a check), and a read that fails after the command is found done
only leaves that value (the balance, the status) null. A refusal that is not Leat's error envelope
(code 0, e.g. a proxy's 404 page) is never final: kept, with the alert.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from appliance.errors import LeatError, LeatRejected, LeatUnavailable
from appliance.leat.client import MAX_GIFTCARD_TXS_PAGE as MAX_TX_PAGE
from appliance.leat.client import MAX_PREPAID_TXS_PAGE as MAX_PREPAID_PAGE
from appliance.leat.client import LeatClient
from appliance.leat.payments import PrepaidTransaction
from appliance.outbox_items import Item, Kind, State

GIVE_BACK_VERBS: Final = frozenset(
    {"reward.reverse", "reward.collect_reverse", "voucher.release", "voucher.reverse",
     "giftcard.reverse", "prepaid.reverse"}
)
SCHEMA: Final = "leat-scanner/command/1"
MAX_ARG_LENGTH: Final = 255
_ALREADY = re.compile(r"\balready\b", re.I)
INVALID_INPUT: Final = 1003
# Goals Leat reaches by itself: a lock lapses after an hour, so a release refused after a
# long outage is asked about even when no attempt reached Leat before.
_LAPSES: Final = frozenset({"voucher.release"})

# verb -> (required args, optional args); every arg is a non-empty string.
_ARGS: Final[Mapping[str, tuple[frozenset[str], frozenset[str]]]] = {
    "reward.reverse": (frozenset({"reception_uuid"}), frozenset({"contact_uuid"})),
    "reward.collect_reverse": (
        frozenset({"redemption_uuid"}),
        frozenset({"collectable_uuid", "contact_uuid"}),
    ),
    "voucher.release": (frozenset({"voucher_uuid", "release_key"}), frozenset({"code"})),
    "voucher.reverse": (frozenset(), frozenset({"redemption_uuid", "voucher_uuid", "code"})),
    "giftcard.reverse": (frozenset({"transaction_uuid"}), frozenset({"giftcard_uuid", "hash"})),
    "prepaid.reverse": (frozenset({"transaction_uuid"}), frozenset({"contact_uuid"})),
}
CLOCK_SKEW_S: Final = 5.0  # Leat's clock against the transaction's own time, for "since"
MAX_TX_PAGES: Final = 3  # of a card's or contact's transactions searched when ambiguous


class Unexplained(Exception):
    """Leat answered, but not in a way that tells whether the command took effect: keep it."""


def validate_args(verb: str, args: Mapping[str, Any]) -> None:
    """ValueError naming the problem when `args` cannot be executed for `verb`."""
    if verb not in GIVE_BACK_VERBS:
        raise ValueError(f"{verb!r} is not a give-back verb")
    if not isinstance(args, Mapping):
        raise ValueError("args must be an object")
    required, optional = _ARGS[verb]
    unknown = sorted(set(args) - required - optional)
    if unknown:
        raise ValueError(f"{verb}: unknown args {', '.join(unknown)}")
    missing = sorted(required - set(args))
    if missing:
        raise ValueError(f"{verb}: missing args {', '.join(missing)}")
    for name, value in args.items():
        if not isinstance(value, str) or not value.strip() or len(value) > MAX_ARG_LENGTH:
            raise ValueError(f"{verb}: {name} must be a non-empty string of at most "
                             f"{MAX_ARG_LENGTH} characters")
    if verb == "voucher.reverse" and not ({"redemption_uuid", "voucher_uuid"} & set(args)):
        raise ValueError("voucher.reverse: needs redemption_uuid or voucher_uuid")


def execute(
    client: LeatClient, verb: str, args: Mapping[str, Any], *, ambiguous: bool
) -> dict[str, Any]:
    """Carry out one give-back command; the `data` of its final outcome.

    `ambiguous`: an earlier attempt may have reached Leat. Raises ValueError (bad args),
    `LeatRejected` (a final refusal), `Unexplained` (keep it, raise the alert), and what
    `LeatClient` raises when Leat is unreachable (keep it, retry).
    """
    validate_args(verb, args)

    def settled(client: LeatClient, args: Mapping[str, Any]) -> bool | None:
        """Whether the goal holds in Leat now; None when Leat cannot say (a refused read
        never decides anything; an unreachable Leat raises: try again later)."""
        try:
            return _SETTLED[verb](client, args)
        except LeatRejected:
            return None

    if ambiguous and settled(client, args) is True:
        return {**_done(client, verb, args), "already": True}
    try:
        return {**_SEND[verb](client, args), "already": False}
    except LeatRejected as exc:
        if exc.code == 0:
            raise Unexplained(
                f"{verb}: Leat answered HTTP {exc.status_code} without an error code"
            ) from exc
        if not ambiguous and verb not in _LAPSES:
            raise
        state = settled(client, args)
        if state is True or (
            ambiguous and (_says_already(exc) or _repeat_refused_as_done(verb, args, exc))
        ):
            return {**_done(client, verb, args), "already": True}
        if state is False or not ambiguous:
            raise  # Leat says the goal does not hold yet, so its refusal is final
        raise Unexplained(
            f"{verb}: Leat refused a repeat ({exc.code}) and whether the first attempt took "
            "effect cannot be asked"
        ) from exc


def _repeat_refused_as_done(verb: str, args: Mapping[str, Any], exc: LeatRejected) -> bool:
    """A refusal of the repeat that itself says the goal holds: reversing a voucher
    redemption Leat knows (else 80004) that is no longer active is 1003 (ASSUMPTION: the
    sandbox's answer; Leat documents 1003 and 80004 for reverse)."""
    return verb == "voucher.reverse" and bool(args.get("redemption_uuid")) and (
        exc.code == INVALID_INPUT
    )


def _says_already(exc: LeatRejected) -> bool:
    """Leat's refusal names a state reached already ("already reversed")."""
    texts = [exc.leat_message, *(t for ts in exc.errors.values() for t in ts)]
    return any(_ALREADY.search(text) for text in texts)


# ------------------------------------------------------------------------------ sending


def _reward_reverse(client: LeatClient, args: Mapping[str, Any]) -> dict[str, Any]:
    back = client.reverse_reward_reception(args["reception_uuid"])
    return {"reception_uuid": args["reception_uuid"], "credit_reception_uuid": back.uuid,
            "credits": back.credits, "new_balance": back.credit_balance}


def _collect_reverse(client: LeatClient, args: Mapping[str, Any]) -> dict[str, Any]:
    result = client.reverse_collected_reward(args["redemption_uuid"])
    return {"redemption_uuid": args["redemption_uuid"], "status": result.status}


def _release(client: LeatClient, args: Mapping[str, Any]) -> dict[str, Any]:
    lock = client.release_voucher(args["voucher_uuid"], args["release_key"])
    return {"voucher_uuid": lock.voucher_uuid, "status": lock.status}


def _voucher_reverse(client: LeatClient, args: Mapping[str, Any]) -> dict[str, Any]:
    done = client.reverse_voucher_redemption(
        redemption_uuid=args.get("redemption_uuid"), voucher_uuid=args.get("voucher_uuid")
    )
    voucher = done.voucher
    return {"voucher_uuid": voucher.uuid if voucher else args.get("voucher_uuid"),
            "reversed_uuid": done.reversed_uuid,
            "status": voucher.status if voucher else None}


def _giftcard_reverse(client: LeatClient, args: Mapping[str, Any]) -> dict[str, Any]:
    back = client.reverse_giftcard_transaction(args["transaction_uuid"])
    card = back.giftcard_uuid or args.get("giftcard_uuid")
    return {"transaction_uuid": args["transaction_uuid"], "reversal_uuid": back.uuid,
            "amount_in_cents": back.amount_in_cents, "giftcard_uuid": card,
            "balance_in_cents": _card_balance(client, card)}


def _prepaid_reverse(client: LeatClient, args: Mapping[str, Any]) -> dict[str, Any]:
    back = client.reverse_prepaid_transaction(args["transaction_uuid"])
    return {"transaction_uuid": args["transaction_uuid"], "reversal_uuid": back.uuid,
            "amount_in_cents": back.amount_in_cents, "contact_uuid": args.get("contact_uuid"),
            "balance_in_cents": back.balance_after_cents}


def _card_balance(client: LeatClient, card: str | None) -> int | None:
    """The card's balance now (Leat's transaction answers carry none); None if unreadable:
    the reversal happened either way."""
    if not card:
        return None
    with contextlib.suppress(LeatError):
        return client.get_giftcard(card).amount_in_cents
    return None


_SEND: Final[Mapping[str, Callable[[LeatClient, Mapping[str, Any]], dict[str, Any]]]] = {
    "reward.reverse": _reward_reverse,
    "reward.collect_reverse": _collect_reverse,
    "voucher.release": _release,
    "voucher.reverse": _voucher_reverse,
    "giftcard.reverse": _giftcard_reverse,
    "prepaid.reverse": _prepaid_reverse,
}


# ---------------------------------------------------------------------- asking Leat first


def _unknown(client: LeatClient, args: Mapping[str, Any]) -> bool | None:
    """Leat has no read that tells (a reward reception's reversal is not listed as such)."""
    return None


def _collect_reversed(client: LeatClient, args: Mapping[str, Any]) -> bool | None:
    """True: the collectable is no longer collected; False: it still is; None: cannot ask."""
    collectable, contact = args.get("collectable_uuid"), args.get("contact_uuid")
    if not collectable or not contact:
        return None
    with read_only():
        items = client.list_collectable_rewards(contact)
    found = next((c for c in items if c.uuid == collectable), None)
    return None if found is None else not found.has_been_collected


def _voucher_status(client: LeatClient, args: Mapping[str, Any]) -> str | None:
    code = args.get("code")
    if not code:
        return None
    try:
        with read_only():
            voucher = client.find_voucher(code)
    except LeatRejected:
        return None  # not found by its code: nothing to tell
    return voucher.status.upper()


def _released(client: LeatClient, args: Mapping[str, Any]) -> bool | None:
    status = _voucher_status(client, args)
    return None if status is None else status != "LOCKED"


def _unredeemed(client: LeatClient, args: Mapping[str, Any]) -> bool | None:
    """True: the voucher is not redeemed now. A redeemed one tells nothing about our
    redemption when it may have been redeemed again since (None), only when the reversal
    goes by the voucher uuid (False: send)."""
    status = _voucher_status(client, args)
    if status is None:
        return None
    if status != "REDEEMED":
        return True
    return None if args.get("redemption_uuid") else False


def _giftcard_reversed(client: LeatClient, args: Mapping[str, Any]) -> bool | None:
    """True: the card's transaction right after ours is of the opposite amount (Leat's
    reversal: only the last can be reversed, so it follows ours at once); False: none after
    ours, or another one (Leat will refuse: 55025); None: ours is not found in the list."""
    with read_only():
        tx = client.get_giftcard_transaction(args["transaction_uuid"])
        card = tx.giftcard_uuid or args.get("giftcard_uuid")
        hash_ = client.get_giftcard(card).hash if card else args.get("hash")
        if not hash_:
            return None
        since = None if tx.created_at is None else tx.created_at - timedelta(
            seconds=CLOCK_SKEW_S)
        listed: list[Any] = []
        complete = False
        for page in range(1, MAX_TX_PAGES + 1):
            items = client.list_giftcard_transactions(
                giftcard_hash=hash_, created_after=since, newest_first=False, page=page)
            listed += items
            if len(items) < MAX_TX_PAGE:
                complete = True
                break
    at = next((i for i, t in enumerate(listed) if same_giftcard_tx(t, tx)), None)
    if at is None:
        return None
    if at + 1 == len(listed):
        return False if complete else None
    return bool(listed[at + 1].amount_in_cents == -tx.amount_in_cents)


def same_giftcard_tx(listed: Any, tx: Any) -> bool:
    """Whether a listed giftcard transaction is `tx`: by uuid, or by Leat's id where the list
    shows `uuid: null` (Leat's own List example does)."""
    if listed.uuid is not None and tx.uuid is not None:
        return bool(listed.uuid == tx.uuid)
    return listed.id is not None and listed.id == tx.id


def _prepaid_reversed(client: LeatClient, args: Mapping[str, Any]) -> bool | None:
    """True: a transaction of the opposite amount for the same contact is newer than ours;
    False: none is; None: ours is not among the newest listed."""
    found = _prepaid_find(client, args)
    if found is None:
        return None
    ours, newer = found
    return any(t.amount_in_cents == -ours.amount_in_cents for t in newer)


def _prepaid_find(
    client: LeatClient, args: Mapping[str, Any]
) -> tuple[PrepaidTransaction, list[PrepaidTransaction]] | None:
    """Our transaction and the same contact's newer ones, newest first: listed by the contact
    when known, else by this shop (a reversal is booked "with the same data as initially
    used", so at the same shop; each list item names its contact). None: not found."""
    contact = args.get("contact_uuid")
    shop = None if contact else client.shop_uuid
    if not contact and not shop:
        return None
    newer: list[PrepaidTransaction] = []
    with read_only():
        for page in range(1, MAX_TX_PAGES + 1):
            items = client.list_prepaid_transactions(contact_uuid=contact, shop_uuid=shop,
                                                     page=page)
            for item in items:
                if item.uuid == args["transaction_uuid"]:
                    owner = contact or item.contact_uuid
                    return item, [t for t in newer if contact or (
                        owner is not None and t.contact_uuid == owner)]
                newer.append(item)
            if len(items) < MAX_PREPAID_PAGE:
                break
    return None


_SETTLED: Final[Mapping[str, Callable[[LeatClient, Mapping[str, Any]], bool | None]]] = {
    "reward.reverse": _unknown,
    "reward.collect_reverse": _collect_reversed,
    "voucher.release": _released,
    "voucher.reverse": _unredeemed,
    "giftcard.reverse": _giftcard_reversed,
    "prepaid.reverse": _prepaid_reversed,
}


def _done(client: LeatClient, verb: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """The outcome data of a command found done already (what Leat's answer would have said,
    as far as it can be read back)."""
    if verb == "reward.reverse":
        balance = None
        contact = args.get("contact_uuid")
        if contact:
            with contextlib.suppress(LeatError):  # done either way; the balance is extra
                balance = client.get_credit_balance(contact)
        return {"reception_uuid": args["reception_uuid"], "credit_reception_uuid": None,
                "credits": None, "new_balance": balance}
    if verb == "reward.collect_reverse":
        return {"redemption_uuid": args["redemption_uuid"], "status": "REVERSED"}
    if verb in ("giftcard.reverse", "prepaid.reverse"):
        return _money_done(client, verb, args)
    status = None
    with contextlib.suppress(LeatError):  # done either way; the status is extra
        status = _voucher_status(client, args)
    if verb == "voucher.release":
        return {"voucher_uuid": args["voucher_uuid"], "status": status}
    return {"voucher_uuid": args.get("voucher_uuid"),
            "reversed_uuid": args.get("redemption_uuid") or args.get("voucher_uuid"),
            "status": status}


def _money_done(client: LeatClient, verb: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """A money reversal found done: the amount given back and the balance now, as far as
    Leat can still be read (the reversal's own uuid is not known: null)."""
    amount = balance = None
    if verb == "giftcard.reverse":
        card = args.get("giftcard_uuid")
        with contextlib.suppress(LeatError):
            tx = client.get_giftcard_transaction(args["transaction_uuid"])
            amount, card = -tx.amount_in_cents, tx.giftcard_uuid or card
        return {"transaction_uuid": args["transaction_uuid"], "reversal_uuid": None,
                "amount_in_cents": amount, "giftcard_uuid": card,
                "balance_in_cents": _card_balance(client, card)}
    contact = args.get("contact_uuid")
    if not contact:
        with contextlib.suppress(LeatError):
            found = _prepaid_find(client, args)
            contact = found[0].contact_uuid if found else None
            amount = -found[0].amount_in_cents if found else None
    if contact:
        with contextlib.suppress(LeatError):
            balance = client.get_prepaid_balance(contact)
    return {"transaction_uuid": args["transaction_uuid"], "reversal_uuid": None,
            "amount_in_cents": amount, "contact_uuid": contact, "balance_in_cents": balance}


def finished_event(item: Item, device_id: str) -> dict[str, Any] | None:
    """The `events/command` outcome of a finished give-back item, published again when its
    request_id is sent again (an event lost with a crash between recording the outcome and
    publishing it would otherwise never reach the POS); None while it is not finished."""
    if item.kind is not Kind.COMMAND or item.state not in (State.DELIVERED, State.DEAD):
        return None
    verb = item.body.get("verb")
    error = None
    if item.state is State.DEAD:
        error = ({"code": "invalid_request", "message": item.error_message or "not run"}
                 if item.error_code is None else
                 {"code": "leat_rejected", "message": item.error_message or "refused",
                  "leat_code": item.error_code})
    data = (item.result or {}).get("data") if error is None else None
    return {
        "schema": SCHEMA,
        "event_id": str(uuid.uuid4()),
        "device_id": device_id,
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "request_id": item.external_identifier,
        "verb": verb if isinstance(verb, str) else "",
        "transaction": item.transaction,
        "status": "ok" if error is None else "failed",
        "data": dict(data) if isinstance(data, Mapping) else None,
        "error": error,
    }


@contextmanager
def read_only() -> Iterator[None]:
    """A failed GET changed nothing in Leat: its `LeatUnavailable` is never ambiguous."""
    try:
        yield
    except LeatUnavailable as exc:
        if not exc.ambiguous:
            raise
        raise LeatUnavailable(str(exc), exc.retry_after, ambiguous=False) from exc


__all__ = ["GIVE_BACK_VERBS", "SCHEMA", "Unexplained", "execute", "finished_event", "read_only",
           "same_giftcard_tx", "validate_args"]
