"""The locked-down shop broker (appliance/brokerconf.py): a real Mosquitto started from the
generated files on free loopback ports, real paho clients as the device and the POS.

Mosquitto 2.0's ACL file grants every subscription and checks `read` per delivered message
(v2.0.11 src/security_default.c), and refuses a QoS 1 publish with PUBACK 0x87 for MQTT v5
(src/handle_publish.c): the tests assert both, and that nothing forbidden arrives.
"""

from __future__ import annotations

import getpass
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from broker import Mosquitto, free_port
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from appliance import brokerconf, brokerspec
from appliance.brokerconf import ACL, CONF, PASSWD, TLS_DIR, BrokerConfError, Spec
from appliance.brokertls import Owner, ensure_tls
from appliance.bus import BROKER_MAX_PACKET_BYTES

REPO = Path(__file__).resolve().parents[1]
NOT_AUTHORIZED = 0x87
ACCEPTED = (0x00, 0x10)  # success; no matching subscribers (MQTT 5 PUBACK)
ONE = "leat-scanner/counter-1"
TWO = "leat-scanner/counter-2"
PASSWORDS = {"leat-scanner": "dev-1-pw", "leat-scanner-2": "dev-2-pw", "till-1": "till-1-pw",
             "till-2": "till-2-pw"}


def shop_spec(root: Path, **changes: Any) -> Spec:
    """Two devices, a POS user for each, on free ports; the broker's paths under `root`."""
    spec = Spec(
        devices={"counter-1": "leat-scanner", "counter-2": "leat-scanner-2"},
        pos_users={"till-1": ("counter-1",), "till-2": ("counter-2",)},
        hostname="shop-pi",
        lan_port=free_port(),
        loopback_port=free_port(),
        prefix=root,
    )
    return replace(spec, **changes)


class GeneratedBroker(Mosquitto):
    """Mosquitto running the generated conf.d file, as Debian's mosquitto.conf includes it."""

    def __init__(self, workdir: Path, root: Path, spec: Spec,
                 passwords: dict[str, str]) -> None:
        super().__init__(workdir)
        passwd = root / PASSWD.relative_to("/")
        passwd.parent.mkdir(parents=True, exist_ok=True)
        passwd.touch(mode=0o600)
        for user, password in passwords.items():
            subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password],
                           check=True, timeout=10)
        self.port = spec.loopback_port
        self.conf.write_text("\n".join([
            f"user {getpass.getuser()}",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            f"include_dir {(root / CONF.relative_to('/')).parent}",
        ]) + "\n", encoding="utf-8")


