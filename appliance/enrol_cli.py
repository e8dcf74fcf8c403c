"""`leat-scanner enrol-code` (technician's machine) and `leat-scanner provision secrets`
(on the device, as root, e.g. over SSH). docs/enrolment.md."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from appliance import config
from appliance.enrol import EnrolError, make_code, new_fleet_key, read_fleet_key
from appliance.enrol_tools import (
    CREDSTORE,
    install_credentials,
    install_spool,
    read_value,
    restart_service,
    write_qr,
)

DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # provisioning's pattern
_TTL = re.compile(r"^(\d{1,5})([smh]?)$")


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register `enrol-code` and `provision secrets` on the CLI's subparsers."""
    code = commands.add_parser(
        "enrol-code", parents=[common],
        help="make an enrolment QR code carrying Leat secrets to one device",
    )
    code.add_argument("--fleet-key", type=Path, required=True, metavar="FILE",
                      help="the fleet key (0600); with --new-fleet-key: created")
    code.add_argument("--new-fleet-key", action="store_true",
                      help="create the fleet key file (refuses to overwrite one) and exit")
    code.add_argument("--device", metavar="ID", help="the device id the code is for")
    code.add_argument("--token-file", metavar="FILE", help="Leat API token (0600), or -")
    code.add_argument("--account-secret-file", metavar="FILE",
                      help="Leat account secret (0600), or -")
    code.add_argument("--ttl", default="10m", help="validity: 90s, 10m, 2h (default 10m)")
    code.add_argument("--png", type=Path, metavar="FILE",
                      help="save the QR code here (default: <device>-enrol.png)")
    code.set_defaults(handler=_enrol_code, config_default=None)

    provision = commands.add_parser(
        "provision", parents=[common], help="device set-up helpers: secrets"
    )
    verbs = provision.add_subparsers(dest="verb", required=True, metavar="VERB")
    put = verbs.add_parser(
        "secrets", parents=[common],
        help="install secrets as systemd credentials (root, 0600), e.g. over SSH",
    )
    put.add_argument("--leat-token-file", metavar="FILE", help="Leat API token, or - (stdin)")
    put.add_argument("--account-secret-file", metavar="FILE", help="account secret, or -")
    put.add_argument("--client-secret-file", metavar="FILE", help="OAuth client secret, or -")
    put.add_argument("--web-password-file", metavar="FILE",
                     help="the technician page's password (web.lan), or -")
    put.add_argument("--enrol-key-file", metavar="FILE",
                     help="the fleet key this device accepts enrolment codes for, or -")
    put.add_argument("--from-spool", type=Path, metavar="DIR",
                     help="install what accepted enrolment codes left in DIR (the path unit)")
    put.add_argument("--credstore", type=Path, default=CREDSTORE,
                     help=f"credential store (default {CREDSTORE})")
    put.add_argument("--restart", action="store_true",
                     help="then restart leat-scanner.service (it reads credentials at start)")
    put.set_defaults(handler=_provision_secrets, config_default=None)


def parse_ttl(text: str) -> int:
    """Seconds from `90s`, `10m`, `2h` or `600`."""
    match = _TTL.match(text.strip())
    if match is None:
        raise EnrolError(f"--ttl {text!r}: use e.g. 90s, 10m or 2h")
    return int(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]]


def _enrol_code(args: argparse.Namespace, cfg: config.Config) -> int:
    try:
        if args.new_fleet_key:
            _create_key(args.fleet_key)
            print(f"fleet key written to {args.fleet_key} (0600): keep it off the cards and "
                  "install it on each device with `provision secrets --enrol-key-file`")
            return 0
        if not args.device or not DEVICE_ID.match(args.device):
            raise EnrolError("--device ID is required (letters, digits, '-', '_'; at most 64)")
        key = read_fleet_key(read_value(str(args.fleet_key), None))
        values = _values(args, {"leat-token": args.token_file,
                                "leat-account-secret": args.account_secret_file})
        code = make_code(key, args.device, values, ttl_s=parse_ttl(args.ttl))
        png = args.png or Path(f"{args.device}-enrol.png")
        write_qr(code, png)
    except EnrolError as exc:
        print(f"leat-scanner enrol-code: {exc}", file=sys.stderr)
        return 2
    print(f"{png}: enrolment code for {args.device}, valid {args.ttl}, single use. Show it "
          "to the device's camera; delete the file afterwards.")
    return 0


def _create_key(path: Path) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise EnrolError(f"{path} exists: a fleet key is never overwritten") from None
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(new_fleet_key() + "\n")


def _values(args: argparse.Namespace, sources: dict[str, str | None]) -> dict[str, str]:
    stdin: str | None = None
    if list(sources.values()).count("-") > 1:
        raise EnrolError("only one secret can come from standard input (-)")
    if "-" in sources.values():
        stdin = sys.stdin.read(8192)
    values = {}
    for name, source in sources.items():
        if source:
            values[name] = read_value(source, stdin)
    return values


def _provision_secrets(args: argparse.Namespace, cfg: config.Config) -> int:
    owner = os.geteuid() == 0
    try:
        if not owner and args.credstore == CREDSTORE:
            raise EnrolError("must run as root: sudo leat-scanner provision secrets ...")
        sources = {"leat-token": args.leat_token_file,
                   "leat-account-secret": args.account_secret_file,
                   "leat-client-secret": args.client_secret_file,
                   "web-password": args.web_password_file,
                   "enrol-key": args.enrol_key_file}
        values = _values(args, sources)
        if "enrol-key" in values:
            read_fleet_key(values["enrol-key"])  # refuse a malformed key now
        if not values and args.from_spool is None:
            raise EnrolError("nothing to install: give --leat-token-file, ... or --from-spool")
        changed = install_credentials(values, args.credstore, owner=owner)
        if args.from_spool is not None:
            changed += install_spool(args.from_spool, args.credstore, owner=owner)
        if changed and args.restart:
            restart_service()
    except EnrolError as exc:
        print(f"leat-scanner provision secrets: {exc}", file=sys.stderr)
        return 2
    if changed:
        print(f"installed in {args.credstore}: {', '.join(changed)}"
              + ("" if args.restart else "; restart: systemctl restart leat-scanner"))
    else:
        print("nothing to change: the credentials are already installed")
    return 0
