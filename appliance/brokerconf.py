"""The shop broker's files, generated: Mosquitto config, per-user ACL, TLS certificates and
the optional bridge to a central MQTT cluster (docs/provisioning.md, docs/fleet.md).

Input: the device's config.toml (device id, MQTT user, base topic) and an optional broker
spec, /etc/leat-scanner/broker.toml (POS users and the devices each may reach, the POS
reply prefix, TLS names, the bridge). Output, each written only when its bytes differ, so a
second run changes nothing:

- `/etc/mosquitto/conf.d/leat-scanner.conf`: a TLS listener on the LAN (8883) with a
  per-device certificate and a plain listener bound to 127.0.0.1 (1883, for the daemon on
  the device); both with passwords and the ACL (`per_listener_settings true`).
- `/etc/mosquitto/leat-scanner.acl`: per-user rules (`user` blocks; no anonymous access).
- `/etc/mosquitto/leat-scanner/{ca,server}.{crt,key}`: a self-signed CA made here with the
  openssl CLI (or the technician's CA), and the server certificate it signs (SAN: host name,
  `<host>.local`, localhost, 127.0.0.1 and the spec's names and addresses); kept as long as
  it still verifies, matches its key and names and has 30 days left.
- `/etc/mosquitto/conf.d/leat-scanner-bridge.conf` (bridge enabled only; mode 0600, as it
  holds the bridge password).

What Mosquitto 2.0 reads as which user (eclipse/mosquitto v2.0.11 src/mosquitto.c main():
`drop_privileges()` runs right after the config files are parsed, before the password file,
the ACL file and the listeners' certificates and keys are loaded): the conf.d files are read
as root (0600 is fine), the ACL, password file and server key as user `mosquitto`. Hence
ACL and key root:mosquitto 0640: readable by the broker, not writable by it nor readable by
others. From 2.0.16 (Trixie ships 2.0.21; Bookworm 2.0.11 does not) the broker logs a
warning when the ACL or password file is not owned by its own user ("owner is not
mosquitto. Future versions will refuse to load this file", lib/misc_mosq.c
mosquitto__fopen); it still loads it. The password file stays mosquitto-owned 0600, as
provisioning has always made it.

Standard library only: provisioning runs `python3 -m appliance.brokerconf` with the system
Python, like `appliance.identity`.
"""

from __future__ import annotations

import argparse
import grp
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CONFIG = Path("/etc/leat-scanner/config.toml")
SPEC = Path("/etc/leat-scanner/broker.toml")
CONF = Path("/etc/mosquitto/conf.d/leat-scanner.conf")
BRIDGE_CONF = Path("/etc/mosquitto/conf.d/leat-scanner-bridge.conf")
ACL = Path("/etc/mosquitto/leat-scanner.acl")
PASSWD = Path("/etc/mosquitto/leat-scanner.passwd")
TLS_DIR = Path("/etc/mosquitto/leat-scanner")
LAN_PORT = 8883
LOOPBACK_PORT = 1883
MAX_PACKET_BYTES = 1048576  # appliance.bus.BROKER_MAX_PACKET_BYTES (not imported: stdlib only)
DEFAULT_BASE = "leat-scanner/{device_id}"
DEFAULT_USER = "leat-scanner"
DEVICE_DATA = ("availability", "info", "state", "events/#", "response/#")  # a POS reads these
CERT_DAYS = 825
RENEW_S = 30 * 86400
SPEC_LIMIT = 256 * 1024

