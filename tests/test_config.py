"""Config: defaults, the example file, every problem at once, env overrides, secrets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance import config
from appliance.errors import ConfigError

EXAMPLE = Path(__file__).parents[1] / "appliance" / "examples" / "config.toml"


def test_config_example_file_equals_defaults() -> None:
    loaded = config.load(EXAMPLE, environ={})
    defaults = config.Config()
    # The example shows every default (device.id is the hostname in both).
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
