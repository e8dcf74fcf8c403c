"""Money give-backs checked when they arrive, before they are stored in the outbox.

Leat reverses only a giftcard's LAST transaction (error 55025). A `giftcard.reverse` that
Leat would refuse is refused at once, `not_last_transaction`, so the till learns it while
the customer is still there, instead of from a `failed` event later: the transaction
(`GET /giftcard-transactions/{uuid}`: its card), the card (its hash; a hash the POS gave
must be that card's) and the card's newest transaction (`GET /giftcard-transactions?
giftcard_hash=&sort=-created_at&perPage=1`). Nothing found is added to the stored
command: a repeat of the request_id must store the same body (another one is a
`conflict`), and a repeat is not checked again (after the reversal, the reversal itself is
the card's last transaction).

Leat unreachable, or slower than the command deadline: the reversal is accepted as it is (it
is durable) and Leat decides when it is sent; a transaction slipping in before then makes the
final outcome `failed` with Leat's 55025. A transaction Leat does not know is refused with
Leat's code (`leat_rejected`): it can never be reversed. An item of Leat's list is
compared by uuid, or by Leat's id where the list shows `uuid: null`.

`prepaid.reverse` has nothing to check (any prepaid transaction can be reversed); its
contact, which settles a lost answer, is filled from the ledger by `verbs.give_back_args`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import Executor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from appliance.commands_durable import same_giftcard_tx
from appliance.errors import LeatRejected, LeatUnavailable
from appliance.pos.errors import RequestError

if TYPE_CHECKING:
    from appliance.leat.client import LeatClient

log = logging.getLogger(__name__)


def check(
    client: LeatClient, verb: str, args: Mapping[str, Any], pool: Executor, deadline: float
) -> None:
    """Refuse a new give-back Leat would refuse (`deadline`: time.monotonic() by which to
    answer): raises `RequestError` (`not_last_transaction`, `invalid_request`) or
    `LeatRejected` (a transaction Leat does not know); returns to accept it."""
    if verb != "giftcard.reverse":
        return
    future = pool.submit(_check_giftcard, client, args)
    try:
        future.result(timeout=max(deadline - time.monotonic(), 0.0))
    except (FutureTimeout, LeatUnavailable) as exc:
        log.info("giftcard.reverse: Leat could not be asked (%s); accepted, Leat decides",
                 type(exc).__name__)


def _check_giftcard(client: LeatClient, args: Mapping[str, Any]) -> None:
    uuid = args["transaction_uuid"]
    tx = client.get_giftcard_transaction(uuid)
    given = args.get("giftcard_uuid")
    if given and tx.giftcard_uuid and given != tx.giftcard_uuid:
        raise RequestError("invalid_request", "giftcard_uuid: the transaction belongs to "
                           "another giftcard")
    card = tx.giftcard_uuid or given
    hash_ = _card_hash(client, card, args.get("hash"))
    if not hash_:
        return
    newest = client.list_giftcard_transactions(giftcard_hash=hash_, newest_first=True,
                                               per_page=1)
    if newest and (newest[0].uuid is not None or newest[0].id is not None) and not (
            same_giftcard_tx(newest[0], tx)):
        raise RequestError(
            "not_last_transaction",
            "Leat reverses only a giftcard's last transaction, and the card has a newer one "
            "(or this one was reversed already): nothing was stored",
        )


def _card_hash(client: LeatClient, card: str | None, given: str | None) -> str | None:
    """The card's hash, for listing its transactions: read from the card, and a hash the POS
    gave checked against it (another card's hash would list another card's transactions)."""
    if given:
        try:
            found = client.find_giftcard(given)
        except LeatRejected as exc:
            raise RequestError("invalid_request", f"hash: Leat knows no such giftcard "
                               f"({exc.code})") from None
        if card and found.uuid != card:
            raise RequestError("invalid_request", "hash: not the transaction's giftcard")
        return given
    return client.get_giftcard(card).hash if card else None
