"""The shop-to-fleet bridge (appliance/brokerconf.py, docs/fleet.md) with two real Mosquitto
instances on loopback: the shop's, started from the generated files, and one playing the
central MQTT 5 cluster (TLS, a password per device). A real device (`assembly.build`, the Leat
sandbox over HTTP) runs behind the shop broker; a central POS sees its scans and availability
and gets its requests answered through the bridge."""

from __future__ import annotations

import getpass
import json
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from broker import Mosquitto
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from test_broker_lockdown import PASSWORDS, Client, GeneratedBroker, shop_spec
from test_daemon import RecordingFeedback, leat_config

from appliance import brokerconf
from appliance.assembly import build
from appliance.brokerconf import BRIDGE_CONF, TLS_DIR, Bridge, BrokerConfError
from appliance.config import Config
from appliance.daemon import ScanService
from appliance.samples import write_demo_frames
from appliance.sandbox.server import LeatSandbox

LOCAL = "leat-scanner/counter-1"
REMOTE = "acme/shop-12/counter-1"
BRIDGE_PASSWORD = "bridge-pw-counter-1"


class CentralBroker(Mosquitto):
    """The central cluster's stand-in: TLS only, a password per device and for the POS."""

    def __init__(self, workdir: Path, tls_dir: Path, users: dict[str, str]) -> None:
        super().__init__(workdir, users)
        passwords = workdir / "passwords"
        self.conf.write_text("\n".join([
            f"listener {self.port} 127.0.0.1",
            f"certfile {tls_dir / 'server.crt'}",
            f"keyfile {tls_dir / 'server.key'}",
            "allow_anonymous false",
            f"password_file {passwords}",
            "persistence false",
            f"user {getpass.getuser()}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]) + "\n", encoding="utf-8")


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[CentralBroker, GeneratedBroker, Path]]:
    """A central broker and a shop broker bridged to it (the shop's files generated)."""
    central_tree = tmp_path / "central"
    brokerconf.generate(shop_spec(central_tree), central_tree)  # a CA and a 127.0.0.1 cert
    central_tls = central_tree / TLS_DIR.relative_to("/")
    users = {"counter-1": BRIDGE_PASSWORD, "till-1": PASSWORDS["till-1"]}
    central = CentralBroker(tmp_path / "central-run", central_tls, users)
    root = tmp_path / "shop"
    secret = root / "etc/credstore/leat-scanner.bridge-password"
    secret.parent.mkdir(parents=True)
    secret.write_text(BRIDGE_PASSWORD + "\n", encoding="utf-8")
    spec = replace(
        shop_spec(root),
        devices={"counter-1": "leat-scanner"},
        pos_users={"till-1": ("counter-1",)},
        bridge=Bridge(
            address=f"127.0.0.1:{central.port}",
            remote_base_topic="acme/shop-12/{device_id}",
            username="{device_id}",
            password=BRIDGE_PASSWORD,
            cafile=central_tls / "ca.crt",
        ),
    )
    brokerconf.generate(spec, root)
    shop = GeneratedBroker(tmp_path / "shop-run", root, spec, PASSWORDS)
    with central, shop:
        yield central, shop, central_tls / "ca.crt"


def device_config(shop: Mosquitto, tmp_path: Path, sandbox: LeatSandbox) -> Config:
    """The device `counter-1` on the shop's loopback listener, with its MQTT user."""
    frames = tmp_path / "frames"
    write_demo_frames(frames)
    password = tmp_path / "mqtt-password"
    password.write_text(PASSWORDS["leat-scanner"], encoding="utf-8")
    password.chmod(0o600)
    cfg = leat_config(shop, frames, sandbox, tmp_path)
    mqtt_cfg = cfg.mqtt.model_copy(update={"username": "leat-scanner",
                                           "password_file": password})
    device = cfg.device.model_copy(update={"id": "counter-1"})
    return cfg.model_copy(update={"mqtt": mqtt_cfg, "device": device})


def test_central_pos_sees_scans_and_gets_answers_through_the_bridge(
    fleet: tuple[CentralBroker, GeneratedBroker, Path], tmp_path: Path,
) -> None:
    central, shop, central_ca = fleet
    with LeatSandbox() as sandbox:
        pos_client = Client(central.port, "till-1", ca=central_ca)  # TLS, central CA
        try:
            pos_client.subscribe(f"{REMOTE}/#")
            service: ScanService = build(device_config(shop, tmp_path, sandbox),
                                         feedback=RecordingFeedback(),
                                         stop_when_source_ends=False)
            stop = threading.Event()
            runner = threading.Thread(target=service.run, args=(stop,), name="device")
            runner.start()
            try:
                assert pos_client.wait(f"{REMOTE}/bridge", b"1").retain is not None
                pos_client.wait(f"{REMOTE}/availability", b"online", timeout=30)
                scan = json.loads(pos_client.wait(f"{REMOTE}/events/scan", timeout=30).payload)
                assert scan["value"]
                props = Properties(PacketTypes.PUBLISH)
                props.CorrelationData = b"central-1"
                body = {"request_id": "central-1", "identifier": "LC-7F3K9Q2M",
                        "transaction": "hq/central-1"}
                code = pos_client.publish(f"{REMOTE}/request/contact.lookup",
                                          json.dumps(body).encode(), properties=props)
                assert code in (0x00, 0x10)
                reply_msg = pos_client.wait(f"{REMOTE}/response/contact.lookup", timeout=30)
                reply = json.loads(reply_msg.payload)
                assert reply["request_id"] == "central-1" and reply["status"] == "ok"
                # MQTT v5 all the way: the correlation data comes back with the reply
                assert reply_msg.properties.CorrelationData == b"central-1"
                pos_client.wait(f"{REMOTE}/state", timeout=30)
                late = Client(central.port, "till-1", ca=central_ca)  # a backend restarted
                try:
                    late.subscribe(f"{REMOTE}/+")
                    for sub in ("availability", "info", "state", "bridge"):
                        assert late.wait(f"{REMOTE}/{sub}").retain, sub
                finally:
                    late.close()
            finally:
                stop.set()
                runner.join(timeout=30)
            assert not runner.is_alive()
            # the shop goes away: the central side is told by the bridge's will (retained 0)
            shop.kill()
            pos_client.wait(f"{REMOTE}/bridge", b"0", timeout=30)
        finally:
            pos_client.close()
    # nothing but the device's own topics came out of the shop; the request is only the
    # POS's own (the bridge carries request/# in, never back out: no loop)
    assert {m.topic.split("/")[3] for m in pos_client.messages} <= {
        "availability", "info", "state", "events", "response", "bridge", "request"}
    assert [m.topic for m in pos_client.messages if "/request/" in m.topic] == [
        f"{REMOTE}/request/contact.lookup"]


def test_bridge_conf_is_generated_only_when_enabled_and_refuses_bad_input(
    tmp_path: Path,
) -> None:
    bridge = Bridge(address="mqtt.example.com:8883", remote_base_topic="acme/s1/{device_id}",
                    username="{device_id}", password="pw",
                    cafile=Path("/etc/mosquitto/leat-scanner/central-ca.crt"))
    spec = replace(shop_spec(tmp_path), devices={"counter-1": "leat-scanner"},
                   pos_users={}, bridge=bridge)
    brokerconf.generate(spec, tmp_path)
    conf = tmp_path / BRIDGE_CONF.relative_to("/")
    words = list(brokerconf.directives(conf.read_text(encoding="utf-8")))

    assert oct(conf.stat().st_mode & 0o777) == "0o600"  # it holds the bridge password
    assert ["topic", "request/#", "in", "1", f"{LOCAL}/", "acme/s1/counter-1/"] in words
    assert ["topic", "events/#", "out", "1", f"{LOCAL}/", "acme/s1/counter-1/"] in words
    assert ["bridge_protocol_version", "mqttv50"] in words
    assert ["notification_topic", "acme/s1/counter-1/bridge"] in words
    assert brokerconf.generate(spec, tmp_path) == []
    assert brokerconf.generate(replace(spec, bridge=None), tmp_path) == [
        f"remove {BRIDGE_CONF} (bridge disabled)"]
    assert not conf.exists()
    for bad in (replace(bridge, address="mqtt.example.com"),
                replace(bridge, password="two words"),
                replace(bridge, remote_base_topic="acme/#/{device_id}")):
        with pytest.raises(BrokerConfError):
            brokerconf.validate(replace(spec, bridge=bad))
    with pytest.raises(BrokerConfError, match="device id must be known"):
        brokerconf.validate(replace(spec, devices={"+": "leat-scanner"}))


def test_bridge_spec_reads_the_password_file_under_root(tmp_path: Path) -> None:
    etc = tmp_path / "etc/leat-scanner"
    etc.mkdir(parents=True)
    (etc / "config.toml").write_text('[device]\nid = "counter-1"\n', encoding="utf-8")
    secret = tmp_path / "etc/credstore/leat-scanner.bridge-password"
    secret.parent.mkdir(parents=True)
    secret.write_text("s3cret\n", encoding="utf-8")
    (etc / "broker.toml").write_text(
        '[bridge]\nenabled = true\naddress = "mqtt.example.com:8883"\n'
        'remote_base_topic = "acme/shop-12/{device_id}"\n'
        'password_file = "/etc/credstore/leat-scanner.bridge-password"\n'
        'cafile = "/etc/mosquitto/leat-scanner/central-ca.crt"\n', encoding="utf-8")
    result = subprocess.run(
        ["python3", "-m", "appliance.brokerconf", "--root", str(tmp_path), "--hostname", "p"],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=60,
        check=False)
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout + result.stderr
    text = (tmp_path / BRIDGE_CONF.relative_to("/")).read_text(encoding="utf-8")
    assert "remote_password s3cret\n" in text and "remote_username counter-1\n" in text