SPEC_TEMPLATE = """\
# The shop broker's users and names, read by provisioning (python3 -m appliance.brokerconf)
# to generate /etc/mosquitto/conf.d/leat-scanner.conf, the ACL and the TLS certificate.
# Edit, then rerun provisioning/provision. docs/provisioning.md ("The local MQTT broker").
# Without [devices], this device (config.toml device.id, MQTT user mqtt.username) is served.

# POS reply topics: POS user U may read <reply_prefix>/U/#; devices may publish there.
reply_prefix = "pos"

# [devices]                       # every device using this broker: id = its MQTT user
# counter-1 = "leat-scanner"
# counter-2 = "leat-scanner-2"

# A POS user = the devices it may send requests to. Give it a password with
#   sudo mosquitto_passwd /etc/mosquitto/leat-scanner.passwd till-1
[pos_users]
# till-1 = ["counter-1"]

[tls]                             # the LAN listener's certificate (port 8883)
# names = ["scanner-1.shop.example"]   # host name and <host>.local are always in it
# addresses = ["192.168.1.20"]         # fixed LAN addresses POS terminals connect to
# ca_cert = "/root/shop-ca.crt"        # your own CA (both), else one is made here
# ca_key = "/root/shop-ca.key"

[bridge]                          # optional: to a central MQTT 5 cluster (docs/fleet.md)
enabled = false
# address = "mqtt.example.com:8883"
# remote_base_topic = "acme/shop-12/{device_id}"
# username = "{device_id}"
# password_file = "/etc/credstore/leat-scanner.bridge-password"
# cafile = "/etc/mosquitto/leat-scanner/central-ca.crt"
"""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_DEVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_TOPIC = re.compile(r"[^\s#+$\x00-\x1f\x7f][^\s#+\x00-\x1f\x7f]{0,199}")
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})")


class BrokerConfError(ValueError):
    """The spec or config cannot make a safe broker configuration (message says which)."""


@dataclass(frozen=True)
class Bridge:
    """The optional bridge to a central MQTT 5 cluster (docs/fleet.md)."""

    address: str  # host:port of the central cluster (TLS)
    remote_base_topic: str  # e.g. "acme/shop-12/{device_id}"
    username: str
    password: str
    cafile: Path
    certfile: Path | None = None
    keyfile: Path | None = None


@dataclass(frozen=True)
class Spec:
    """What the broker serves: its devices, the POS users and the TLS names."""

    devices: dict[str, str]  # device id -> its daemon's MQTT user
    pos_users: dict[str, tuple[str, ...]]  # POS user -> device ids it may reach
    base_topic: str = DEFAULT_BASE
    reply_prefix: str = "pos"  # POS user U reads <prefix>/U/#; devices may publish <prefix>/#
    hostname: str = "localhost"
    names: tuple[str, ...] = ()  # extra DNS names for the certificate
    addresses: tuple[str, ...] = ()  # extra IP addresses for the certificate
    ca_cert: Path | None = None  # the technician's CA (certificate and key), else made here
    ca_key: Path | None = None
    lan_port: int = LAN_PORT
    loopback_port: int = LOOPBACK_PORT
    bridge: Bridge | None = None
    prefix: Path = Path("/")  # the paths the broker is told are under this (tests: a tree)

    def installed(self, path: Path) -> Path:
        """Where the broker finds `path` (an absolute /etc/... path)."""
        return _rooted(self.prefix, path)

    def base(self, device: str) -> str:
        """The base topic of `device`."""
        return self.base_topic.replace("{device_id}", device).rstrip("/")

    def sans(self) -> tuple[str, ...]:
        """subjectAltName entries of the server certificate, sorted."""
        dns = {self.hostname, f"{self.hostname}.local", "localhost", *self.names}
        ips = {"127.0.0.1", *self.addresses}
        return tuple(sorted(f"DNS:{n}" for n in dns if n != "localhost.local")) + tuple(
            sorted(f"IP:{a}" for a in ips)
        )


def example_spec() -> Spec:
    """The spec of systemd/mosquitto-leat.{conf,acl}: one device, one POS user."""
    return Spec(devices={"counter-1": DEFAULT_USER}, pos_users={"till-1": ("counter-1",)})


# ---------------------------------------------------------------------------- rendering


