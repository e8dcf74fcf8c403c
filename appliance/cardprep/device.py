"""The per-device file `prepare-card` reads (TOML or KEY=value), and the CSV batch that
makes them. Standard library only: it runs on the technician's machine."""

from __future__ import annotations

import csv
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Final

# The same patterns as provisioning/provision (device id, host, shop uuid, portal).
DEVICE_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
HOST: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:-]{0,252}$")
UUID: Final = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
PORTAL: Final = re.compile(
    r"^https://[A-Za-z0-9][A-Za-z0-9.-]{0,252}(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$"
)
HOSTNAME: Final = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")  # RFC 1123 label
USER: Final = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")  # Debian's NAME_REGEX
SSH_KEY: Final = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh.com) "
    r"[A-Za-z0-9+/]+={0,3}( [ -~]{0,200})?$"
)
COUNTRY: Final = re.compile(r"^[A-Z]{2}$")
TIMEZONE: Final = re.compile(r"^[A-Za-z]+(/[A-Za-z0-9_+-]+){0,2}$")
HEX_PSK: Final = re.compile(r"^[0-9a-fA-F]{64}$")
MAX_FILE_BYTES: Final = 64 * 1024
MAX_ROWS: Final = 5000
# Words that mark a secret: refused in a per-device file (it ends up beside the card).
SECRET_WORDS: Final = ("token", "secret", "password", "passwd", "credential", "private")


class DeviceFileError(ValueError):
    """A per-device file or CSV row that cannot be used; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Device:
    """One device's card settings (no secret except the Wi-Fi passphrase)."""

    device_id: str
    ssh_key: str
    hostname: str = ""
    user: str = "leat"
    wifi_ssid: str = ""
    wifi_psk: str = ""
    wifi_country: str = ""
    timezone: str = ""
    mqtt_host: str = ""
    shop_uuid: str = ""
    portal_url: str = ""

    @property
    def host_name(self) -> str:
        return self.hostname or self.device_id.lower().replace("_", "-")


KEYS: Final = tuple(f.name for f in fields(Device))


def from_mapping(values: Mapping[str, object], where: str) -> Device:
    """A validated Device; DeviceFileError names `where` and the key."""
    clean: dict[str, str] = {}
    for raw_key, raw in values.items():
        key = raw_key.strip().lower()
        if key not in KEYS:
            if any(word in key for word in SECRET_WORDS):
                raise DeviceFileError(
                    f"{where}: {raw_key}: secrets never go on the card; install them with "
                    "`leat-scanner provision secrets` over SSH or an enrolment code "
                    "(docs/enrolment.md)")
            raise DeviceFileError(f"{where}: unknown key {raw_key!r} (known: {', '.join(KEYS)})")
        if not isinstance(raw, str):
            raise DeviceFileError(f"{where}: {key} must be a string")
        clean[key] = raw.strip()
    for required in ("device_id", "ssh_key"):
        if not clean.get(required):
            raise DeviceFileError(f"{where}: {required} is required")
    clean["shop_uuid"] = clean.get("shop_uuid", "").lower()
    clean["wifi_country"] = clean.get("wifi_country", "").upper()
    device = Device(**clean)
    _check(device, where)
    return device


