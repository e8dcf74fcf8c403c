"""The `leat-scanner` command: run | demo | sandbox | decode | token | outbox | snapshot | check
| enrol-code | provision secrets."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TextIO

from appliance import __version__, config, logs
from appliance.errors import ApplianceError, CameraError, ConfigError
from appliance.outbox_guard import OutboxTooNew

if TYPE_CHECKING:  # imported where used: a command loads only what it needs
    from appliance.codes import Classifier
    from appliance.decode import Decoder

log = logging.getLogger(__name__)

EXIT_CONFIG = 2
EXIT_OUTBOX_TOO_NEW = 3  # the unit's RestartPreventExitStatus=; provision --upgrade rolls back


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    logs.setup(args.log_level or "INFO")
    try:
        cfg = _load(args)
        if args.log_level is None:
            logging.getLogger().setLevel(cfg.logging.level)
        code: int = args.handler(args, cfg)
        return code
    except ConfigError as exc:
        print(f"leat-scanner: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OutboxTooNew as exc:
        print(f"leat-scanner: {exc}", file=sys.stderr)
        return EXIT_OUTBOX_TOO_NEW
    except ApplianceError as exc:
        print(f"leat-scanner: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leat-scanner", description="Leat loyalty QR scanner appliance."
    )
    parser.add_argument("--version", action="version", version=f"leat-scanner {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", type=Path, help=f"config file (run, check: default {config.DEFAULT_PATH})"
    )
    common.add_argument(
        "--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="override logging.level"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="the long-running scanner process", parents=[common]
    )
    run.set_defaults(handler=_run, config_default=config.DEFAULT_PATH)

    demo = commands.add_parser(
        "demo", help="replay sample codes through the whole scan path", parents=[common]
    )
    demo.add_argument("--fps", type=float, default=4.0, help="replay speed (frames per second)")
    demo.set_defaults(handler=_demo, config_default=None)

    decode = commands.add_parser(
        "decode", help="show what each image contains", parents=[common]
    )
    decode.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    decode.add_argument("--json", action="store_true", help="one JSON object per line")
    decode.set_defaults(handler=_decode, config_default=None)

    sandbox = commands.add_parser(
        "sandbox", help="a Leat-compatible API server for development", parents=[common]
    )
    sandbox.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sandbox.add_argument("--port", type=int, default=8765, help="port (0: any free port)")
    sandbox.add_argument("--seed", type=Path, help="seed file (default: the bundled demo data)")
    sandbox.set_defaults(handler=_sandbox, config_default=None)

    token = commands.add_parser(
        "token",
        help="print a Leat Loyalty Token URL (points to claim, for a receipt QR)",
        parents=[common],
    )
    token.add_argument("--shop-uuid", required=True)
    token.add_argument("--unique-id", required=True, help="unique forever, e.g. the order id")
    token.add_argument("--unit-value", required=True, help="amount in major units, e.g. 10.40")
    token.add_argument("--unit-name", default="purchase_amount")
    token.add_argument("--timestamp", type=int, help="Unix seconds (default: now)")
    token.add_argument("--secret-file", type=Path, required=True, help="account secret (0600)")
    token.add_argument("--portal", required=True, help="contacts portal URL, https://...")
    token.set_defaults(handler=_token, config_default=None)

    outbox = commands.add_parser(
        "outbox", help="orders waiting for Leat: list | show | retry | drop | repair",
        parents=[common],
    )
    from appliance.outbox_cli import add_arguments as add_outbox_arguments

    add_outbox_arguments(outbox)
    outbox.set_defaults(handler=_outbox, config_default=config.DEFAULT_PATH)

    snapshot = commands.add_parser(
        "snapshot", help="save the camera's current frame for support (docs/web.md)",
        parents=[common],
    )
    snapshot.set_defaults(handler=_snapshot, config_default=config.DEFAULT_PATH)

    check = commands.add_parser(
        "check", help="validate the config and show the effective values", parents=[common]
    )
    check.set_defaults(handler=_check, config_default=config.DEFAULT_PATH)
    from appliance.enrol_cli import add_commands as add_enrol_commands

    add_enrol_commands(commands, common)
    return parser


def _load(args: argparse.Namespace) -> config.Config:
    path: Path | None = args.config or args.config_default
    return config.load(path)


def _run(args: argparse.Namespace, cfg: config.Config) -> int:
    from appliance.assembly import build
    from appliance.web.run import attach

    _validated(cfg)
    service = build(cfg)
    stop = _stop_on_signals()
    log.info("leat-scanner %s running as %s on %s", __version__, cfg.device.id, cfg.base_topic)
    web = attach(cfg, service)  # the technician page and `leat-scanner snapshot`
    try:
        return service.run(stop)
    finally:
        web.close()


def _snapshot(args: argparse.Namespace, cfg: config.Config) -> int:
    from appliance.web.snapshot import snapshot

    print(snapshot(cfg))
    return 0


def _demo(args: argparse.Namespace, cfg: config.Config) -> int:
    from appliance.demo import run_demo

    if args.log_level is None:  # the demo's console is for the MQTT messages
        logging.getLogger().setLevel(logging.WARNING)
    return run_demo(cfg, configured=args.config is not None, fps=args.fps, stop=_stop_on_signals())


def _decode(args: argparse.Namespace, cfg: config.Config, out: TextIO | None = None) -> int:
    from appliance.codes import Classifier
    from appliance.decode import Decoder
    from appliance.ladder import parse_formats

    out = out or sys.stdout
    device_reads = {*cfg.decode.formats, *(f.name for f in parse_formats(cfg.decode.formats))}
    # The technician also sees Micro QR (segno and others print short texts that way),
    # which the device leaves off: it misreads clutter (docs/benchmarks.md).
    extra = tuple(name for name in TECHNICIAN_FORMATS if name not in cfg.decode.formats)
    decoder = Decoder(cfg.decode.model_copy(update={"formats": (*cfg.decode.formats, *extra)}))
    classifier = Classifier(cfg.codes)
    replay_log = logging.getLogger("appliance.replay")  # not "replaying 1 image(s)" per file
    level = replay_log.level
    replay_log.setLevel(logging.WARNING)
    try:
        status = _decode_each(args, decoder, classifier, device_reads, out)
    finally:
        replay_log.setLevel(level)
    return status


def _decode_each(args: argparse.Namespace, decoder: Decoder, classifier: Classifier,
                 device_reads: set[str], out: TextIO) -> int:
    """`_decode`'s loop: one line per image; 1 when any image was unreadable."""
    from appliance.replay import ReplaySource

    status = 0
    for path in _image_paths(args.images):
        record: dict[str, object] = {"file": str(path)}
        try:
            frame = ReplaySource([path], fps=0).read()
        except CameraError as exc:
            status = 1
            record |= {"scans": [], "error": str(exc)}
        else:
            assert frame is not None  # a source of one image yields it
            result = decoder.decode(frame)
            scans = []
            for scan in result.scans:
                found = {"text": scan.text, "format": scan.format,
                         "kind": classifier.classify(scan.text).kind.value}
                if scan.format not in device_reads:
                    found["ignored"] = f"the device does not read {scan.format} (decode.formats)"
                scans.append(found)
            record["scans"] = scans
            if result.rejected:
                record["rejected"] = [
                    {"format": r.format, "reason": r.reason, "text": _escaped(r.text)}
                    for r in result.rejected
                ]
        out.write(_decode_line(record, args.json) + "\n")
    return status


