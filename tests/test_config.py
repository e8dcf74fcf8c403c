"""Config: defaults, the example file, every problem at once, env overrides, secrets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from appliance import config, identity
from appliance.errors import ConfigError

EXAMPLE = Path(__file__).parents[1] / "appliance" / "examples" / "config.toml"


def test_config_example_file_equals_defaults() -> None:
    loaded = config.load(EXAMPLE, environ={})
    defaults = config.Config()
    # The example shows every default (device.id is the default id in both).
    assert loaded == defaults


def test_config_reports_every_problem_with_key_path(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[camera]\nfps = 0\nsource = "usb"\n[mqtt]\nport = 70000\ncolour = "red"\n'
        '[bogus]\nx = 1\n[mqtt.tls]\nenabled = "yes please"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        config.load(path, environ={})
    problems = caught.value.problems
    assert any(p.startswith("camera.fps:") for p in problems)
    assert any(p.startswith("camera.source:") for p in problems)
    assert any(p.startswith("mqtt.port:") for p in problems)
    assert "mqtt.colour: unknown key" in problems
    assert "bogus: unknown key" in problems
    assert any(p.startswith("mqtt.tls.enabled:") for p in problems)
    assert len(problems) == 6
    assert isinstance(caught.value, ValueError)


def test_config_missing_file_and_bad_toml_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no such file"):
        config.load(tmp_path / "absent.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[camera\nfps = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(bad, environ={})


def test_config_environment_overrides_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[mqtt]\nport = 1884\nhost = "broker.lan"\n', encoding="utf-8")
    cfg = config.load(
        path,
        environ={
            "LEAT_SCANNER_MQTT__PORT": "1999",
            "LEAT_SCANNER_DEVICE__ID": "till-2",
            "LEAT_SCANNER_DECODE__FORMATS": '["QRCode"]',
            "LEAT_SCANNER_MQTT__TLS__ENABLED": "true",
            "UNRELATED": "x",
        },
    )
    assert cfg.mqtt.port == 1999
    assert cfg.mqtt.host == "broker.lan"
    assert cfg.mqtt.tls.enabled is True
    assert cfg.decode.formats == ("QRCode",)
    assert cfg.base_topic == "leat-scanner/till-2"


def test_config_environment_override_errors_are_reported() -> None:
    with pytest.raises(ConfigError) as caught:
        config.load(environ={"LEAT_SCANNER_CAMERA__FPS": "fast", "LEAT_SCANNER_NOPE__X": "1"})
    assert any(p.startswith("camera.fps:") for p in caught.value.problems)
    assert "nope: unknown key" in caught.value.problems


def test_config_rejects_wildcards_in_base_topic() -> None:
    with pytest.raises(ConfigError, match=r"mqtt\.base_topic"):
        config.load(environ={"LEAT_SCANNER_MQTT__BASE_TOPIC": "shops/#"})


def test_config_secrets_are_not_accepted_inline(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[mqtt]\npassword = "hunter2"\n[leat]\ntoken = "abc"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        config.load(path, environ={})
    assert caught.value.problems == ["mqtt.password: unknown key", "leat.token: unknown key"]
    assert "hunter2" not in str(caught.value)


def test_config_read_secret_from_private_file(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret\n", encoding="utf-8")
    secret.chmod(0o600)
    assert config.read_secret("mqtt-password", secret, environ={}) == "s3cret"


def test_config_read_secret_refuses_group_readable_file(tmp_path: Path) -> None:
    secret = tmp_path / "leat-token"
    secret.write_text("tok", encoding="utf-8")
    secret.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600") as caught:
        config.read_secret("leat-token", secret, environ={})
    assert "tok" not in str(caught.value).replace("leat-token", "")


def test_config_read_secret_from_systemd_credentials(tmp_path: Path) -> None:
    (tmp_path / "leat-token").write_text("from-systemd\n", encoding="utf-8")
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert config.read_secret("leat-token", None, environ=environ) == "from-systemd"
    assert config.read_secret("mqtt-password", None, environ=environ) is None
    assert config.read_secret("mqtt-password", None, environ={}) is None


def test_config_read_secret_missing_or_empty_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        config.read_secret("mqtt-password", tmp_path / "absent", environ={})
    empty = tmp_path / "empty"
    empty.touch(mode=0o600)
    os.chmod(empty, 0o600)
    with pytest.raises(ConfigError, match="is empty"):
        config.read_secret("mqtt-password", empty, environ={})


def test_config_read_secret_refuses_file_readable_by_others_only(tmp_path: Path) -> None:
    secret = tmp_path / "leat-token"
    secret.write_text("tok", encoding="utf-8")
    secret.chmod(0o604)
    with pytest.raises(ConfigError, match="readable by others"):
        config.read_secret("leat-token", secret, environ={})


# --- device identity --------------------------------------------------------------------


def serial_files(tmp_path: Path, device_tree: bytes | None, cpuinfo: str | None) -> dict[str, Any]:
    """Stand-ins for /proc/device-tree/serial-number and /proc/cpuinfo (None: absent)."""
    tree, info = tmp_path / "serial-number", tmp_path / "cpuinfo"
    if device_tree is not None:
        tree.write_bytes(device_tree)
    if cpuinfo is not None:
        info.write_text(cpuinfo, encoding="ascii")
    return {"paths": [tmp_path / "absent", tree], "cpuinfo": info}


PI5_CPUINFO = (  # raspberrypi/bookworm-feedback issue 129 (a Pi 5 on Bookworm)
    "processor\t: 0\nBogoMIPS\t: 108.00\n\nHardware\t: BCM2835\nRevision\t: d04170\n"
    "Serial\t\t: ee14f78c1312ce93\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n"
)


def test_identity_default_id_from_the_device_tree_serial(tmp_path: Path) -> None:
    files = serial_files(tmp_path, b"10000000a9d6d5a4\x00", PI5_CPUINFO)
    assert identity.serial_number(**files) == "10000000a9d6d5a4"
    assert identity.default_device_id(**files) == ("scanner-a9d6d5a4", "serial")


def test_identity_falls_back_to_cpuinfo_then_hostname(tmp_path: Path) -> None:
    files = serial_files(tmp_path, None, PI5_CPUINFO)
    assert identity.default_device_id(**files) == ("scanner-1312ce93", "serial")
    (tmp_path / "x").mkdir()
    no_serial = serial_files(tmp_path / "x", b"0000000000000000\x00", "processor : 0\n")
    found = identity.default_device_id(**no_serial, gethostname=lambda: "raspberrypi")
    assert found == ("raspberrypi", "hostname")


def test_identity_hostname_is_reduced_to_an_id() -> None:
    assert identity.hostname_id(lambda: "till.shop.lan") == "till-shop-lan"
    assert identity.hostname_id(lambda: "kassé_1") == "kass-_1"
    assert identity.hostname_id(lambda: "..") == "leat-scanner"
    assert identity.hostname_id(lambda: "a" * 80) == "a" * 64


def test_config_default_device_id_is_read_per_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = serial_files(tmp_path, b"00000000316e5228\x00", None)
    monkeypatch.setattr(identity, "SERIAL_PATHS", tuple(files["paths"]))
    assert config.load(environ={}).device.id == "scanner-316e5228"
    path = tmp_path / "config.toml"
    path.write_text('[device]\nid = "counter-1"\n', encoding="utf-8")
    assert config.load(path, environ={}).device.id == "counter-1"  # an upgrade keeps it


# --- the one validation of check and run ------------------------------------------------


def private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def test_validate_lists_every_problem_with_its_key_path(tmp_path: Path) -> None:
    token = private(tmp_path / "token", "pat-hunter2", 0o604)
    path = tmp_path / "config.toml"
    path.write_text(
        f'[device]\nid = "till-1"\n'
        f'[camera]\nsource = "replay"\nreplay_path = "{tmp_path / "gone"}"\n'
        f'[codes]\nvoucher_pattern = "([A-Z"\n'
        f'[mqtt]\npassword_file = "{tmp_path / "absent"}"\n'
        f'[mqtt.tls]\nenabled = true\nca_file = "{tmp_path / "ca.pem"}"\n'
        f'[leat]\ntoken_file = "{token}"\nclient_id = "42"\nportal_url = "https://x.piggy.eu"\n',
        encoding="utf-8",
    )
    found = config.validate(config.load(path, environ={}), environ={})
    keys = sorted(problem.split(":", 1)[0] for problem in found.problems)
    assert keys == [
        "camera.replay_path",
        "codes.voucher_pattern",
        "leat.account_secret_file",
        "leat.client_secret_file",
        "leat.shop_uuid",
        "leat.token_file",
        "mqtt.password_file",
        "mqtt.tls.ca_file",
    ]
    assert any("chmod 600" in p for p in found.problems)
    assert "hunter2" not in " ".join(found.problems)
    assert found.warnings == ()  # the id is set
    assert found.secrets == {"mqtt-password": False, "leat-token": False,
                             "leat-client-secret": False, "leat-account-secret": False,
                             "web-password": False}


def test_validate_leat_credentials_need_shop_uuid(tmp_path: Path) -> None:
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    private(tmp_path / "leat-token", "pat")
    cfg = config.load(environ={"LEAT_SCANNER_DEVICE__ID": "till-1"})
    assert config.validate(cfg, environ).problems == (
        "leat.shop_uuid: required with Leat credentials (every order and identification "
        "names the shop; Leat refuses orders without it)",
    )
    with_shop = config.load(environ={"LEAT_SCANNER_LEAT__SHOP_UUID": "0c1b-shop"})
    assert config.validate(with_shop, environ).problems == ()
    assert config.validate(with_shop, environ).secrets["leat-token"] is True


def test_validate_portal_url_needs_the_account_secret(tmp_path: Path) -> None:
    overrides = {
        "LEAT_SCANNER_LEAT__SHOP_UUID": "0c1b-shop",
        "LEAT_SCANNER_LEAT__PORTAL_URL": "https://shop.piggy.eu",
    }
    [problem] = config.validate(config.load(environ=overrides), environ={}).problems
    assert problem.startswith("leat.account_secret_file: ")
    assert "anonymous orders need both" in problem


def test_validate_account_secret_alone_is_a_warning(tmp_path: Path) -> None:
    """The secret alone still verifies scanned tokens; anonymous orders are refused then."""
    overrides = {
        "LEAT_SCANNER_LEAT__SHOP_UUID": "0c1b-shop",
        "LEAT_SCANNER_LEAT__ACCOUNT_SECRET_FILE": str(private(tmp_path / "secret", "s3cret")),
        "LEAT_SCANNER_DEVICE__ID": "counter-1",
    }
    validation = config.validate(config.load(environ=overrides), environ={})
    assert validation.problems == ()
    assert [w.split(":")[0] for w in validation.warnings] == ["leat.portal_url"]


def test_validate_warns_when_the_id_falls_back_to_the_hostname() -> None:
    cfg = config.load(environ={})
    by_hostname = config.validate(
        cfg, environ={}, device_id=lambda: identity.DeviceId("raspberrypi", "hostname")
    )
    assert [w.split(":")[0] for w in by_hostname.warnings] == ["device.id"]
    assert "raspberrypi" in by_hostname.warnings[0]
    by_serial = config.validate(
        cfg, environ={}, device_id=lambda: identity.DeviceId("scanner-316e5228", "serial")
    )
    assert by_serial.warnings == ()


def test_capabilities_follow_the_configuration(tmp_path: Path) -> None:
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert config.capabilities(config.load(environ={}), environ) == ["scan", "feedback"]
    private(tmp_path / "leat-token", "pat")
    private(tmp_path / "leat-account-secret", "s3cret")
    leat = config.load(environ={"LEAT_SCANNER_FEEDBACK__ENABLED": "false"})
    assert config.capabilities(leat, environ) == ["scan", "identify", "orders", "commands"]
    tokens = config.load(environ={"LEAT_SCANNER_LEAT__PORTAL_URL": "https://shop.piggy.eu"})
    assert config.capabilities(tokens, environ) == [
        "scan", "identify", "orders", "commands", "anonymous_orders", "feedback"
    ]
