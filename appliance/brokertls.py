"""The shop broker's TLS files (a CA and the server certificate it signs, made with the
openssl CLI) and the owner-aware, atomic, write-if-different file writes of
appliance/brokerconf.py.

Standard library only (provisioning runs it with the system Python).
"""

from __future__ import annotations

import grp
import ipaddress
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from appliance.brokerspec import TLS_DIR, BrokerConfError, Spec

CERT_DAYS = 825
RENEW_S = 30 * 86400


def _openssl(*args: str | Path) -> str:
    tool = shutil.which("openssl")
    if tool is None:
        raise BrokerConfError("openssl not found: apt-get install openssl")
    done = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [tool, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise BrokerConfError(f"openssl {args[0]} failed: {done.stderr.strip()[-400:]}")
    return done.stdout


def cert_ok(cert: Path, key: Path, ca: Path, sans: Sequence[str]) -> bool:
    """The certificate verifies against `ca`, matches `key`, names `sans`, lasts 30 days."""
    if not (cert.is_file() and key.is_file() and ca.is_file()):
        return False
    try:
        _openssl("verify", "-CAfile", ca, cert)
        _openssl("x509", "-in", cert, "-noout", "-checkend", str(RENEW_S))
        names = _openssl("x509", "-in", cert, "-noout", "-ext", "subjectAltName")
        same_key = _openssl("x509", "-in", cert, "-noout", "-pubkey") == _openssl(
            "pkey", "-in", key, "-pubout"
        )
    except BrokerConfError:
        return False
    found = [n.strip().replace("IP Address:", "IP:") for n in names.splitlines()[-1].split(",")]
    return same_key and sorted(map(_canonical, found)) == sorted(map(_canonical, sans))


def _canonical(san: str) -> str:
    """`IP:0:0:0:0:0:0:0:1` (as openssl prints it) and `IP:::1` alike."""
    kind, _, value = san.partition(":")
    return f"IP:{ipaddress.ip_address(value)}" if kind == "IP" else san


def ensure_tls(spec: Spec, tls_dir: Path, owner: Owner) -> list[str]:
    """Make (or keep) the CA and the server certificate in `tls_dir`; the changes made."""
    changes: list[str] = []
    tls_dir.mkdir(parents=True, exist_ok=True)
    ca_crt, ca_key = tls_dir / "ca.crt", tls_dir / "ca.key"
    crt, key = tls_dir / "server.crt", tls_dir / "server.key"
    if spec.ca_cert is not None and spec.ca_key is not None:
        signing_key = spec.ca_key
        if write(ca_crt, spec.ca_cert.read_bytes(), 0o644, owner.root):
            changes.append(f"install the technician's CA as {TLS_DIR / 'ca.crt'}")
    else:
        signing_key = ca_key
        if not (ca_crt.is_file() and ca_key.is_file()):
            with _private_umask():
                _openssl(
                    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", ca_key, "-out", ca_crt, "-days", "3650",
                    "-subj", f"/CN=leat-scanner broker CA {spec.hostname}",
                    "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                )
            _own(ca_key, 0o600, owner.root)
            _own(ca_crt, 0o644, owner.root)
            changes.append(f"make a CA {TLS_DIR / 'ca.crt'} (key ca.key, root only)")
    sans = spec.sans()
    if not cert_ok(crt, key, ca_crt, sans):
        with tempfile.TemporaryDirectory() as tmp, _private_umask():
            work = Path(tmp)
            _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                     "-out", work / "key")
            _openssl("req", "-new", "-key", work / "key", "-subj", f"/CN={spec.hostname}",
                     "-out", work / "csr")
            (work / "ext").write_text(
                f"subjectAltName={','.join(sans)}\nbasicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n", encoding="utf-8")
            _openssl("x509", "-req", "-in", work / "csr", "-CA", ca_crt, "-CAkey", signing_key,
                     "-set_serial", f"0x{os.urandom(16).hex()}", "-days", str(CERT_DAYS),
                     "-extfile", work / "ext", "-out", work / "crt")
            write(key, (work / "key").read_bytes(), 0o640, owner.broker)
            write(crt, (work / "crt").read_bytes(), 0o644, owner.root)
        changes.append(f"issue {TLS_DIR / 'server.crt'} for {', '.join(sans)}")
    # Kept files get their owner and mode too: a certificate made in an image (prepare-card
    # knows the device id) belongs to whoever staged it, and mosquitto reads the key only
    # after dropping to its own user, so root:root 0640 would keep the broker down.
    for path, mode, who in ((key, 0o640, owner.broker), (crt, 0o644, owner.root),
                            (ca_crt, 0o644, owner.root), (ca_key, 0o600, owner.root)):
        if path.is_file() and not _owned(path, mode, who):
            _own(path, mode, who)
            changes.append(f"give {TLS_DIR / path.name} mode {mode:04o}"
                           + ("" if who is None else f" and owner {who[0]}:{who[1]}"))
    return changes


def _owned(path: Path, mode: int, owner: tuple[int, int] | None) -> bool:
    st = path.stat()
    return (st.st_mode & 0o7777) == mode and (owner is None or (st.st_uid, st.st_gid) == owner)


class _private_umask:  # noqa: N801 - used as a context manager
    def __enter__(self) -> None:
        self._old = os.umask(0o077)

    def __exit__(self, *exc: object) -> None:
        os.umask(self._old)


@dataclass(frozen=True)
class Owner:
    """Numeric owners for root-only and broker-readable files (None: leave as created)."""

    root: tuple[int, int] | None = None
    broker: tuple[int, int] | None = None  # root:mosquitto

    @classmethod
    def for_host(cls, root: Path) -> Owner:
        """root:root and root:mosquitto when run as root on the device itself; else none
        (a --root tree or a test: whoever stages it keeps the files)."""
        if os.geteuid() != 0 or root != Path("/"):
            return cls()
        try:
            gid = grp.getgrnam("mosquitto").gr_gid
        except KeyError:
            return cls((0, 0), (0, 0))
        return cls((0, 0), (0, gid))


def _own(path: Path, mode: int, owner: tuple[int, int] | None) -> None:
    if owner is not None:
        os.chown(path, *owner)
    path.chmod(mode)


def same(path: Path, data: bytes, mode: int, owner: tuple[int, int] | None) -> bool:
    """`path` holds `data` with `mode` (and `owner`, when one is asked for)."""
    return path.is_file() and path.read_bytes() == data and _owned(path, mode, owner)


def write(path: Path, data: bytes, mode: int, owner: tuple[int, int] | None) -> bool:
    """Write `data` atomically when it differs (or mode/owner differ); True if changed."""
    if same(path, data, mode, owner):
        return False
    if path.is_file() and path.read_bytes() == data:
        _own(path, mode, owner)
        return True
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        _own(Path(tmp), mode, owner)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True
