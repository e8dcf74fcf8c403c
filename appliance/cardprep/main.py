"""provisioning/prepare-card: from a blank Raspberry Pi OS card (or image) and a per-device
file to a card that boots into a leat-scanner device without PyPI (docs/provisioning.md,
"From a blank card"). Exit status: 0 done, 1 failed (nothing half-written on the boot
partition), 2 bad command line or per-device file."""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

from appliance.cardprep import boot
from appliance.cardprep.card import (
    DEFAULT_ARCH,
    WHEELHOUSE,
    CardError,
    Partitions,
    build_requirements,
    check_partitions,
    ensure_wheelhouse,
    image_python,
    init_format,
    os_release,
    pinned_requirements,
    remove_if_ours,
    write_if_changed,
)
from appliance.cardprep.device import Device, DeviceFileError, read_device_file, split_batch

REPO: Final = Path(__file__).resolve().parents[2]
DROPIN: Final = "etc/systemd/system/leat-scanner-firstboot.service.d/10-prepare-card.conf"
CREDSTORE: Final = "etc/credstore"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prepare-card",
        description="Prepare a Raspberry Pi OS card for one leat-scanner device "
                    "(docs/provisioning.md, 'From a blank card').")
    parser.add_argument("--device", type=Path, metavar="FILE",
                        help="the per-device file (TOML or KEY=value)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--card", type=Path, metavar="DIR",
                       help="where the card is mounted: DIR/bootfs and DIR/rootfs "
                            "(e.g. /media/$USER)")
    where.add_argument("--image", type=Path, metavar="IMG",
                       help="a Raspberry Pi OS .img (loop-mounted: needs root)")
    parser.add_argument("--boot", type=Path, metavar="DIR", help="the boot partition")
    parser.add_argument("--rootfs", type=Path, metavar="DIR", help="the root partition")
    parser.add_argument("--init", choices=["auto", "cloud-init", "firstrun"], default="auto",
                        help="first-boot mechanism (auto: cloud-init when the image has it)")
    parser.add_argument("--fleet-key", type=Path, metavar="FILE",
                        help="install this fleet key (enrolment codes) on the root partition")
    parser.add_argument("--wheelhouse-from", type=Path, metavar="DIR",
                        help="copy wheels from DIR (made by an earlier card) instead of "
                             "pip download")
    parser.add_argument("--wheel-arch", default=DEFAULT_ARCH,
                        help=f"the device's CPU for the wheels (default {DEFAULT_ARCH}; "
                             "x86_64 for a test root file system)")
    parser.add_argument("--batch", type=Path, metavar="CSV",
                        help="split a CSV of devices into per-device files (with --out)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="where --batch writes")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.batch is not None:
            if args.out is None or args.device is not None:
                parser.error("--batch CSV goes with --out DIR (and nothing else)")
            written = split_batch(args.batch, args.out)
            print(f"{len(written)} per-device file(s) in {args.out} (0600: they hold Wi-Fi "
                  "passphrases); prepare each card with --device FILE")
            return 0
        if args.device is None:
            parser.error("--device FILE is required (or --batch CSV --out DIR)")
        device = read_device_file(args.device)
        if not device.shop_uuid:
            print("prepare-card: warning: no shop_uuid: once a Leat token is installed the "
                  "daemon refuses to start until leat.shop_uuid is set", file=sys.stderr)
        if args.fleet_key is not None:
            _check_secret_file(args.fleet_key)
        with _partitions(args) as parts:
            changes = prepare(device, parts, args)
    except DeviceFileError as exc:
        print(f"prepare-card: {exc}", file=sys.stderr)
        return 2
    except CardError as exc:
        print(f"prepare-card: {exc}", file=sys.stderr)
        return 1
    if changes:
        print(f"card ready for {device.device_id}: {changes} change(s)")
    else:
        print(f"nothing to change: the card is already prepared for {device.device_id}")
    return 0


def _check_secret_file(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise DeviceFileError(f"--fleet-key {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise DeviceFileError(f"--fleet-key {path} is readable by others: chmod 600 {path}")


@contextlib.contextmanager
def _partitions(args: argparse.Namespace) -> Iterator[Partitions]:
    if args.image is not None:
        with _mounted_image(args.image) as parts:
            yield parts
        return
    if args.card is not None:
        yield check_partitions(args.card / "bootfs", args.card / "rootfs")
        return
    if args.boot is None or args.rootfs is None:
        raise DeviceFileError("say where the card is: --card DIR, --image IMG, or "
                              "--boot DIR --rootfs DIR")
    yield check_partitions(args.boot, args.rootfs)


@contextlib.contextmanager
def _mounted_image(image: Path) -> Iterator[Partitions]:
    """Loop-mount partitions 1 (boot) and 2 (root) of `image` (losetup -P; root only)."""
    if os.geteuid() != 0:
        raise CardError("--image needs root (losetup, mount): sudo, or mount the card and "
                        "use --card/--boot/--rootfs")
    if not image.is_file():
        raise CardError(f"--image {image}: no such file")
    loop = _run(["losetup", "--find", "--show", "--partscan", str(image)]).strip()
    mounts: list[Path] = []
    try:
        top = Path(tempfile.mkdtemp(prefix="prepare-card-"))
        for number, name in ((2, "rootfs"), (1, "bootfs")):
            point = top / name
            point.mkdir()
            part = f"{loop}p{number}"
            if not Path(part).exists():
                raise CardError(f"{image}: no partition {number} (not a Raspberry Pi OS image?)")
            _run(["mount", part, str(point)])
            mounts.append(point)
        yield check_partitions(top / "bootfs", top / "rootfs")
    finally:
        for point in reversed(mounts):
            _run(["umount", str(point)])
        _run(["losetup", "--detach", loop])


def _run(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        raise CardError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result.stdout


def prepare(device: Device, parts: Partitions, args: argparse.Namespace) -> int:
    """Root partition first (the long part), boot partition last: a card whose boot
    partition has the hooks is complete. Returns the number of changes."""
    python = image_python(parts.root)
    release = os_release(parts.root).get("VERSION_CODENAME", "?")
    mechanism = init_format(parts.root) if args.init == "auto" else args.init
    print(f"image: {release}, Python {python}, first boot by {mechanism}")
    changes = _provision_root(device, parts.root)
    constraints = (REPO / "provisioning" / "constraints.txt").read_text()
    pins = pinned_requirements(constraints, python)
    build = build_requirements((REPO / "pyproject.toml").read_text())
    if ensure_wheelhouse(parts.root / WHEELHOUSE.lstrip("/"), pins, build, python=python,
                         arch=args.wheel_arch, source=args.wheelhouse_from,
                         pip=[sys.executable, "-m", "pip"]):
        print(f"> wheelhouse {WHEELHOUSE}: {len(pins)} pinned wheels for Python {python}")
        changes += 1
    changes += write_if_changed(parts.root / DROPIN, _dropin())
    if args.fleet_key is not None:
        store = parts.root / CREDSTORE
        store.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = args.fleet_key.read_text()
        changes += write_if_changed(store / "leat-scanner.enrol-key", key, 0o600)
    changes += _write_boot(device, parts.boot, mechanism)
    return changes


def _provision_root(device: Device, root: Path) -> int:
    argv = [str(REPO / "provisioning" / "provision"), "--root", str(root),
            "--device-id", device.device_id]
    for option, value in (("--mqtt-host", device.mqtt_host), ("--shop-uuid", device.shop_uuid),
                          ("--portal-url", device.portal_url)):
        if value:
            argv += [option, value]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
    sys.stdout.write(result.stdout)
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        raise CardError(f"provisioning the root partition failed (exit {result.returncode})")
    return 0 if "nothing to change" in result.stdout else 1


def _dropin() -> str:
    return "\n".join([
        "# Written by provisioning/prepare-card: the first boot installs the pinned wheels",
        "# from the card (no PyPI needed) and leaves what it could not do in a status file.",
        "[Service]",
        f"Environment=PIP_NO_INDEX=1 PIP_FIND_LINKS={WHEELHOUSE}",
        "ExecStopPost=/opt/leat-scanner/current/src/provisioning/firstboot-status",
    ]) + "\n"


def _write_boot(device: Device, bootfs: Path, mechanism: str) -> int:
    changes = 0
    cmdline_path = bootfs / "cmdline.txt"
    current = cmdline_path.read_text()
    if mechanism == "cloud-init":
        user, network = boot.user_data(device), boot.network_config(device)
        instance = boot.instance_id(device, user, network)
        changes += write_if_changed(bootfs / "user-data", user, None)
        if network:
            changes += write_if_changed(bootfs / "network-config", network, None)
        else:
            changes += remove_if_ours(bootfs / "network-config", boot.MARK)
        changes += write_if_changed(bootfs / "meta-data", f"{boot.MARK}\ninstance-id: {instance}\n",
                                    None)
        changes += remove_if_ours(bootfs / "firstrun.sh", boot.MARK)
        line = boot.cmdline(current, f" ds=nocloud;i={instance}")
    else:
        changes += write_if_changed(bootfs / "firstrun.sh", boot.firstrun_sh(device), None)
        for name in ("user-data", "network-config", "meta-data"):
            changes += remove_if_ours(bootfs / name, boot.MARK)
        line = boot.cmdline(current, boot.FIRSTRUN_HOOK)
    if line != current:
        write_if_changed(cmdline_path, line, None)
        changes += 1
    return changes


if __name__ == "__main__":
    raise SystemExit(main())