class Client:
    """A paho MQTT v5 client that records PUBACK and SUBACK reason codes and messages."""

    def __init__(self, port: int, user: str, *, ca: Path | None = None,
                 client_id: str = "") -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.pubacks: dict[int, ReasonCode] = {}
        self.subacks: list[ReasonCode] = []
        self._cond = threading.Condition()
        self._connected = threading.Event()
        self.disconnected = threading.Event()
        self.connect_reason: ReasonCode | None = None
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                   protocol=MQTTProtocolVersion.MQTTv5)
        self._client.username_pw_set(user, PASSWORDS[user])
        if ca is not None:
            self._client.tls_set(ca_certs=str(ca))
        self._client.on_connect = self._on_connect
        self._client.on_publish = self._on_publish
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_disconnect = lambda *args: self.disconnected.set()
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        if not self._connected.wait(10):
            raise AssertionError(f"{user}: no CONNACK on port {port}")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: ReasonCode,
                    props: Any) -> None:
        self.connect_reason = reason
        self._connected.set()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: ReasonCode,
                    props: Any) -> None:
        with self._cond:
            self.pubacks[mid] = reason
            self._cond.notify_all()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: list[ReasonCode],
                      props: Any) -> None:
        with self._cond:
            self.subacks += reasons
            self._cond.notify_all()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def subscribe(self, *filters: str) -> list[ReasonCode]:
        """Subscribe at QoS 1; the SUBACK's reason codes."""
        before = len(self.subacks)
        self._client.subscribe([(f, SubscribeOptions(qos=1)) for f in filters])
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.subacks) >= before + len(filters), 10)
            return self.subacks[before:]

    def publish(self, topic: str, payload: bytes = b"x", *, retain: bool = False,
                properties: Any = None) -> int:
        """Publish at QoS 1; the PUBACK's reason code (see ACCEPTED; 0x87 not authorised)."""
        info = self._client.publish(topic, payload, qos=1, retain=retain,
                                    properties=properties)
        with self._cond:
            assert self._cond.wait_for(lambda: info.mid in self.pubacks, 10), topic
            return int(self.pubacks[info.mid].value)

    def wait(self, topic: str, payload: bytes | None = None,
             timeout: float = 10) -> mqtt.MQTTMessage:
        """The first message on `topic` (with `payload`, if given)."""
        def found() -> mqtt.MQTTMessage | None:
            return next((m for m in self.messages if m.topic == topic
                         and (payload is None or m.payload == payload)), None)

        with self._cond:
            if not self._cond.wait_for(lambda: found() is not None, timeout):
                raise AssertionError(f"nothing on {topic}; got {self.topics()}")
            message = found()
            assert message is not None
            return message

    def topics(self) -> list[str]:
        with self._cond:
            return [m.topic for m in self.messages]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        # paho 2.1's loop_stop leaves its wake-up socket pair to __del__, which a garbage
        # collected cycle may reach after the sockets' own finalizers (ResourceWarning)
        self._client._reset_sockets()


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Spec, Path, Mosquitto]]:
    """The generated files of a two-device shop, and Mosquitto running them."""
    root = tmp_path_factory.mktemp("shop")
    spec = shop_spec(root)
    assert brokerconf.generate(spec, root)
    with GeneratedBroker(root / "run", root, spec, PASSWORDS) as broker:
        yield spec, root, broker


@pytest.fixture
def clients(shop: tuple[Spec, Path, Mosquitto]) -> Iterator[dict[str, Client]]:
    """The devices on the loopback listener, the POS users on the TLS one."""
    spec, root, _ = shop
    ca = root / TLS_DIR.relative_to("/") / "ca.crt"
    made = {
        "dev1": Client(spec.loopback_port, "leat-scanner", client_id="leat-scanner-counter-1"),
        "dev2": Client(spec.loopback_port, "leat-scanner-2", client_id="leat-scanner-counter-2"),
        "till1": Client(spec.lan_port, "till-1", ca=ca),
        "till2": Client(spec.lan_port, "till-2", ca=ca),
    }
    try:
        yield made
    finally:
        for client in made.values():
            client.close()


def test_pos_forbidden_publishes_are_refused_and_never_delivered(
    shop: tuple[Spec, Path, Mosquitto], clients: dict[str, Client],
) -> None:
    dev1, dev2, till1, till2 = (clients[k] for k in ("dev1", "dev2", "till1", "till2"))
    dev1.subscribe(f"{ONE}/#")
    dev2.subscribe(f"{TWO}/#")
    till2.subscribe("pos/till-2/#")
    assert dev1.publish(f"{ONE}/availability", b"online", retain=True) in ACCEPTED
    forbidden = [
        (f"{ONE}/availability", True), (f"{ONE}/state", True), (f"{ONE}/info", True),
        (f"{ONE}/events/scan", False), (f"{ONE}/response/order.create", False),
        (f"{TWO}/request/order.create", False), (f"{TWO}/availability", True),
        ("pos/till-2/replies", False), (ONE, False), ("leat-scanner/counter-3/request/x", False),
        ("$SYS/broker/connection/x/state", True), ("anything/else", False),
    ]

    codes = {topic: till1.publish(topic, b"offline", retain=retain)
             for topic, retain in forbidden}

    assert codes == {topic: NOT_AUTHORIZED for topic, _ in forbidden}
    # the POS's allowed request after them: anything accepted before would be seen first
    assert till1.publish(f"{ONE}/request/contact.lookup", b"{}") in ACCEPTED
    dev1.wait(f"{ONE}/request/contact.lookup")
    assert dev1.topics() == [f"{ONE}/availability", f"{ONE}/request/contact.lookup"]
    assert dev2.topics() == [] and till2.topics() == []
    fresh = Client(shop[0].loopback_port, "leat-scanner", client_id="counter-1-check")
    try:
        fresh.subscribe(f"{ONE}/availability")
        assert fresh.wait(f"{ONE}/availability").payload == b"online"  # retained kept
    finally:
        fresh.close()


