"""The device's default id: `scanner-<last 8 hex digits of the Raspberry Pi serial number>`.

Every new Raspberry Pi OS card is called `raspberrypi`, so the hostname cannot tell two
devices apart (their topics and MQTT client ids would collide); the SoC serial number can.
Where Raspberry Pi OS shows it:

- `/proc/device-tree/serial-number` (the same file as
  `/sys/firmware/devicetree/base/serial-number`): a NUL-terminated string the firmware puts
  in the device-tree root since October 2016 (raspberrypi/linux issue 1670), on every model
  and on 32- and 64-bit kernels alike; it is Linux's standard `serial-number` property
  (torvalds/linux commit 13dd92bb4599).
- the `Serial` line of `/proc/cpuinfo`: 32-bit kernels; 64-bit kernels lacked it
  (raspberrypi/linux issue 2110) until Raspberry Pi's kernel added it back (a Pi 5 on
  Bookworm shows it: raspberrypi/bookworm-feedback issue 129). Other distributions may not.

The first eight digits are zero on models before the Pi 5 and not on the Pi 5
(raspberrypi/documentation pull request 3538): the last eight are used on every model.
Without a serial (not a Pi, a container), the hostname is the fallback and `check` warns.

Standard library only: provisioning runs `python3 -m appliance.identity` before the
virtualenv exists, to write the id into a new config.
"""

from __future__ import annotations

import re
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

SERIAL_PATHS: tuple[Path, ...] = (
    Path("/proc/device-tree/serial-number"),
    Path("/sys/firmware/devicetree/base/serial-number"),
)
CPUINFO = Path("/proc/cpuinfo")
PREFIX = "scanner-"
_SERIAL = re.compile(r"[0-9a-f]{8,32}")
_READ_LIMIT = 64 * 1024  # /proc/cpuinfo of a 4-core Pi is ~1 kB


class DeviceId(NamedTuple):
    """A default device id and where it came from."""

    value: str
    source: Literal["serial", "hostname"]


def serial_number(
    paths: Sequence[Path] | None = None, cpuinfo: Path | None = None
) -> str | None:
    """The Pi's serial number in lower-case hex, or None when there is none to be read."""
    for path in SERIAL_PATHS if paths is None else paths:
        raw = _read(path)
        if raw is not None:
            found = _valid(raw.split("\0", 1)[0])
            if found is not None:
                return found
    text = _read(CPUINFO if cpuinfo is None else cpuinfo)
    for line in (text or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Serial":
            return _valid(value)
    return None


def hostname_id(gethostname: Callable[[], str] = socket.gethostname) -> str:
    """The hostname reduced to the characters of a device id (the default before serials)."""
    name = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "-"
                   for c in gethostname())
    return name.strip("-_")[:64] or "leat-scanner"


def default_device_id(
    paths: Sequence[Path] | None = None,
    cpuinfo: Path | None = None,
    gethostname: Callable[[], str] = socket.gethostname,
) -> DeviceId:
    """`scanner-<serial tail>`, else the hostname (which `check` warns about)."""
    serial = serial_number(paths, cpuinfo)
    if serial is not None:
        return DeviceId(PREFIX + serial[-8:], "serial")
    return DeviceId(hostname_id(gethostname), "hostname")


def _read(path: Path) -> str | None:
    try:
        with path.open("rb") as file:
            return file.read(_READ_LIMIT).decode("ascii", "replace")
    except OSError:
        return None


def _valid(value: str) -> str | None:
    """A serial of 8-32 hex digits whose last eight are not all zero (QEMU shows zeros)."""
    value = value.strip().lower()
    if _SERIAL.fullmatch(value) and int(value[-8:], 16) != 0:
        return value
    return None


def main(argv: Sequence[str]) -> int:
    """`python3 -m appliance.identity [--hostname]`: print the default id and its source."""
    if list(argv) == ["--hostname"]:
        print(hostname_id(), "hostname")
        return 0
    if argv:
        print("usage: python3 -m appliance.identity [--hostname]", file=sys.stderr)
        return 2
    print(*default_device_id())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