def render_conf(spec: Spec) -> str:
    """The listeners (mosquitto.conf(5), v2.0.11 man/mosquitto.conf.5.xml)."""
    tls = spec.installed(TLS_DIR)
    auth = [
        "allow_anonymous false",
        f"password_file {spec.installed(PASSWD)}",
        f"acl_file {spec.installed(ACL)}",
    ]
    lines = [
        "# Generated by provisioning (python3 -m appliance.brokerconf): do not edit, rerun",
        "# provisioning/provision instead. Installed as /etc/mosquitto/conf.d/leat-scanner.conf",
        "# (Debian's mosquitto.conf includes conf.d/). docs/provisioning.md has the details.",
        "",
        "# Each listener has its own password file and ACL (the same ones here).",
        "per_listener_settings true",
        "",
        "# The largest MQTT packet a client may send: 1 MiB. A client sending more is",
        "# disconnected; MQTT v5 clients are told the limit in CONNACK. Above the device's own",
        "# request limit (256 KiB), so that it answers a too large request (`too_large`) itself.",
        "# Not message_size_limit: mosquitto 2.0 answers it with a PUBACK reason code (0x95)",
        "# that MQTT 5 does not allow there.",
        f"max_packet_size {MAX_PACKET_BYTES}",
        "",
        "# Forward each message at once (no Nagle delay of ~40 ms on a reply or a scan event).",
        "set_tcp_nodelay true",
        "",
        "# The shop LAN: TLS only, with this device's certificate (CA: ca.crt, to give the POS).",
        "# The client id is the user name, so no POS can take over the device's session.",
        f"listener {spec.lan_port}",
        f"certfile {tls / 'server.crt'}",
        f"keyfile {tls / 'server.key'}",
        "tls_version tlsv1.2",
        "use_username_as_clientid true",
        *auth,
        "",
        "# Loopback only: the daemon on this device (config.toml: host localhost, port "
        f"{spec.loopback_port}).",
        f"listener {spec.loopback_port} 127.0.0.1",
        *auth,
    ]
    return "\n".join(lines) + "\n"


def render_acl(spec: Spec) -> str:
    """Per-user rules. Mosquitto's ACL file (mosquitto.conf(5) `acl_file`; v2.0.11
    src/security_default.c): a user may do only what a `topic` line under its `user` line
    allows; lines before any `user` line would be for anonymous clients (none here).
    Subscriptions are always granted: each message is checked against `read` when it is
    delivered, so a forbidden subscription receives nothing. A refused QoS 1 publish gets
    PUBACK 0x87 (not authorised) with MQTT v5 and is dropped."""
    out = [
        "# Generated by provisioning (python3 -m appliance.brokerconf): do not edit, rerun",
        "# provisioning/provision instead. Only a device's own user may publish its topics",
        "# (availability, info, state, events, response: retained ones included).",
    ]
    for device, user in sorted(spec.devices.items()):
        base = spec.base(device)
        out += [
            "",
            f"# device {device}: its whole topic space, and replies to POS reply topics",
            f"user {user}",
            f"topic readwrite {base}/#",
            f"topic write {spec.reply_prefix}/#",
        ]
    for pos, devices in sorted(spec.pos_users.items()):
        out += ["", f"# POS {pos}: requests to {', '.join(devices)}; their data; its replies",
                f"user {pos}"]
        for device in devices:
            base = spec.base(device)
            out.append(f"topic write {base}/request/#")
            out += [f"topic read {base}/{sub}" for sub in DEVICE_DATA]
        out.append(f"topic read {spec.reply_prefix}/{pos}/#")
    return "\n".join(out) + "\n"


def render_bridge(spec: Spec) -> str:
    """The bridge connection (mosquitto.conf(5) "Configuring Bridges": `connection`,
    `address`, `topic <pattern> <in|out> <qos> <local prefix> <remote prefix>`,
    `bridge_protocol_version mqttv50` (2.0+), `notifications` with a retained 1/0 on
    `notification_topic`, sent as the bridge's will when it drops). Bridged messages are not
    subject to the ACL (src/security.c mosquitto_acl_check: `if(context->bridge)`)."""
    bridge = spec.bridge
    assert bridge is not None
    out = [
        "# Generated by provisioning (python3 -m appliance.brokerconf): do not edit, rerun",
        "# provisioning/provision instead. Holds the bridge password: mode 0600 root.",
    ]
    for device in sorted(spec.devices):
        local, remote = spec.base(device), _remote_base(bridge, device)
        out += [
            "",
            f"connection leat-scanner-{device}",
            f"address {bridge.address}",
            "bridge_protocol_version mqttv50",
            # unique in the fleet: two shops may both have a "counter-1"
            f"remote_clientid leat-bridge-{remote.replace('/', '-')}",
            f"local_clientid leat-bridge-local-{device}",
            f"remote_username {bridge.username.replace('{device_id}', device)}",
            f"remote_password {bridge.password}",
            f"bridge_cafile {bridge.cafile}",
            *([f"bridge_certfile {bridge.certfile}"] if bridge.certfile else []),
            *([f"bridge_keyfile {bridge.keyfile}"] if bridge.keyfile else []),
            "bridge_insecure false",
            # a persistent session: requests sent while the shop is offline wait centrally
            "cleansession false",
            "try_private false",  # central brokers other than Mosquitto do not know it
            "notifications true",
            f"notification_topic {remote}/bridge",
            "restart_timeout 2 60",
            *[f"topic {sub} out 1 {local}/ {remote}/" for sub in DEVICE_DATA],
            f"topic request/# in 1 {local}/ {remote}/",
        ]
    return "\n".join(out) + "\n"