def test_pos_forbidden_subscriptions_receive_nothing(clients: dict[str, Client]) -> None:
    dev1, dev2, till1 = clients["dev1"], clients["dev2"], clients["till1"]
    codes = till1.subscribe(f"{TWO}/events/#", f"{TWO}/state", f"{ONE}/request/#",
                            "pos/till-2/#", "#", f"{ONE}/events/#")
    # mosquitto 2.0's acl_file grants them (0x01) and filters per message; a plugin may 0x87
    assert all(int(c.value) in (1, NOT_AUTHORIZED) for c in codes), codes
    assert dev2.publish(f"{TWO}/events/scan", b"jane's card") in ACCEPTED
    assert dev2.publish(f"{TWO}/state", b"{}", retain=True) in ACCEPTED
    assert dev1.publish(f"{ONE}/request/order.create", b"{}") == 0  # its own request space
    assert dev1.publish("pos/till-2/replies", b"for till 2") in ACCEPTED
    assert dev1.publish(f"{ONE}/events/scan", b"marker") in ACCEPTED

    till1.wait(f"{ONE}/events/scan", b"marker")

    got = {(m.topic, m.payload) for m in till1.messages}
    # only counter-1's readable topics (its retained availability may come from `#`)
    assert got <= {(f"{ONE}/events/scan", b"marker"), (f"{ONE}/availability", b"online")}, got


def test_pos_allowed_requests_and_reads_work(clients: dict[str, Client]) -> None:
    dev1, till1 = clients["dev1"], clients["till1"]
    dev1.subscribe(f"{ONE}/request/#")
    assert dev1.publish(f"{ONE}/state", b'{"s": 1}', retain=True) in ACCEPTED
    assert dev1.publish(f"{ONE}/info", b'{"i": 1}', retain=True) in ACCEPTED
    till1.subscribe(f"{ONE}/availability", f"{ONE}/info", f"{ONE}/state", f"{ONE}/events/#",
                    f"{ONE}/response/#", "pos/till-1/#")
    till1.wait(f"{ONE}/state", b'{"s": 1}')  # retained
    till1.wait(f"{ONE}/info", b'{"i": 1}')

    assert till1.publish(f"{ONE}/request/points.preview", b"{}") in ACCEPTED
    dev1.wait(f"{ONE}/request/points.preview")
    for topic in (f"{ONE}/response/points.preview", "pos/till-1/replies/7", f"{ONE}/events/scan",
                  f"{ONE}/availability"):
        assert dev1.publish(topic, b"ok") in ACCEPTED
        till1.wait(topic, b"ok")


def test_pos_cannot_take_over_the_device_session_by_client_id(
    shop: tuple[Spec, Path, Mosquitto], clients: dict[str, Client],
) -> None:
    spec, root, _ = shop
    dev1 = clients["dev1"]
    dev1.subscribe(f"{ONE}/request/#")
    ca = root / TLS_DIR.relative_to("/") / "ca.crt"
    # the device's client id: on the LAN listener the broker uses the user name instead
    thief = Client(spec.lan_port, "till-2", ca=ca, client_id="leat-scanner-counter-1")
    try:
        assert thief.connect_reason is not None and not thief.connect_reason.is_failure
        assert clients["till1"].publish(f"{ONE}/request/x", b"{}") in ACCEPTED
        dev1.wait(f"{ONE}/request/x")  # still connected, still subscribed
        assert not dev1.disconnected.is_set()
    finally:
        thief.close()


