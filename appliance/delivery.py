"""One attempt at one outbox item: the Leat calls it takes, and the verdict they give.

The forwarder (forwarder.py) decides when an item is due and records what `attempt` says; this
module decides what to call and how to read Leat's answer (forwarder.py's docstring gives the
exactly-once rules both follow):

- an order: looked up first when ambiguous (`GET /orders/find`), its scanned customer card
  resolved to a contact, posted; a duplicate answer to an ambiguous order is looked up again;
  an order without a customer gets a Loyalty Token claim URL instead;
- a return: posted; a duplicate answer to an ambiguous one counts as delivered (ASSUMPTION,
  as the sandbox answers: 400, 1003 "The external identifier has already been taken.");
- a give-back command: `commands_durable.execute`, which settles ambiguity itself.

A refusal that is not Leat's error envelope (code 0: a proxy's 400 page, a 422 with only a
message) is never final for any of them: kept, ambiguous (looked up before it is sent
again), with the alert; only Leat's own code makes an item DEAD.

Workers call `attempt` concurrently: it reads only settings and the item, and `LeatClient`
is thread-safe. Bodies and Leat's messages may hold personal data: never logged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from appliance import commands_durable
from appliance.errors import LeatAuthError, LeatRejected, LeatUnavailable
from appliance.leat.client import LeatClient
from appliance.leat.token import DEFAULT_UNIT, loyalty_token_url
from appliance.outbox_items import Item, Kind, State

log = logging.getLogger(__name__)

INVALID_INPUT: Final = 1003
EXTERNAL_IDENTIFIER: Final = "external_identifier"
_DUPLICATE = re.compile(r"external[ _]identifier\b.*\b(already|taken|exists|duplicate)", re.I)
_DUPLICATE_DETAIL = re.compile(r"\b(already|taken|exists|duplicate|unique)\b", re.I)


@dataclass(frozen=True)
class TokenSettings:
    """What a Loyalty Token claim URL needs (`[leat] portal_url`, the account secret)."""

    portal_url: str
    account_secret: str
    shop_uuid: str | None = None
    unit_name: str = DEFAULT_UNIT

    def __repr__(self) -> str:
        return f"TokenSettings(portal_url={self.portal_url!r}, account_secret=<hidden>)"


@dataclass(frozen=True)
class Verdict:
    """What one attempt learned about one item; the forwarder's loop thread records it."""

    state: State  # DELIVERED, DEAD, or PENDING (try again)
    leat: bool | None  # Leat answered (True), was unreachable (False), or was not asked
    result: Mapping[str, Any] | None = None
    code: int | None = None
    message: str = ""
    retry_after: float | None = None
    ambiguous: bool = False
    auth: bool = False
    unexplained: bool = False  # Leat's answer was not understood: keep it, raise the alert
    reason: str = "leat_rejected"  # a command's error code when DEAD (events/command)