def _remote_base(bridge: Bridge, device: str) -> str:
    return bridge.remote_base_topic.replace("{device_id}", device).rstrip("/")


# ---------------------------------------------------------------------------- input


def load_spec(
    config: Path,
    spec_file: Path | None,
    *,
    hostname: str,
    root: Path = Path("/"),
) -> Spec:
    """The spec from config.toml (device id, user, base topic) and the optional spec file."""
    cfg = _toml(config) if config.is_file() else {}
    device = _table(cfg, "device").get("id")
    mqtt = _table(cfg, "mqtt")
    base = str(mqtt.get("base_topic", DEFAULT_BASE))
    user = str(mqtt.get("username") or DEFAULT_USER)
    raw = _toml(spec_file) if spec_file is not None and spec_file.is_file() else {}
    base = str(raw.get("base_topic", base))
    devices = {str(k): str(v) for k, v in _table(raw, "devices").items()}
    if not devices:
        # No id in config.toml (an image for many cards): `+` stands for the id.
        devices = {str(device) if device else "+": user}
    pos: dict[str, tuple[str, ...]] = {}
    for name, reach in _table(raw, "pos_users").items():
        if not isinstance(reach, list) or not all(isinstance(d, str) for d in reach):
            raise BrokerConfError(f"pos_users.{name}: must be a list of device ids")
        pos[str(name)] = tuple(reach)
    tls = _table(raw, "tls")
    bridge = _bridge(_table(raw, "bridge"), root)
    spec = Spec(
        devices=devices,
        pos_users=pos,
        base_topic=base,
        reply_prefix=str(raw.get("reply_prefix", "pos")),
        hostname=str(tls.get("hostname") or hostname),
        names=_strs(tls.get("names", []), "tls.names"),
        addresses=_strs(tls.get("addresses", []), "tls.addresses"),
        ca_cert=Path(str(tls["ca_cert"])) if tls.get("ca_cert") else None,
        ca_key=Path(str(tls["ca_key"])) if tls.get("ca_key") else None,
        lan_port=_int(raw.get("lan_port", LAN_PORT), "lan_port"),
        loopback_port=_int(raw.get("loopback_port", LOOPBACK_PORT), "loopback_port"),
        bridge=bridge,
    )
    validate(spec)
    return spec