def test_tls_listener_uses_the_generated_ca_and_refuses_plain_mqtt(
    shop: tuple[Spec, Path, Mosquitto],
) -> None:
    spec, root, _ = shop
    ca = root / TLS_DIR.relative_to("/") / "ca.crt"
    pos = Client(spec.lan_port, "till-1", ca=ca)
    assert pos.connect_reason is not None and not pos.connect_reason.is_failure
    pos.close()
    # a CA of its own: the handshake fails (the POS checks the device's certificate)
    other = root / "other"
    other_spec = shop_spec(other)
    brokerconf.generate(other_spec, other)
    wrong = ssl.create_default_context(cafile=other / TLS_DIR.relative_to("/") / "ca.crt")
    with socket.create_connection(("127.0.0.1", spec.lan_port), timeout=10) as raw, \
            pytest.raises(ssl.SSLCertVerificationError):
        wrong.wrap_socket(raw, server_hostname="shop-pi").close()
    right = ssl.create_default_context(cafile=ca)
    with socket.create_connection(("127.0.0.1", spec.lan_port), timeout=10) as raw, \
            right.wrap_socket(raw, server_hostname="shop-pi.local") as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")  # the host's .local name is valid
    # plain MQTT on the TLS port: no CONNACK (0x20), the broker closes the connection
    # MQTT 3.1.1 CONNECT (clean session, keepalive 60, empty client id)
    with socket.create_connection(("127.0.0.1", spec.lan_port), timeout=10) as sock:
        sock.sendall(bytes.fromhex("100c00044d5154540402003c0000"))
        try:
            answer = sock.recv(16)
        except ConnectionResetError:
            answer = b""
    assert not answer.startswith(b"\x20"), answer


def test_generated_conf_listens_plain_on_loopback_only(shop: tuple[Spec, Path, Mosquitto]) -> None:
    spec, root, _ = shop
    words = list(brokerconf.directives((root / CONF.relative_to("/")).read_text()))
    listeners: list[list[list[str]]] = []
    for line in words:
        if line[0] == "listener":
            listeners.append([line])
        elif listeners:
            listeners[-1].append(line)
    assert ["per_listener_settings", "true"] in words
    assert ["max_packet_size", "1048576"] in words
    for listener in listeners:
        assert ["allow_anonymous", "false"] in listener
        assert ["acl_file", str(root / ACL.relative_to("/"))] in listener
        tls = any(line[0] == "certfile" for line in listener)
        assert tls or listener[0][2:] == ["127.0.0.1"], listener[0]
    assert [line[0][1:] for line in listeners] == [[str(spec.lan_port)],
                                                    [str(spec.loopback_port), "127.0.0.1"]]


def test_files_are_root_owned_modes_and_second_run_changes_nothing(tmp_path: Path) -> None:
    spec = shop_spec(tmp_path)
    first = brokerconf.generate(spec, tmp_path)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode & 0o777) for p in files}

    assert brokerconf.generate(spec, tmp_path) == []
    assert brokerconf.generate(spec, tmp_path, dry_run=True) == []

    assert len(first) == 4  # conf, acl, CA, server certificate
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode & 0o777) for p in files}
    assert after == before
    acl = tmp_path / ACL.relative_to("/")
    acl.chmod(0o666)  # someone loosened it: the next run puts the mode back
    assert brokerconf.generate(spec, tmp_path) == [f"write {ACL} (mode 0640)"]
    modes = {str(p.relative_to(tmp_path)): p.stat().st_mode & 0o777 for p in files}
    assert modes == {
        "etc/mosquitto/conf.d/leat-scanner.conf": 0o644,
        "etc/mosquitto/leat-scanner.acl": 0o640,
        "etc/mosquitto/leat-scanner/ca.crt": 0o644,
        "etc/mosquitto/leat-scanner/ca.key": 0o600,
        "etc/mosquitto/leat-scanner/server.crt": 0o644,
        "etc/mosquitto/leat-scanner/server.key": 0o640,
    }


