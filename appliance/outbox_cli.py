"""The technician's `leat-scanner outbox list|show|retry|drop|repair`.

`list` prints an aligned table (or one JSON object per line with `--json`); `show` prints
one item with its body pretty-printed. Both open the file read-only and never create one (a
missing outbox is an error). Bodies are shown as the POS sent them, except that a
`contact.email` and a command's `release_key` are masked. A give-back command (kind
`command`) is listed under its verb, keyed by the POS's request_id. `drop` only acts with
`--yes` (it prints what it would remove otherwise). Unknown ids and refused transitions
print an error and exit 1. `repair` says why a damaged outbox refuses orders; with
`--accept-loss` it makes it usable again (`outbox_guard.repair`). Run as root, the files
are given back to the state directory's owner afterwards, so the service user can still
write them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from appliance import outbox_guard
from appliance.config import DEFAULT_PATH
from appliance.errors import OutboxError
from appliance.outbox import Outbox
from appliance.outbox_items import Item, Kind, State
from appliance.privacy import mask_email

log = logging.getLogger(__name__)

ERROR_WIDTH = 48


READ_ONLY = ("list", "show")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the list/show/retry/drop/repair subcommands (dest `outbox_command`) to `parser`."""
    commands = parser.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    shared = argparse.ArgumentParser(add_help=False)
    # Also after the action (`outbox list --config X`); SUPPRESS keeps a value given before it.
    shared.add_argument("--config", type=Path, default=argparse.SUPPRESS,
                        help=f"config file (default {DEFAULT_PATH})")
    shared.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        default=argparse.SUPPRESS, help="override logging.level")
    listing = commands.add_parser("list", help="items in the outbox, oldest first",
                                  parents=[shared])
    listing.add_argument(
        "--state", choices=[str(s) for s in State], action="append",
        help="only items in this state (repeatable)",
    )
    listing.add_argument("--limit", type=int, default=100, help="at most this many (100)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    show = commands.add_parser("show", help="one item, body included", parents=[shared])
    show.add_argument("id", type=int, metavar="ID")
    show.add_argument("--json", action="store_true", help="as one JSON object")
    retry = commands.add_parser("retry", help="send a dead item again (attempts reset)",
                                parents=[shared])
    retry.add_argument("id", type=int, metavar="ID")
    drop = commands.add_parser("drop", help="remove a pending or dead item for good",
                               parents=[shared])
    drop.add_argument("id", type=int, metavar="ID")
    drop.add_argument("--yes", action="store_true", help="really drop it")
    repair = commands.add_parser(
        "repair", help="why a damaged outbox refuses orders; --accept-loss to use it again",
        parents=[shared])
    repair.add_argument("--accept-loss", action="store_true",
                        help="keep what is readable, set the rest aside, take orders again")


def run(args: argparse.Namespace, path: Path, out: TextIO) -> int:
    """Open the outbox at `path` as the action needs (read-only for list/show, never
    creating one) and run the action; 1 with a message on stderr when it cannot."""
    action = args.outbox_command
    try:
        _settle_owner(path)
        if action == "repair":
            return _repair(args, path, out)
        outbox = Outbox(path, create=False, readonly=action in READ_ONLY)
    except OutboxError as exc:
        print(f"leat-scanner outbox: {exc}", file=sys.stderr)
        return 1
    reason = None
    try:
        if action in READ_ONLY:
            with contextlib.suppress(OutboxError):  # the action itself says what is wrong
                reason = outbox.damage()
            if reason is not None:
                print(f"leat-scanner outbox: warning: the outbox is damaged and refuses new "
                      f"orders: {reason} (see `leat-scanner outbox repair`)", file=sys.stderr)
        return main(args, outbox, out)
    finally:
        outbox.close()
        with contextlib.suppress(OutboxError):
            _settle_owner(path)  # SQLite may have made -wal/-shm files, even read-only


def _settle_owner(path: Path) -> None:
    """As root (sudo): the outbox files go back to the state directory's owner."""
    if os.geteuid() == 0 and path.parent.exists():
        outbox_guard.settle_owner(path)


def _repair(args: argparse.Namespace, path: Path, out: TextIO) -> int:
    reason = outbox_guard.diagnose(path)
    if reason is None:
        print(f"outbox {path} is not damaged: nothing to repair", file=out)
        return 0
    print(f"damaged: {reason}", file=out)
    if not args.accept_loss:
        print("Orders acknowledged after the damage happened may be lost. Stop the service "
              "(systemctl stop leat-scanner), then run `leat-scanner outbox repair "
              "--accept-loss`: it keeps the database if SQLite can still read it, or moves "
              "the damaged files aside (*.aside-<time>) and starts an empty outbox.",
              file=out)
        return 1
    print(outbox_guard.repair(path), file=out)
    return 0


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
        str(item.id), kind_label(item), item.external_identifier,
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
    command = item.kind is Kind.COMMAND
    print(f"item {item.id}: {kind_label(item)} {item.external_identifier}", file=out)
    lookup = ("Leat is asked whether it took effect before sending again" if command
              else "look up before re-posting")
    lines = [
        ("state", str(item.state) + (f" (ambiguous: {lookup})" if item.ambiguous else "")),
        ("request id", item.external_identifier if command else None),
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


def kind_label(item: Item) -> str:
    """`order`, `return`, or a command's verb (`command` when it has none)."""
    verb = item.body.get("verb")
    if item.kind is Kind.COMMAND and isinstance(verb, str) and verb:
        return verb
    return str(item.kind)


def mask_key(key: str) -> str:
    """A release key shown by its first 4 characters only (it unlocks a voucher)."""
    return key[:4] + "…" if len(key) > 4 else "…"


def as_json(item: Item) -> dict[str, Any]:
    """The item as a JSON-ready dict, `body.contact.email` and a command's
    `args.release_key` masked."""
    body = dict(item.body)
    contact = body.get("contact")
    if isinstance(contact, dict) and isinstance(contact.get("email"), str):
        body["contact"] = {**contact, "email": mask_email(contact["email"])}
    args = body.get("args")
    if isinstance(args, dict) and isinstance(args.get("release_key"), str):
        body["args"] = {**args, "release_key": mask_key(args["release_key"])}
    verb = body.get("verb") if item.kind is Kind.COMMAND else None
    return {
        "id": item.id, "kind": str(item.kind), "verb": verb if isinstance(verb, str) else None,
        "external_identifier": item.external_identifier,
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
