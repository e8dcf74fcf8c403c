"""Enrolment codes: Leat secrets carried to one device by a QR code (docs/enrolment.md).

A code is `LSENROL1:` + base64url(nonce || AES-256-GCM(fleet key, payload, aad)), where the
associated data is the prefix and the device id (a code made for one device fails
authentication on every other) and the payload is compact JSON: a single-use id, an expiry
and the secrets. `cryptography`'s AESGCM (PyCA; the 96-bit random nonce it recommends) does
the work; nothing here rolls its own crypto.

On the device, `Enroller.intercept` sits in front of the scan handler: a text with the
prefix is never a scan event. It checks the code (device, single use remembered durably,
expiry once the clock is synchronised), hands the secrets to a store (the daemon's: a spool
the root-owned `leat-scanner provision secrets --from-spool` installs as credentials) and
answers the feedback signal to show. Secrets and codes are never logged.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from appliance.errors import ApplianceError
from appliance.feedback import Signal

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger(__name__)

PREFIX: Final = "LSENROL1:"
KEY_BYTES: Final = 32  # AES-256
NONCE_BYTES: Final = 12
# The device reads codes up to decode.max_text_length (default 512): a longer code would be
# refused by the decoder before it reaches us, so enrol-code refuses to make one.
MAX_CODE_CHARS: Final = 512
MAX_TTL_S: Final = 24 * 3600
MAX_SECRET_BYTES: Final = 2048
# The credentials an enrolment code may carry (names as in the credential store, without
# the `leat-scanner.` prefix): nothing else is ever written from a code.
SECRET_NAMES: Final = ("leat-token", "leat-account-secret", "leat-client-secret")
MAX_USED_IDS: Final = 10_000  # the single-use ledger is bounded; old ids expire anyway
_ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9_-]{16,32}$")
SYNC_FLAG: Final = Path("/run/systemd/timesync/synchronized")


class EnrolError(ApplianceError):
    """A code that cannot be made or is refused; the message never holds a secret."""


def new_fleet_key() -> str:
    """A new fleet key, base64 (what `--fleet-key` files hold)."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def read_fleet_key(text: str) -> bytes:
    """The key bytes of a fleet key file's text; EnrolError when it is not one."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise EnrolError(
            "the fleet key is not base64 (make one: enrol-code --new-fleet-key)"
        ) from None
    if len(key) != KEY_BYTES:
        raise EnrolError(f"the fleet key has {len(key)} bytes, not {KEY_BYTES}")
    return key


def _aad(device_id: str) -> bytes:
    return (PREFIX + device_id).encode("utf-8")


def make_code(
    key: bytes, device_id: str, values: Mapping[str, str], *, ttl_s: float,
    now: float | None = None,
) -> str:
    """An enrolment code for `device_id` carrying `values` (credential name -> secret)."""
    if not values:
        raise EnrolError("nothing to enrol: give at least one secret")
    for name, value in values.items():
        if name not in SECRET_NAMES:
            raise EnrolError(f"{name}: not a credential an enrolment code carries "
                             f"({', '.join(SECRET_NAMES)})")
        _check_value(name, value)
    if not 0 < ttl_s <= MAX_TTL_S:
        raise EnrolError(f"--ttl must be between 1 s and {MAX_TTL_S // 3600} h")
    issued = time.time() if now is None else now
    payload = {
        "j": secrets.token_urlsafe(12),  # the single-use id (16 characters)
        "e": int(issued + ttl_s),
        "s": dict(values),
    }
    plain = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    nonce = secrets.token_bytes(NONCE_BYTES)
    sealed = _aesgcm(key).encrypt(nonce, plain, _aad(device_id))
    code = PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii").rstrip("=")
    if len(code) > MAX_CODE_CHARS:
        raise EnrolError(f"the code would be {len(code)} characters, more than the "
                         f"{MAX_CODE_CHARS} the device reads: install these secrets with "
                         "`provision secrets` over SSH instead")
    return code


def _aesgcm(key: bytes) -> AESGCM:
    """AES-GCM with `key`. `cryptography` is imported on first use: the daemon holds about
    7 MB less while no enrolment code is scanned (measured: RSS with and without it)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


def _check_value(name: str, value: str) -> None:
    if not value or len(value.encode("utf-8")) > MAX_SECRET_BYTES:
        raise EnrolError(f"{name}: empty or longer than {MAX_SECRET_BYTES} bytes")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise EnrolError(f"{name}: holds control characters (one line expected)")


@dataclass(frozen=True, slots=True)
class Enrolment:
    """What an accepted code carried."""

    code_id: str
    expires: int
    values: Mapping[str, str]