def test_a_kept_certificate_gets_the_brokers_owner_on_the_device(tmp_path: Path) -> None:
    # prepare-card knows the device id, so the certificate is made in the staged tree with
    # the stager's owner; on the device the kept key must become root:mosquitto, or
    # mosquitto (which reads it after dropping privileges) cannot start its TLS listener
    spec = shop_spec(tmp_path)
    tls = tmp_path / TLS_DIR.relative_to("/")
    ensure_tls(spec, tls, Owner())  # staged: owners left as created
    key = tls / "server.key"
    cert = key.read_bytes()
    on_device = Owner(root=(0, 0), broker=(0, 4242))
    if os.geteuid() != 0:
        pytest.skip("needs root to give files to another group")
    changes = ensure_tls(spec, tls, on_device)
    assert changes == [f"give {TLS_DIR}/server.key mode 0640 and owner 0:4242"]
    assert (key.stat().st_uid, key.stat().st_gid, key.stat().st_mode & 0o777) == (0, 4242, 0o640)
    assert key.read_bytes() == cert  # kept, not reissued
    assert ensure_tls(spec, tls, on_device) == []


def test_new_host_name_reissues_the_certificate_and_keeps_the_ca(tmp_path: Path) -> None:
    spec = shop_spec(tmp_path)
    brokerconf.generate(spec, tmp_path)
    tls = tmp_path / TLS_DIR.relative_to("/")
    ca, cert = (tls / "ca.crt").read_bytes(), (tls / "server.crt").read_bytes()

    changes = brokerconf.generate(replace(spec, addresses=("192.168.1.20",)), tmp_path)

    assert changes == [f"issue {TLS_DIR}/server.crt for DNS:localhost, DNS:shop-pi, "
                       "DNS:shop-pi.local, IP:127.0.0.1, IP:192.168.1.20"]
    assert (tls / "ca.crt").read_bytes() == ca
    assert (tls / "server.crt").read_bytes() != cert


def test_technician_ca_signs_the_server_certificate(tmp_path: Path) -> None:
    own = tmp_path / "own"
    brokerconf.generate(shop_spec(own), own)  # any CA made with openssl will do
    ca_dir = own / TLS_DIR.relative_to("/")
    root = tmp_path / "root"
    spec = shop_spec(root, ca_cert=ca_dir / "ca.crt", ca_key=ca_dir / "ca.key")

    changes = brokerconf.generate(spec, root)

    assert f"install the technician's CA as {TLS_DIR}/ca.crt" in changes
    tls = root / TLS_DIR.relative_to("/")
    assert (tls / "ca.crt").read_bytes() == (ca_dir / "ca.crt").read_bytes()
    assert not (tls / "ca.key").exists()  # the technician's key is never copied
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(ca_dir / "ca.crt"),
                             str(tls / "server.crt")], capture_output=True, text=True,
                            check=False, timeout=30)
    assert verify.returncode == 0, verify.stderr
    assert brokerconf.generate(spec, root) == []


