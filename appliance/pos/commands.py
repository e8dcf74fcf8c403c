"""The one table of POS commands: per verb, what it does to value and how its outcome is
settled when Leat's answer is lost (README "Offline and ambiguity rules" is checked against
`rules_table()` by a test).

    READ        nothing changes at Leat: run online; offline -> `offline`, never recorded as
                an outcome (asking again is harmless).
    TAKES       takes or moves value (points, a collectable, a voucher, money): online
                only, within the deadline, never queued, never run past its expiry; an
                ambiguous outcome is reconciled by asking Leat (`reconcile`), never by
                sending the call again (money.py: or found `cannot_tell`, final).
    GIVES_BACK  gives value back: stored in the durable outbox, executed exactly once by the
                forwarder, answered `accepted` at once; the outcome comes on events/command.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final


class Rule(enum.Enum):
    """What a verb does to value, which decides how it runs."""

    READ = "read"
    TAKES = "takes value"
    GIVES_BACK = "gives value back"


@dataclass(frozen=True)
class Verb:
    """One command verb: its rule, what it does offline, and how ambiguity is resolved."""

    name: str
    rule: Rule
    offline: str
    reconcile: str

    @property
    def schema(self) -> str:
        """Its request schema in appliance/contract/ (`command_<verb with _>`)."""
        return "command_" + self.name.replace(".", "_")


_QUEUED = "stored in the outbox, sent when Leat is back (`accepted`)"
_EXACTLY_ONCE = "the outbox executes it exactly once; outcome on `events/command`"
_NOT_NEEDED = "not needed: nothing changes at Leat"
_ONE_OF = ("of this amount, not another request's: one -> `ok`, none -> not applied, several "
           "-> `cannot_tell` (final, never resent)")
_GIFTCARD_TXS = f"the card's transactions at this shop since the call {_ONE_OF}"
_PREPAID_TXS = f"the contact's prepaid transactions at this shop back to the call {_ONE_OF}"

VERBS: Final[Mapping[str, Verb]] = {
    v.name: v
    for v in (
        Verb("contact.lookup", Rule.READ, "`offline`",
             "not needed (`create: true` is Leat's find-or-create: asking again is safe)"),
        Verb("order.get", Rule.READ, "the device's outbox state; Leat's part `offline`",
             _NOT_NEEDED),
        Verb("points.preview", Rule.READ, "`offline`", _NOT_NEEDED),
        Verb("voucher.validate", Rule.READ, "`offline`", _NOT_NEEDED),
        Verb("reward.redeem", Rule.TAKES, "`offline`, never queued",
             "the contact's reward receptions since the call (loyalty transactions): found "
             "-> `ok`, absent -> not applied"),
        Verb("reward.collect", Rule.TAKES, "`offline`, never queued",
             "the contact's collectable rewards: collected -> `ok`, still waiting -> "
             "not applied"),
        Verb("voucher.lock", Rule.TAKES, "`offline`, never queued",
             "the voucher's status: LOCKED -> `release_key_lost` (Leat releases it after "
             "one hour), ACTIVE -> not applied"),
        Verb("voucher.redeem", Rule.TAKES, "`offline`, never queued",
             "the voucher's status: REDEEMED -> `ok`, ACTIVE or LOCKED -> not applied"),
        Verb("giftcard.pay", Rule.TAKES, "`offline`, never queued", _GIFTCARD_TXS),
        Verb("giftcard.load", Rule.TAKES, "`offline`, never queued", _GIFTCARD_TXS),
        Verb("prepaid.pay", Rule.TAKES, "`offline`, never queued", _PREPAID_TXS),
        Verb("prepaid.topup", Rule.TAKES, "`offline`, never queued", _PREPAID_TXS),
        Verb("reward.reverse", Rule.GIVES_BACK, _QUEUED, _EXACTLY_ONCE),
        Verb("reward.collect_reverse", Rule.GIVES_BACK, _QUEUED, _EXACTLY_ONCE),
        Verb("voucher.release", Rule.GIVES_BACK, _QUEUED, _EXACTLY_ONCE),
        Verb("voucher.reverse", Rule.GIVES_BACK, _QUEUED, _EXACTLY_ONCE),
        Verb("giftcard.reverse", Rule.GIVES_BACK,
             _QUEUED + "; refused `not_last_transaction` when Leat, asked on arrival, lists a "
             "newer transaction on the card (Leat reverses only the last: 55025)",
             "the card's transactions: the one right after ours of the opposite amount -> "
             "done, never sent twice; a later one slipped in -> `failed` (55025)"),
        Verb("prepaid.reverse", Rule.GIVES_BACK, _QUEUED,
             "the contact's newest prepaid transactions: a newer one of the opposite amount "
             "-> done, never sent twice; outcome on `events/command`"),
    )
}


def rules_table() -> str:
    """The README's rules table (Markdown), one row per verb in table order."""
    rows = [
        "| verb | kind | offline | ambiguous outcome resolved by |",
        "|---|---|---|---|",
    ]
    rows += [f"| `{v.name}` | {v.rule.value} | {v.offline} | {v.reconcile} |"
             for v in VERBS.values()]
    return "\n".join(rows)
