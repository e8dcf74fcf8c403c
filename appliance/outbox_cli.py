"""The technician's `leat-scanner outbox list|show|retry|drop` over an open `Outbox`.

`list` prints an aligned table (or one JSON object per line with `--json`); `show` prints
one item with its body pretty-printed. Bodies are shown as the POS sent them, except that a
`contact.email` is masked. `drop` only acts with `--yes` (it prints what it would remove
otherwise). Unknown ids and refused transitions print an error and exit 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, TextIO

from appliance.errors import OutboxError
from appliance.outbox import Item, Outbox, State
from appliance.privacy import mask_email

log = logging.getLogger(__name__)

ERROR_WIDTH = 48


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the list/show/retry/drop subcommands (dest `outbox_command`) to `parser`."""
    commands = parser.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    listing = commands.add_parser("list", help="items in the outbox, oldest first")
    listing.add_argument(
        "--state", choices=[str(s) for s in State], action="append",
        help="only items in this state (repeatable)",
    )
    listing.add_argument("--limit", type=int, default=100, help="at most this many (100)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    show = commands.add_parser("show", help="one item, body included")
    show.add_argument("id", type=int, metavar="ID")
    show.add_argument("--json", action="store_true", help="as one JSON object")
    retry = commands.add_parser("retry", help="send a dead item again (attempts reset)")
    retry.add_argument("id", type=int, metavar="ID")
    drop = commands.add_parser("drop", help="remove a pending or dead item for good")
    drop.add_argument("id", type=int, metavar="ID")
    drop.add_argument("--yes", action="store_true", help="really drop it")


def main(args: argparse.Namespace, outbox: Outbox, out: TextIO) -> int:
    """Run one outbox action; 0 on success, 1 on an unknown id or a refused action."""
    try:
        action = args.outbox_command
        if action == "list":
            return _list(args, outbox, out)
        if action == "show":
            return _show(args, outbox, out)
        if action == "retry":
            item = outbox.retry(args.id)
            print(f"item {item.id} ({item.kind} {item.external_identifier}) is pending again",
                  file=out)
            return 0
        if action == "drop":
            return _drop(args, outbox, out)
        raise OutboxError(f"unknown outbox action {action!r}")
    except OutboxError as exc:
        print(f"leat-scanner outbox: {exc}", file=sys.stderr)
        return 1


def _list(args: argparse.Namespace, outbox: Outbox, out: TextIO) -> int:
    states = None if not args.state else [State(s) for s in args.state]
    items = outbox.items(states, limit=args.limit)
    now = outbox.now()
    if args.json:
        for item in items:
            print(json.dumps(as_json(item), sort_keys=True, ensure_ascii=False), file=out)
        return 0
    if not items:
        print("outbox is empty" if states is None else "no items in that state", file=out)
        return 0
    header = ("ID", "KIND", "EXTERNAL ID", "STATE", "TRIES", "AGE", "NEXT IN", "LAST ERROR")
    rows = [header, *(_row(item, now) for item in items)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip(), file=out)
    return 0


def _row(item: Item, now: float) -> tuple[str, ...]:
    if item.state is State.PENDING:
        wait = item.next_attempt_at - now
        next_in = "now" if wait <= 0 else duration(wait)
    else:
        next_in = "-"
    error = item.error_message or ""
    if item.error_code is not None:
        error = f"[{item.error_code}] {error}"
    if len(error) > ERROR_WIDTH:
        error = error[: ERROR_WIDTH - 1] + "…"
    return (
        str(item.id), str(item.kind), item.external_identifier,
        str(item.state) + (" ?" if item.ambiguous else ""), str(item.attempts),
        duration(now - item.created_at), next_in, error or "-",
    )


def _show(args: argparse.Namespace, outbox: Outbox, out: TextIO) -> int:
    item = outbox.get(args.id)
    if item is None:
        raise OutboxError(f"no outbox item {args.id}")
    data = as_json(item)
    if args.json:
        print(json.dumps(data, sort_keys=True, ensure_ascii=False), file=out)
        return 0
    now = outbox.now()
    print(f"item {item.id}: {item.kind} {item.external_identifier}", file=out)
    lines = [
        ("state", str(item.state) + (" (ambiguous: look up before re-posting)"
                                     if item.ambiguous else "")),
        ("order", item.order_external_identifier),
        ("customer", item.customer_identifier),
        ("transaction", item.transaction),
        ("attempts", str(item.attempts)),
        ("created", f"{duration(now - item.created_at)} ago"),
        ("updated", f"{duration(now - item.updated_at)} ago"),
        ("next attempt", _row(item, now)[6]),
        ("error", None if item.error_message is None
         else f"{item.error_code if item.error_code is not None else '-'}: "
              f"{item.error_message}"),
        ("result", None if item.result is None else json.dumps(item.result, sort_keys=True)),
    ]
    for label, value in lines:
        if value is not None:
            print(f"  {label + ':':<14}{value}", file=out)
    print("  body:", file=out)
    body = json.dumps(data["body"], indent=2, sort_keys=True, ensure_ascii=False)
    for line in body.splitlines():
        print(f"    {line}", file=out)
    return 0


def _drop(args: argparse.Namespace, outbox: Outbox, out: TextIO) -> int:
    if not args.yes:
        item = outbox.get(args.id)
        if item is None:
            raise OutboxError(f"no outbox item {args.id}")
        print(f"would drop item {item.id} ({item.kind} {item.external_identifier}, "
              f"{item.state}); add --yes to drop it", file=out)
        return 1
    item = outbox.drop(args.id)
    print(f"dropped item {item.id} ({item.kind} {item.external_identifier}, {item.state})",
          file=out)
    return 0


def as_json(item: Item) -> dict[str, Any]:
    """The item as a JSON-ready dict, with `body.contact.email` masked."""
    body = dict(item.body)
    contact = body.get("contact")
    if isinstance(contact, dict) and isinstance(contact.get("email"), str):
        body["contact"] = {**contact, "email": mask_email(contact["email"])}
    return {
        "id": item.id, "kind": str(item.kind), "external_identifier": item.external_identifier,
        "order_external_identifier": item.order_external_identifier, "body": body,
        "customer_identifier": item.customer_identifier, "transaction": item.transaction,
        "state": str(item.state), "attempts": item.attempts,
        "next_attempt_at": item.next_attempt_at, "created_at": item.created_at,
        "updated_at": item.updated_at, "ambiguous": item.ambiguous, "result": item.result,
        "error_code": item.error_code, "error_message": item.error_message,
    }


def duration(seconds: float) -> str:
    """A short human duration: "45s", "3m12s", "2h05m", "4d03h"."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
