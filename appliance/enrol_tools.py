"""The two ends of enrolment outside the scan path: the technician's QR image and root's
installation of secrets into systemd's credential store (`provision secrets`)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from appliance.config import CREDENTIAL_PREFIX, CREDENTIAL_STORES
from appliance.enrol import MAX_SECRET_BYTES, EnrolError, _check_value

log = logging.getLogger(__name__)

CREDSTORE: Final = CREDENTIAL_STORES[0]  # provisioning/lib.sh CREDSTORE
CRED_PREFIX: Final = CREDENTIAL_PREFIX  # provisioning/lib.sh CRED_PREFIX
# What `provision secrets` installs (credential names, as LoadCredential= in the unit).
INSTALLABLE: Final = ("leat-token", "leat-account-secret", "leat-client-secret", "web-password",
                      "enrol-key")
MAX_SPOOL_FILES: Final = 16
MAX_SPOOL_BYTES: Final = 4 * 3 * MAX_SECRET_BYTES  # three secrets, JSON-escaped at worst
QR_MODULE_PX: Final = 8


def write_qr(code: str, path: Path) -> None:
    """A PNG of `code` as a QR code, error correction M, 8 px per module (readable from a
    phone screen). zxing-cpp writes it: the library the device decodes with, no new one
    (its write_barcode() is deprecated for create_barcode() + to_image() since 2.3)."""
    import numpy as np
    import zxingcpp
    from PIL import Image

    barcode = zxingcpp.create_barcode(code, zxingcpp.BarcodeFormat.QRCode, ec_level="M")
    pixels = np.asarray(barcode.to_image(scale=QR_MODULE_PX, add_quiet_zones=True),
                        dtype=np.uint8)
    Image.fromarray(np.ascontiguousarray(pixels), mode="L").save(path, format="PNG")


def install_credentials(
    values: Mapping[str, str], credstore: Path = CREDSTORE, *, owner: bool = True
) -> list[str]:
    """Write each secret as `<credstore>/leat-scanner.<name>`, 0600, owned by root when
    `owner` (written under a temporary name, fsynced, renamed). Returns the names changed."""
    for name, value in values.items():
        if name not in INSTALLABLE:
            raise EnrolError(f"{name}: not a credential leat-scanner uses "
                             f"({', '.join(INSTALLABLE)})")
        _check_value(name, value)
    credstore.mkdir(mode=0o700, parents=True, exist_ok=True)
    changed = []
    for name, value in values.items():
        target = credstore / f"{CRED_PREFIX}{name}"
        data = (value + "\n").encode("utf-8")
        try:
            if target.read_bytes() == data and (target.stat().st_mode & 0o777) == 0o600:
                continue
        except FileNotFoundError:
            pass
        staged = credstore / f".{CRED_PREFIX}{name}.new"
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            if owner:
                os.fchown(fd, 0, 0)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        staged.replace(target)
        changed.append(name)
    return changed


def read_value(source: str, stdin_text: str | None) -> str:
    """A secret from a file (readable by its owner alone) or `-` (standard input)."""
    if source == "-":
        if stdin_text is None:
            raise EnrolError("only one secret can come from standard input")
        text = stdin_text
    else:
        path = Path(source)
        try:
            mode = path.stat().st_mode
            if mode & 0o077:
                raise EnrolError(f"{path} is readable by others (mode {mode & 0o777:o}): "
                                 f"chmod 600 {path}")
            if path.stat().st_size > MAX_SECRET_BYTES + 2:
                raise EnrolError(f"{path}: larger than {MAX_SECRET_BYTES} bytes")
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise EnrolError(f"cannot read {path}: {exc.strerror}") from None
    return text.rstrip("\r\n")


def install_spool(spool: Path, credstore: Path = CREDSTORE, *, owner: bool = True) -> list[str]:
    """Install what accepted enrolment codes left in `spool` (SpoolStore), oldest first, and
    remove each file once installed. A malformed file is removed and reported."""
    try:
        files = sorted((p for p in spool.iterdir() if p.suffix == ".json"),
                       key=lambda p: p.stat().st_mtime)
    except FileNotFoundError:
        return []
    changed: list[str] = []
    for path in files[:MAX_SPOOL_FILES]:
        try:
            if path.stat().st_size > MAX_SPOOL_BYTES:
                raise EnrolError(f"larger than {MAX_SPOOL_BYTES} bytes")
            values = json.loads(path.read_bytes())
            if not isinstance(values, dict) or not all(
                isinstance(v, str) for v in values.values()
            ):
                raise EnrolError("not a name -> secret object")
            changed += install_credentials(values, credstore, owner=owner)
        except (ValueError, EnrolError) as exc:
            log.error("enrolment spool %s dropped: %s", path.name, exc)
        path.unlink()
    return changed


def restart_service(systemctl: str | None = None) -> None:
    """`systemctl try-restart leat-scanner.service`: the unit reads credentials at start.
    $SYSTEMCTL replaces systemctl (the seam provisioning uses, tests/fake_systemctl.py)."""
    command = systemctl or os.environ.get("SYSTEMCTL", "systemctl")
    result = subprocess.run(  # noqa: S603 - the operator's systemctl
        [command, "try-restart", "leat-scanner.service"], check=False, timeout=120
    )
    if result.returncode != 0:
        raise EnrolError(f"{command} try-restart leat-scanner.service failed "
                         f"(exit {result.returncode}): restart it by hand")