@pytest.mark.parametrize(("changes", "message"), [
    ({"pos_users": {"leat-scanner": ("counter-1",)}}, "clashes"),
    ({"pos_users": {"leat-x": ("counter-1",)}}, "clashes"),
    ({"pos_users": {"till-1": ("counter-9",)}}, "unknown devices"),
    ({"pos_users": {"till-1": ()}}, "no devices"),
    ({"pos_users": {"till-1\ntopic readwrite #": ("counter-1",)}}, "not allowed"),
    ({"reply_prefix": "pos/#"}, "not allowed"),
    ({"reply_prefix": "leat-scanner"}, "overlaps"),
    ({"base_topic": "shop/all"}, "{device_id}"),
    ({"hostname": "shop pi"}, "not allowed"),
    ({"addresses": ("300.1.1.1",)}, "not an IP"),
])
def test_spec_refuses_what_would_widen_access(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(BrokerConfError, match=message.replace("{", r"\{").replace("}", r"\}")):
        brokerconf.validate(shop_spec(tmp_path, **changes))


def test_cli_reads_config_and_spec_then_second_run_prints_nothing(tmp_path: Path) -> None:
    etc = tmp_path / "etc/leat-scanner"
    etc.mkdir(parents=True)
    (etc / "config.toml").write_text('[device]\nid = "counter-1"\n', encoding="utf-8")
    (etc / "broker.toml").write_text('[pos_users]\ntill-1 = ["counter-1"]\n', encoding="utf-8")
    argv = ["--root", str(tmp_path), "--hostname", "shop-pi"]

    first = run_cli(argv)
    second = run_cli(argv)

    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert f"write {CONF} (mode 0644)" in first.stdout.splitlines()
    assert second.stdout == ""
    acl = (tmp_path / ACL.relative_to("/")).read_text(encoding="utf-8")
    assert "user leat-scanner\ntopic readwrite leat-scanner/counter-1/#\n" in acl
    assert "user till-1\ntopic write leat-scanner/counter-1/request/#\n" in acl
    (etc / "broker.toml").write_text('[pos_users]\ntill-1 = ["nope"]\n', encoding="utf-8")
    bad = run_cli(argv)
    assert bad.returncode == 2 and "unknown devices" in bad.stderr
    (etc / "broker.toml").write_text('[devices]\ncounter-2 = "leat-scanner-2"\n',
                                     encoding="utf-8")
    locked_out = run_cli(argv)
    assert locked_out.returncode == 2 and "must list this device" in locked_out.stderr
    assert (tmp_path / ACL.relative_to("/")).read_text(encoding="utf-8") == acl  # untouched


def run_cli(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """`python3 -m appliance.brokerconf` with the system Python (standard library only)."""
    return subprocess.run(["python3", "-m", "appliance.brokerconf", *argv], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)


def test_checked_in_examples_are_what_the_generator_makes() -> None:
    assert brokerspec.MAX_PACKET_BYTES == BROKER_MAX_PACKET_BYTES  # stdlib-only copy
    spec = brokerconf.example_spec()
    assert (REPO / "systemd/mosquitto-leat.conf").read_text() == brokerconf.render_conf(spec)
    assert (REPO / "systemd/mosquitto-leat.acl").read_text() == brokerconf.render_acl(spec)


DYING_DEVICE = """
import sys, threading, paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
port, password, topic = sys.argv[1:]
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="leat-scanner-counter-1-will",
                protocol=MQTTProtocolVersion.MQTTv5)
c.username_pw_set("leat-scanner", password)
c.will_set(topic, b"died", qos=1, retain=True)
up = threading.Event()
c.on_connect = lambda *a: up.set()
c.connect("127.0.0.1", int(port))
c.loop_start()
up.wait(10)
print("connected", flush=True)
threading.Event().wait(60)
"""


def test_device_will_reaches_the_pos_when_the_device_dies(
    shop: tuple[Spec, Path, Mosquitto], clients: dict[str, Client],
) -> None:
    """The device's retained will (`offline`) passes the ACL and reaches the POS. Upstream
    lists lost wills with `per_listener_settings true` as fixed in 2.0.12 (eclipse/mosquitto
    issue 2314); this guards the generated conf on the Mosquitto here (Debian 12's 2.0.11)."""
    spec, _, _ = shop
    till1 = clients["till1"]
    till1.subscribe(f"{ONE}/availability")
    device = subprocess.Popen(  # a device that dies without DISCONNECT (kill -9)
        [sys.executable, "-c", DYING_DEVICE, str(spec.loopback_port), PASSWORDS["leat-scanner"],
         f"{ONE}/availability"], stdout=subprocess.PIPE, text=True)
    try:
        assert device.stdout is not None and device.stdout.readline() == "connected\n"
    finally:
        device.kill()
        device.communicate(timeout=10)
    assert till1.wait(f"{ONE}/availability", b"died").payload == b"died"