TECHNICIAN_FORMATS = ("MicroQRCode",)


def _image_paths(paths: Sequence[Path]) -> list[Path]:
    """The paths given, each folder replaced by its images in name order."""
    from appliance.replay import IMAGE_SUFFIXES

    found: list[Path] = []
    for path in paths:
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                        and p.is_file()) if path.is_dir() else []
        found += images or [path]  # an empty folder is reported by ReplaySource
    return found


def _escaped(text: str) -> str:
    """`text` with every unprintable character (controls, U+202E, ...) and `\\` escaped."""
    return "".join(c if c.isprintable() and c != "\\" else ascii(c)[1:-1] for c in text)


def _decode_line(record: dict[str, object], as_json: bool) -> str:
    if as_json:
        return json.dumps(record, ensure_ascii=False)
    if "error" in record:
        return f"{record['file']}: error: {record['error']}"
    parts = [f"{s['kind']} {s['format']} {s['text']!r}"
             + (f" ({s['ignored']})" if "ignored" in s else "")
             for s in record["scans"]]  # type: ignore[attr-defined]
    parts += [f"refused {r['format']} '{r['text']}': {r['reason']}"
              for r in record.get("rejected", [])]  # type: ignore[attr-defined]
    return f"{record['file']}: " + ("; ".join(parts) if parts else "no code")


def _sandbox(args: argparse.Namespace, cfg: config.Config) -> int:
    from appliance.sandbox.server import serve

    try:
        serve(args.host, args.port, args.seed)
    except OSError as exc:  # the port is taken, or the address is not this machine's
        raise ApplianceError(
            f"sandbox cannot listen on {args.host}:{args.port}: {exc.strerror or exc} "
            "(another sandbox running? try --port 0 for any free port)"
        ) from None
    return 0


def _token(args: argparse.Namespace, cfg: config.Config) -> int:
    from appliance.leat.token import loyalty_token_url

    secret = config.read_secret("leat-account-secret", args.secret_file)
    assert secret is not None  # a named file either yields a secret or raises
    try:
        url = loyalty_token_url(
            portal_url=args.portal,
            shop_uuid=args.shop_uuid,
            unique_id=args.unique_id,
            unit_value=args.unit_value,
            unit_name=args.unit_name,
            timestamp=args.timestamp,
            secret=secret,
        )
    except ValueError as exc:
        raise ConfigError([str(exc)]) from None
    print(url)
    return 0


def _outbox(args: argparse.Namespace, cfg: config.Config) -> int:
    from appliance.outbox_cli import run

    return run(args, cfg.outbox_path, sys.stdout)


_STORED = {
    True: "installed as a systemd credential (the service gets it at start)",
    None: "not visible to this user (systemd credentials are root's: sudo leat-scanner check "
          "shows whether it is installed)",
}


def _check(args: argparse.Namespace, cfg: config.Config) -> int:
    found = _validated(cfg, credential_store=True)
    for name, present in found.secrets.items():
        shown = "present" if present else "not configured"
        print(f"secret {name}: {_STORED.get(found.stored.get(name, False), shown)}")
    print(json.dumps(cfg.model_dump(mode="json"), indent=2))
    print(f"base topic: {cfg.base_topic}")
    print(f"capabilities: {', '.join(config.capabilities(cfg, present=found.secrets))}")
    return 0


def _validated(cfg: config.Config, *, credential_store: bool = False) -> config.Validation:
    """The one validation of `check` and `run`: warnings logged, problems raised (exit 2)."""
    found = config.validate(cfg, credential_store=credential_store)
    for warning in found.warnings:
        log.warning("%s", warning)
    if found.problems:
        raise ConfigError(list(found.problems))
    return found


def _stop_on_signals() -> threading.Event:
    """An Event set by SIGTERM or SIGINT (the daemon's one stop switch)."""
    stop = threading.Event()

    def _handle(signum: int, _frame: FrameType | None) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _handle)
    signal.signal(signal.SIGINT, _handle)
    return stop