def _check(device: Device, where: str) -> None:
    checks: list[tuple[str, re.Pattern[str], str]] = [
        ("device_id", DEVICE_ID, "1-64 letters, digits, '-' or '_' (e.g. counter-1)"),
        ("ssh_key", SSH_KEY, "one OpenSSH public key line (ssh-ed25519 AAAA... comment)"),
        ("user", USER, "a Debian user name (lower case, e.g. leat)"),
    ]
    optional: list[tuple[str, re.Pattern[str], str]] = [
        ("hostname", HOSTNAME, "lower-case letters, digits and '-', at most 63"),
        ("wifi_country", COUNTRY, "a two-letter country code (e.g. NL)"),
        ("timezone", TIMEZONE, "a time zone name (e.g. Europe/Amsterdam)"),
        ("mqtt_host", HOST, "a host name or IP address"),
        ("shop_uuid", UUID, "a UUID (8-4-4-4-12 hex digits)"),
        ("portal_url", PORTAL, "an https:// URL without query"),
    ]
    for key, pattern, hint in checks + optional:
        value = getattr(device, key)
        if (value or (key, pattern, hint) in checks) and not pattern.match(value):
            raise DeviceFileError(f"{where}: {key} {_shown(key, value)} is not valid: {hint}")
    if not HOSTNAME.match(device.host_name):
        raise DeviceFileError(f"{where}: device_id {device.device_id!r} is no host name: "
                              "set hostname")
    if device.wifi_ssid:
        if not 1 <= len(device.wifi_ssid.encode()) <= 32:
            raise DeviceFileError(f"{where}: wifi_ssid must be 1-32 bytes")
        if not device.wifi_country:
            raise DeviceFileError(f"{where}: wifi_country is required with wifi_ssid "
                                  "(the radio stays off without it)")
        psk = device.wifi_psk
        if not (HEX_PSK.match(psk) or (8 <= len(psk) <= 63 and psk.isascii()
                                       and psk.isprintable())):
            raise DeviceFileError(f"{where}: wifi_psk must be 8-63 printable ASCII characters "
                                  "or 64 hex digits (the value is not shown)")
    elif device.wifi_psk:
        raise DeviceFileError(f"{where}: wifi_psk without wifi_ssid")


def _shown(key: str, value: str) -> str:
    return repr(value[:40] + ("..." if len(value) > 40 else ""))


def read_device_file(path: Path) -> Device:
    """A per-device file: TOML (`key = "value"`, .toml) or env style (`KEY=value`)."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise DeviceFileError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DeviceFileError(f"{path}: cannot read it: {exc}") from None
    if path.suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise DeviceFileError(f"{path}: not TOML: {exc}") from None
        return from_mapping(data, str(path))
    return from_mapping(_env_lines(text, path), str(path))


def _env_lines(text: str, path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise DeviceFileError(f"{path} line {number}: expected KEY=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def to_toml(device: Device) -> str:
    """The per-device file for `device` (TOML basic strings: JSON's escapes are TOML's)."""
    lines = ["# leat-scanner card settings (provisioning/prepare-card --device THIS_FILE)"]
    for key in KEYS:
        value = getattr(device, key)
        if value:
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def split_batch(csv_path: Path, out: Path) -> list[Path]:
    """One `<device_id>.toml` per CSV row in `out` (0600: they hold Wi-Fi passphrases).
    Every row is checked before anything is written; errors name the CSV line."""
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DeviceFileError(f"{csv_path}: cannot read it: {exc}") from None
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames:
        raise DeviceFileError(f"{csv_path}: empty (expected a header line: {', '.join(KEYS)})")
    devices: list[Device] = []
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if len(devices) >= MAX_ROWS:
            raise DeviceFileError(f"{csv_path}: more than {MAX_ROWS} devices")
        if None in row or any(v is None for v in row.values()):
            raise DeviceFileError(f"{csv_path} line {line}: wrong number of columns")
        values = {k: v for k, v in row.items() if v}
        if not values:
            continue
        device = from_mapping(values, f"{csv_path} line {line}")
        for name in (device.device_id.lower(), "host:" + device.host_name):
            if name in seen:
                raise DeviceFileError(f"{csv_path} line {line}: {name.removeprefix('host:')} "
                                      f"already used on line {seen[name]}")
            seen[name] = line
        devices.append(device)
    if not devices:
        raise DeviceFileError(f"{csv_path}: no device rows")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for device in devices:
        path = out / f"{device.device_id}.toml"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(to_toml(device))
        os.chmod(path, 0o600)
        written.append(path)
    return written