def _strs(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BrokerConfError(f"{what}: must be a list of strings")
    return tuple(value)


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise BrokerConfError(f"{what}: must be a whole number")
    return value


def _bridge(raw: dict[str, object], root: Path) -> Bridge | None:
    if not raw.get("enabled", False):
        return None
    missing = [k for k in ("address", "password_file", "cafile") if not raw.get(k)]
    if missing:
        raise BrokerConfError(f"bridge: {', '.join(missing)} missing (bridge.enabled = true)")
    secret = _rooted(root, Path(str(raw["password_file"])))
    try:
        password = secret.read_text(encoding="utf-8").strip().splitlines()[0]
    except (OSError, IndexError) as exc:
        raise BrokerConfError(f"bridge.password_file {raw['password_file']}: {exc}") from exc
    return Bridge(
        address=str(raw["address"]),
        remote_base_topic=str(raw.get("remote_base_topic", DEFAULT_BASE)),
        username=str(raw.get("username", "{device_id}")),
        password=password,
        cafile=Path(str(raw["cafile"])),
        certfile=Path(str(raw["certfile"])) if raw.get("certfile") else None,
        keyfile=Path(str(raw["keyfile"])) if raw.get("keyfile") else None,
    )


def validate(spec: Spec) -> None:
    """Refuse anything that would widen access or break the generated files' syntax."""
    device_ids = set(spec.devices)
    users = set(spec.devices.values())
    for device, user in spec.devices.items():
        if device != "+" and not _DEVICE.fullmatch(device):
            raise BrokerConfError(f"device id {device!r}: use 1-64 letters, digits, '-', '_'")
        _check(_NAME, user, f"devices.{device}")
    for pos, reach in spec.pos_users.items():
        _check(_NAME, pos, "pos_users")
        if pos in users or pos.startswith("leat-"):
            raise BrokerConfError(f"POS user {pos!r} clashes with a device's user or client id")
        if not reach:
            raise BrokerConfError(f"pos_users.{pos}: no devices")
        unknown = set(reach) - device_ids
        if unknown:
            raise BrokerConfError(f"pos_users.{pos}: unknown devices {sorted(unknown)}")
    if spec.base_topic.count("{device_id}") != 1:
        raise BrokerConfError("base_topic must hold {device_id} once (each device its own)")
    _check(_TOPIC, spec.base_topic.replace("{device_id}", "x"), "base_topic")
    _check(_TOPIC, spec.reply_prefix, "reply_prefix")
    for device in spec.devices:
        if _under(spec.reply_prefix, spec.base(device)) or _under(spec.base(device),
                                                                  spec.reply_prefix):
            raise BrokerConfError("reply_prefix overlaps a device's base topic")
    for name in (spec.hostname, *spec.names):
        _check(_HOST, name, "tls host name")
    for address in spec.addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError as exc:
            raise BrokerConfError(f"tls.addresses: {address!r} is not an IP address") from exc
    if (spec.ca_cert is None) != (spec.ca_key is None):
        raise BrokerConfError("tls: ca_cert and ca_key go together")
    for port in (spec.lan_port, spec.loopback_port):
        if not 1 <= port <= 65535:
            raise BrokerConfError(f"port {port} out of range")
    if spec.bridge is not None:
        bridge = spec.bridge
        if "+" in spec.devices:
            raise BrokerConfError("bridge: the device id must be known (config.toml device.id)")
        host, _, remote_port = bridge.address.rpartition(":")
        if not (_HOST.fullmatch(host) and remote_port.isdigit()
                and 1 <= int(remote_port) <= 65535):
            raise BrokerConfError(f"bridge.address {bridge.address!r}: use host:port")
        _check(_TOPIC, bridge.remote_base_topic.replace("{device_id}", "x"), "remote_base_topic")
        _check(_NAME, bridge.username.replace("{device_id}", "x"), "bridge.username")
        if not bridge.password or any(c.isspace() for c in bridge.password):
            raise BrokerConfError("bridge password: empty or holds white space")
        for path in (bridge.cafile, bridge.certfile, bridge.keyfile):
            if path is not None and (not path.is_absolute() or any(c.isspace() for c in str(path))):
                raise BrokerConfError(f"bridge: {path} must be an absolute path without spaces")


def _check(pattern: re.Pattern[str], value: str, what: str) -> None:
    if not pattern.fullmatch(value):
        raise BrokerConfError(f"{what}: {value!r} is not allowed")


def _under(topic: str, root: str) -> bool:
    return topic == root or topic.startswith(root + "/")


def _toml(path: Path) -> dict[str, object]:
    data = path.read_bytes()[: SPEC_LIMIT + 1]
    if len(data) > SPEC_LIMIT:
        raise BrokerConfError(f"{path}: larger than {SPEC_LIMIT} bytes")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BrokerConfError(f"{path}: {exc}") from exc


def _table(data: dict[str, object], key: str) -> dict[str, object]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise BrokerConfError(f"{key} must be a table")
    return value


def _rooted(root: Path, path: Path) -> Path:
    return root / path.relative_to("/") if path.is_absolute() else path


# ---------------------------------------------------------------------------- TLS


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


def _cert_ok(cert: Path, key: Path, ca: Path, sans: Sequence[str]) -> bool:
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
        if _write(ca_crt, spec.ca_cert.read_bytes(), 0o644, owner.root):
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
    if not _cert_ok(crt, key, ca_crt, sans):
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
            _write(key, (work / "key").read_bytes(), 0o640, owner.broker)
            _write(crt, (work / "crt").read_bytes(), 0o644, owner.root)
        changes.append(f"issue {TLS_DIR / 'server.crt'} for {', '.join(sans)}")
    return changes


class _private_umask:  # noqa: N801 - used as a context manager
    def __enter__(self) -> None:
        self._old = os.umask(0o077)

    def __exit__(self, *exc: object) -> None:
        os.umask(self._old)


# ---------------------------------------------------------------------------- files


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


def _same(path: Path, data: bytes, mode: int, owner: tuple[int, int] | None) -> bool:
    """`path` holds `data` with `mode` (and `owner`, when one is asked for)."""
    if not path.is_file() or path.read_bytes() != data:
        return False
    st = path.stat()
    return (st.st_mode & 0o7777) == mode and (owner is None or (st.st_uid, st.st_gid) == owner)


def _write(path: Path, data: bytes, mode: int, owner: tuple[int, int] | None) -> bool:
    """Write `data` atomically when it differs (or mode/owner differ); True if changed."""
    if _same(path, data, mode, owner):
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


@dataclass
class Generated:
    """The files to write: installed path -> (bytes, mode, broker-readable)."""

    files: dict[Path, tuple[bytes, int, bool]] = field(default_factory=dict)


def plan(spec: Spec) -> Generated:
    """The config files for `spec` (certificates are made by ensure_tls)."""
    out = Generated()
    out.files[CONF] = (render_conf(spec).encode(), 0o644, False)
    out.files[ACL] = (render_acl(spec).encode(), 0o640, True)
    if spec.bridge is not None:
        out.files[BRIDGE_CONF] = (render_bridge(spec).encode(), 0o600, False)
    return out


def generate(spec: Spec, root: Path = Path("/"), *, dry_run: bool = False) -> list[str]:
    """Write every file under `root`; returns one line per change (empty: nothing to do)."""
    owner = Owner.for_host(root)
    changes: list[str] = []
    for path, (data, mode, broker) in plan(spec).files.items():
        target, who = _rooted(root, path), owner.broker if broker else owner.root
        if _same(target, data, mode, who):
            continue
        changes.append(f"write {path} (mode {mode:04o})")
        if not dry_run:
            _write(target, data, mode, who)
    stale = _rooted(root, BRIDGE_CONF)
    if spec.bridge is None and stale.exists():
        changes.append(f"remove {BRIDGE_CONF} (bridge disabled)")
        if not dry_run:
            stale.unlink()
    tls_dir = _rooted(root, TLS_DIR)
    if "+" in spec.devices:
        # An image for many cards: a certificate (and CA key) made now would be shared by
        # all of them. The device makes its own when this runs there with its id.
        print(f"brokerconf: no device id yet: {TLS_DIR} is made on the device (rerun "
              "provisioning there)", file=sys.stderr)
    elif dry_run:
        if not _cert_ok(tls_dir / "server.crt", tls_dir / "server.key", tls_dir / "ca.crt",
                        spec.sans()):
            changes.append(f"make the broker's TLS certificate in {TLS_DIR}")
    else:
        changes += ensure_tls(spec, tls_dir, owner)
    return changes


# ---------------------------------------------------------------------------- CLI


def _hostname(root: Path) -> str:
    etc = root / "etc/hostname"
    if root != Path("/") and etc.is_file():
        return etc.read_text(encoding="utf-8").strip() or "localhost"
    return socket.gethostname().split(".")[0] or "localhost"


def main(argv: Iterable[str] | None = None) -> int:
    """`python3 -m appliance.brokerconf [--root DIR] [--dry-run]`: one line per change."""
    parser = argparse.ArgumentParser(prog="python3 -m appliance.brokerconf",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--root", type=Path, default=Path("/"))
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--spec", type=Path, default=SPEC)
    parser.add_argument("--hostname", default=None)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(list(argv) if argv is not None else None)
    root: Path = args.root.resolve()
    changes: list[str] = []
    try:
        spec_file = _rooted(root, args.spec)
        if not spec_file.exists():
            changes.append(f"write {args.spec} (mode 0644): POS users and TLS names go there")
            if not args.dry_run:
                _write(spec_file, SPEC_TEMPLATE.encode(), 0o644, Owner.for_host(root).root)
        spec = load_spec(
            _rooted(root, args.config),
            spec_file,
            hostname=args.hostname or _hostname(root),
            root=root,
        )
        changes += generate(spec, root, dry_run=args.dry_run)
    except (BrokerConfError, OSError) as exc:
        print(f"brokerconf: {exc}", file=sys.stderr)
        return 2
    for line in changes:
        print(line)
    return 0


def directives(text: str) -> Iterator[list[str]]:
    """Non-comment lines of a mosquitto file, split into words (for checks and tests)."""
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            yield line.split()


if __name__ == "__main__":
    sys.exit(main())