def open_code(key: bytes, device_id: str, code: str) -> Enrolment:
    """Decrypt and validate a code for this device; EnrolError says why not."""
    if not code.startswith(PREFIX) or len(code) > MAX_CODE_CHARS:
        raise EnrolError("not an enrolment code")
    body = code[len(PREFIX):]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise EnrolError("malformed enrolment code") from None
    if len(raw) <= NONCE_BYTES + 16:
        raise EnrolError("malformed enrolment code")
    from cryptography.exceptions import InvalidTag

    try:
        plain = _aesgcm(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(device_id))
    except InvalidTag:
        raise EnrolError("refused: made for another device or another fleet key, or "
                         "altered") from None
    try:
        payload = json.loads(plain)
        code_id, expires, values = payload["j"], payload["e"], payload["s"]
    except (ValueError, KeyError, TypeError):
        raise EnrolError("refused: the payload is not an enrolment") from None
    if not (isinstance(code_id, str) and _ID_PATTERN.match(code_id)
            and isinstance(expires, int) and isinstance(values, dict) and values):
        raise EnrolError("refused: the payload is not an enrolment")
    for name, value in values.items():
        if name not in SECRET_NAMES or not isinstance(value, str):
            raise EnrolError(f"refused: unexpected credential {name!r}")
        _check_value(name, value)
    return Enrolment(code_id, expires, dict(values))


def clock_synchronised(flag: Path = SYNC_FLAG) -> bool:
    """True once systemd-timesyncd (or timedatectl) says the clock was synchronised.

    /run/systemd/timesync/synchronized is touched by systemd-timesyncd at its first
    synchronisation (systemd-timesyncd.service(8)); timedatectl's NTPSynchronized covers
    other NTP daemons (chrony). A Pi has no RTC: before either, the clock may be years off.
    """
    if flag.exists():
        return True
    try:
        answer = subprocess.run(
            ["/usr/bin/timedatectl", "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return answer.stdout.strip() == "yes"


class UsedCodes:
    """Single-use ids, remembered durably (one line each, fsynced before a code is used)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def seen(self, code_id: str) -> bool:
        try:
            with self._path.open(encoding="ascii") as lines:
                return any(line.split(" ", 1)[0] == code_id for line in lines)
        except FileNotFoundError:
            return False

    def remember(self, code_id: str, expires: int) -> None:
        self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        count = 0
        if self._path.exists():
            count = sum(1 for _ in self._path.open(encoding="ascii"))
        if count >= MAX_USED_IDS:
            raise EnrolError(f"{self._path} holds {count} used codes: remove it once every "
                             "old code has expired")
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, f"{code_id} {expires}\n".encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)


class SpoolStore:
    """Hands accepted secrets to root: one 0600 JSON file per code in `directory`.

    The daemon runs unprivileged and cannot write /etc/credstore; the path unit
    leat-scanner-enrol.path starts `leat-scanner provision secrets --from-spool` (as root)
    when a file appears, which installs them and restarts the service.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __call__(self, enrolment: Enrolment) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        final = self.directory / f"{enrolment.code_id}.json"
        # Staged beside the directory: the path unit fires on a complete file only.
        staged = self.directory.parent / f".{self.directory.name}-{enrolment.code_id}.tmp"
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(dict(enrolment.values)).encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        staged.replace(final)


class Enroller:
    """The scan path's interceptor for enrolment codes (daemon.py calls it first)."""

    def __init__(
        self,
        device_id: str,
        key: bytes | None,
        used: UsedCodes,
        store: Callable[[Enrolment], None],
        *,
        synchronised: Callable[[], bool] = clock_synchronised,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._device_id = device_id
        self._key = key
        self._used = used
        self._store = store
        self._synchronised = synchronised
        self._clock = clock
        self._lock = threading.Lock()

    def intercept(self, text: str) -> Signal | None:
        """None for an ordinary scan; for an enrolment code, the signal to show."""
        if not text.startswith(PREFIX):
            return None
        try:
            with self._lock:
                self._enrol(text)
        except EnrolError as exc:
            log.warning("enrolment code refused: %s", exc)
            return Signal.DENIED
        except OSError as exc:
            log.error("enrolment code not stored: %s", exc.strerror or exc)
            return Signal.DENIED
        return Signal.ACCEPTED

    def _enrol(self, text: str) -> None:
        if self._key is None:
            raise EnrolError("this device has no fleet key (credential enrol-key): install "
                             "one with `leat-scanner provision secrets --enrol-key-file`")
        enrolment = open_code(self._key, self._device_id, text)
        if self._used.seen(enrolment.code_id):
            raise EnrolError("refused: this code was already used")
        if self._synchronised():
            if self._clock() > enrolment.expires:
                raise EnrolError("refused: the code has expired; make a new one")
        else:
            log.warning("clock not synchronised yet: the enrolment code's expiry is not "
                        "checked (single use and the fleet key still are)")
        self._used.remember(enrolment.code_id, enrolment.expires)  # burnt before use
        self._store(enrolment)
        log.info("enrolment accepted: %s stored for installation",
                 ", ".join(sorted(enrolment.values)))