class _Dead(Exception):
    """Give the item up: DEAD with this code and message (`leat`: Leat said so)."""

    def __init__(
        self,
        code: int | None,
        message: str,
        *,
        leat: bool | None = None,
        reason: str = "leat_rejected",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.leat = leat
        self.reason = reason


class _Unexplained(Exception):
    """Leat answered, but not in a way that tells whether the order is there: keep it."""


class Delivery:
    """Turns one outbox item into Leat calls and a `Verdict`; thread-safe."""

    def __init__(self, client: LeatClient, *, shop_uuid: str | None,
                 token: TokenSettings | None = None) -> None:
        self._client = client
        self.shop_uuid = shop_uuid
        self._token = token

    def claim_url(self, item: Item) -> str | None:
        """The claim URL an order without a customer gets; None when none can be made.

        It is the same URL whenever it is asked for (signed with the item's `created_at`), so
        the request handler can put it in its response and the order event repeats it.
        """
        try:
            return self._claim_url(item)
        except _Dead:
            return None

    def attempt(self, item: Item) -> Verdict:
        """Forward one claimed item to Leat and say what came of it (on a worker thread: no
        SQLite here)."""
        try:
            send = {Kind.RETURN: self._send_return, Kind.COMMAND: self._send_command}.get(
                item.kind, self._send_order
            )
            result = send(item)
        except _Dead as dead:
            return Verdict(
                State.DEAD, dead.leat, code=dead.code, message=dead.message, reason=dead.reason
            )
        except (_Unexplained, commands_durable.Unexplained) as exc:
            return Verdict(State.PENDING, True, message=str(exc), ambiguous=True, unexplained=True)
        except LeatRejected as exc:
            if exc.code == 0:  # not Leat's error envelope (a proxy's page): nothing final
                message = f"Leat answered HTTP {exc.status_code} without an error code"
                return Verdict(State.PENDING, True, message=message, ambiguous=True,
                               unexplained=True)
            return Verdict(State.DEAD, True, code=exc.code, message=exc.leat_message)
        except LeatUnavailable as exc:
            return Verdict(
                State.PENDING,
                False,
                message=str(exc),
                retry_after=exc.retry_after,
                ambiguous=exc.ambiguous,
            )
        except LeatAuthError as exc:
            return Verdict(State.PENDING, False, message=str(exc), auth=True)
        except Exception as exc:  # a bug: keep the item, and assume it may have gone out
            log.exception("forwarding %s %d failed unexpectedly", item.kind, item.id)
            error = f"internal error: {type(exc).__name__}"
            return Verdict(State.PENDING, None, message=error, ambiguous=True)
        return Verdict(State.DELIVERED, None if "claim_url" in result else True, result)

    def _send_order(self, item: Item) -> dict[str, Any]:
        """Post one order (after a lookup when ambiguous); the result to store."""
        ext = item.external_identifier
        if item.ambiguous:
            found = self._find(item)
            if found is not None:
                log.info("order %d was already in Leat; not posting it again", item.id)
                return {"leat_uuid": found, "points": None, "new_balance": None, "found": "lookup"}
        if item.anonymous:
            return {
                "leat_uuid": None,
                "points": None,
                "new_balance": None,
                "claim_url": self._claim_url(item),
            }
        body = dict(item.body)
        contact = body.get("contact")
        if not (isinstance(contact, Mapping) and contact.get("uuid")):
            body["contact"] = {"uuid": self._resolve(str(item.customer_identifier))}
        if self.shop_uuid and not body.get("business_profile"):
            body["business_profile"] = {"uuid": self.shop_uuid}
        body["external_identifier"] = ext
        try:
            result = self._client.create_and_process_order(body)
        except LeatRejected as exc:
            if not (item.ambiguous and self._is_duplicate(exc)):
                raise  # a duplicate of an order that never left: another order has its id
            found = self._find(item)
            if found is None:
                raise _Unexplained(
                    "Leat calls the order a duplicate, but orders/find does not find it"
                ) from exc
            log.info("order %d was already in Leat (duplicate answer, found)", item.id)
            return {"leat_uuid": found, "points": None, "new_balance": None, "found": "duplicate"}
        return {
            "leat_uuid": None if result.order is None else result.order.uuid,
            "points": result.points,
            "new_balance": result.new_balance,
        }

    def _send_return(self, item: Item) -> dict[str, Any]:
        """Post one return; its order must be delivered (the outbox holds it back until then)."""
        body = dict(item.body)
        if not body.get("order") and item.order_external_identifier:
            body["order"] = {"external_identifier": item.order_external_identifier}
        body["external_identifier"] = item.external_identifier
        try:
            result = self._client.create_and_process_order_return(body)
        except LeatRejected as exc:
            if not (item.ambiguous and self._is_duplicate(exc)):
                raise
            log.info("return %d was already in Leat (duplicate answer)", item.id)
            return {"leat_uuid": None, "points": None, "new_balance": None, "found": "duplicate"}
        return {
            "leat_uuid": result.uuid,
            "points": result.points,
            "new_balance": result.new_balance,
        }

    def _send_command(self, item: Item) -> dict[str, Any]:
        """Execute one give-back command (`commands_durable`, which settles ambiguity)."""
        verb, args = item.body.get("verb"), item.body.get("args")
        if not isinstance(verb, str) or not isinstance(args, Mapping):
            raise _Dead(None, "invalid command: body needs verb and args", reason="internal")
        try:
            data = commands_durable.execute(self._client, verb, args, ambiguous=item.ambiguous)
        except ValueError as exc:
            raise _Dead(None, f"invalid command: {exc}", reason="invalid_request") from exc
        if data.get("already"):
            log.info("command %d (%s) had taken effect already; not sent again", item.id, verb)
        return {"verb": verb, "data": data}

    def _find(self, item: Item) -> str | None:
        """The Leat uuid of an ambiguous order, None when Leat says it has none;
        `_Unexplained` when Leat's answer is neither (undocumented, so never taken as no)."""
        try:
            with commands_durable.read_only():
                found = self._client.find_order(item.external_identifier)
        except LeatRejected as exc:
            raise _Unexplained(
                f"orders/find answered HTTP {exc.status_code}, code {exc.code}: neither the "
                "order nor a known 'not found'"
            ) from exc
        return None if found is None else found.uuid

    def _resolve(self, identifier: str) -> str:
        """The contact uuid of a scanned identifier; `_Dead` when it has none."""
        try:
            with commands_durable.read_only():
                found = self._client.find_contact_identifier(identifier)
        except LeatRejected as exc:
            raise _Dead(
                exc.code, f"customer card not usable: {exc.leat_message}", leat=True
            ) from exc
        if not found.active:
            raise _Dead(60004, "customer card not usable: the identifier is inactive", leat=True)
        if found.contact is None:
            raise _Dead(60011, "customer card not usable: it is not linked to a contact",
                        leat=True)  # the code events/identification gives it (resolve.py)
        return found.contact.uuid

    def _claim_url(self, item: Item) -> str:
        """A Loyalty Token URL for an order without a customer; `_Dead` when none can be made."""
        token = self._token
        shop = (token.shop_uuid if token else None) or self.shop_uuid
        if token is None or not shop:
            raise _Dead(
                None,
                "no customer and no loyalty token settings ([leat] portal_url, account secret"
                + ("" if shop else ", shop_uuid")
                + ")",
            )
        amount = item.body.get("total_order_amount")
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise _Dead(None, "no customer and no positive total_order_amount for a claim URL")
        try:
            return loyalty_token_url(
                portal_url=token.portal_url,
                shop_uuid=shop,
                unique_id=item.external_identifier,
                unit_value=str(Decimal(amount) / 100),
                secret=token.account_secret,
                unit_name=token.unit_name,
                timestamp=int(item.created_at),
            )
        except ValueError as exc:
            raise _Dead(None, f"cannot make a loyalty token claim URL: {exc}") from exc

    @staticmethod
    def _is_duplicate(exc: LeatRejected) -> bool:
        """Leat's answer to a repeated external_identifier (ASSUMPTION: 1003, as the sandbox):
        said in the message, or in `errors.external_identifier` under a generic message."""
        if exc.code != INVALID_INPUT:
            return False
        if _DUPLICATE.search(exc.leat_message) is not None:
            return True
        details = exc.errors.get(EXTERNAL_IDENTIFIER, ())
        return any(_DUPLICATE_DETAIL.search(text) for text in details)


__all__ = ["Delivery", "TokenSettings", "Verdict"]
