"""The error codes a POS request can be answered with, and the exception that carries one."""

from __future__ import annotations

from typing import Final

MAX_MESSAGE_CHARS: Final = 300  # of an error message: never echo a whole field
ERRORS: Final = (
    "invalid_json",  # not UTF-8 JSON, not an object, a lone surrogate, NaN or Infinity
    "invalid_request",  # unknown verb, or the schema refused it (the message says where)
    "too_large",  # over MAX_REQUEST_BYTES, checked before decoding
    "too_deep",  # nested deeper than MAX_DEPTH, checked before parsing
    "nested_sub_lines",  # a sub-line with sub-lines: Leat's orders have one level
    "invalid_response_topic",  # answered on the default topic instead
    "retained",  # a retained request (handed out again at every subscription): never run
    "amounts_inconsistent",  # a line's total is not price x quantity - discount_amount
    "conflict",  # another body under the same external_identifier
    "outbox_full",
    "storage_damaged",  # the outbox was found damaged: nothing is stored until repaired
    "busy",  # BACKLOG requests already wait: send it again shortly
    "not_configured",  # no Leat configured, or an anonymous order without token settings
    "internal",
    "offline",  # a command: Leat not reachable or not within the deadline; nothing was taken
    "leat_rejected",  # a command: Leat refused (its code and message)
    "expired",  # a value-taking command that arrived after its expiry, or one without an
    # expiry that the broker held while the device was away: never run late
    "not_applied",  # Leat's answer was lost, and Leat shows the call did not happen
    "release_key_lost",  # voucher.lock happened but its answer (the release key) was lost
    "not_last_transaction",  # giftcard.reverse: Leat lists a newer transaction (55025)
    "unknown",  # status unknown: the outcome follows on events/command
    "cannot_tell",  # status unknown, final: a lost money call matches several transactions
    "already_sold",  # giftcard.load of a card with a balance (require_unsold)
    "wrong_contact",  # voucher.redeem naming another contact than the voucher's own
)


class RequestError(Exception):
    """A request we refuse; `code` is the contract's error code (one of `ERRORS`)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(clip(message))
        self.code = code


def clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` cut to `limit` characters, as valid Unicode (a reply must always encode)."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > limit:
        text = text[:limit] + f"... ({len(text) - limit} more characters)"
    return text
