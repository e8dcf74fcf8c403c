"""The shop broker's spec: which devices it serves, the POS users and the devices each may
reach, the POS reply prefix, TLS names and the optional bridge; read from config.toml and
/etc/leat-scanner/broker.toml, and validated so that nothing can widen access or inject a
line into the generated files (appliance/brokerconf.py renders them).

Standard library only (provisioning runs it with the system Python).
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass
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
        return rooted(self.prefix, path)

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
    elif device and devices.get(str(device)) != user:
        raise BrokerConfError(f"[devices] must list this device: {device} = \"{user}\" "
                              "(its MQTT user in config.toml), or it is locked out")
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
    secret = rooted(root, Path(str(raw["password_file"])))
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


def rooted(root: Path, path: Path) -> Path:
    return root / path.relative_to("/") if path.is_absolute() else path


