"""The technician scripts in provisioning/ and the units in systemd/, run with real bash.

Everything installs into a temporary `--root`, so no test needs root, apt or a running
systemd; only `systemd-analyze verify` and shellcheck are skipped when their binaries are
missing.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tomllib
from collections.abc import Sequence
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from appliance import config

REPO = Path(__file__).resolve().parents[1]
PROVISIONING = REPO / "provisioning"
PROVISION = PROVISIONING / "provision"
UNIT = REPO / "systemd" / "leat-scanner.service"
MOSQUITTO_CONF = REPO / "systemd" / "mosquitto-leat.conf"
STEPS = sorted(PROVISIONING.glob("[0-9][0-9]-*.sh"))
SCRIPTS = [PROVISION, *STEPS]  # executables
SHELL_FILES = [*SCRIPTS, PROVISIONING / "lib.sh"]
SECRET_NAMES = ("mqtt-password", "leat-token", "leat-client-secret", "leat-account-secret")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty directory standing in for the device's `/`."""
    target = tmp_path / "root"
    target.mkdir()
    return target


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """The scripts' TMPDIR: must be empty again after every run (trap cleanup)."""
    target = tmp_path / "scratch"
    target.mkdir()
    return target


def _env(scratch: Path, **extra: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"ROOT", "DRY_RUN", "CHANGES", "DEVICE_ID", "MQTT_HOST"}
    }
    env.update(TMPDIR=str(scratch), LC_ALL="C.UTF-8", **extra)
    return env


def provision(
    scratch: Path, *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run provisioning/provision with `args`; output is captured, never raises."""
    return subprocess.run(
        ["bash", str(PROVISION), *map(str, args)],
        capture_output=True,
        text=True,
        env=env or _env(scratch),
        timeout=60,
        check=False,
    )


def bash(scratch: Path, root: Path, script: str) -> subprocess.CompletedProcess[str]:
    """Run `script` after sourcing lib.sh and the step scripts, with ROOT=root."""
    sources = "\n".join(f'source "{p}"' for p in sorted(PROVISIONING.glob("*.sh")))
    return subprocess.run(
        ["bash", "-c", f"set -euo pipefail\n{sources}\n{script}"],
        capture_output=True,
        text=True,
        env=_env(scratch, ROOT=str(root)),
        timeout=60,
        check=False,
    )


def config_step(device_id: str, mqtt_host: str) -> str:
    """Shell lines: render the example config with these values and install it."""
    return f'make_temp out\nrender_config "$out" "{device_id}" "{mqtt_host}"\ninstall_config "$out"'


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def secret_file(tmp_path: Path, mode: int, text: str = "pat-123\n") -> Path:
    path = tmp_path / "leat-token"
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as {section: {key: [values...]}} (keys may repeat, unlike configparser)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"{path.name}:{number}: not INI: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


# --- the scripts as files ----------------------------------------------------------------


@pytest.mark.parametrize("script", SHELL_FILES, ids=lambda p: p.name)
def test_scripts_parse_with_bash_n(script: Path) -> None:
    result = subprocess.run(
        ["bash", "-n", str(script)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_follow_shell_style(script: Path) -> None:
    text = script.read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert text.rstrip().endswith(("main \"$@\"", "main \"$@\"\nfi"))
    assert script.stat().st_mode & stat.S_IXUSR, f"chmod +x {script}"


def test_scripts_shellcheck_clean() -> None:
    assert shutil.which("shellcheck"), "shellcheck not installed; run scripts/bootstrap test"
    developer_scripts = [*sorted((REPO / "scripts").iterdir()), REPO / ".ci" / "run"]
    result = subprocess.run(
        ["shellcheck", "-x", *map(str, SHELL_FILES), *map(str, developer_scripts)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout


# --- provision: the plan, validation, reruns ----------------------------------------------


def test_provision_dry_run_prints_plan_and_changes_nothing(root: Path, scratch: Path) -> None:
    result = provision(scratch, "--dry-run", "--root", root, "--device-id", "counter-1")

    assert result.returncode == 0, result.stderr
    assert "would: install /etc/leat-scanner/config.toml" in result.stdout
    assert "would: install /etc/systemd/system/leat-scanner.service" in result.stdout
    assert "would: generate the MQTT password" in result.stdout
    assert "change(s) planned, none made" in result.stdout
    assert files_under(root) == []
    assert files_under(scratch) == []


def test_provision_help_names_every_option(scratch: Path) -> None:
    result = provision(scratch, "--help")

    assert result.returncode == 0
    for option in ("--device-id", "--mqtt-host", "--leat-token-file", "--no-camera",
                   "--dry-run", "--root"):
        assert option in result.stdout


@pytest.mark.parametrize("bad_id", ["-counter", "has space", "a" * 65, "x/y", "ü", "a\"b"])
def test_provision_bad_device_id_fails_before_any_change(
    root: Path, scratch: Path, bad_id: str
) -> None:
    result = provision(scratch, "--root", root, "--device-id", bad_id)

    assert result.returncode != 0
    assert "--device-id" in result.stderr
    assert "not a valid device id" in result.stderr
    assert files_under(root) == []


def test_provision_missing_token_file_fails_before_any_change(
    root: Path, scratch: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "nope"
    result = provision(scratch, "--root", root, "--leat-token-file", missing)

    assert result.returncode != 0
    assert f"--leat-token-file {missing}: no such file" in result.stderr
    assert files_under(root) == []


def test_provision_world_readable_token_file_fails_before_any_change(
    root: Path, scratch: Path, tmp_path: Path
) -> None:
    token = secret_file(tmp_path, 0o644)
    result = provision(scratch, "--root", root, "--leat-token-file", token)

    assert result.returncode != 0
    assert "readable by others" in result.stderr
    assert f"chmod 600 {token}" in result.stderr
    assert files_under(root) == []


def test_provision_bad_mqtt_host_fails_before_any_change(root: Path, scratch: Path) -> None:
    result = provision(scratch, "--root", root, "--mqtt-host", 'evil"; rm -rf /')

    assert result.returncode != 0
    assert "--mqtt-host" in result.stderr
    assert files_under(root) == []


@pytest.mark.parametrize("args", [["--bogus"], ["--device-id"]], ids=["unknown", "no-value"])
def test_provision_malformed_command_line_exits_2(
    root: Path, scratch: Path, args: Sequence[str]
) -> None:
    result = provision(scratch, "--root", root, *args)

    assert result.returncode == 2
    assert "--help" in result.stderr
    assert files_under(root) == []


def test_provision_installs_files_then_second_run_changes_nothing(
    root: Path, scratch: Path, tmp_path: Path
) -> None:
    token = secret_file(tmp_path, 0o600)
    args = ("--root", root, "--device-id", "counter-1", "--leat-token-file", token)

    first = provision(scratch, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    snapshot = {p: (root / p).read_bytes() for p in files_under(root) if (root / p).is_file()}
    second = provision(scratch, *args)

    assert second.returncode == 0, second.stdout + second.stderr
    assert "nothing to change: this device is already provisioned" in second.stdout
    assert {p: (root / p).read_bytes() for p in snapshot} == snapshot
    assert files_under(scratch) == []
    assert set(snapshot) >= {
        "etc/leat-scanner/config.toml",
        "etc/credstore/leat-scanner.leat-token",
        "etc/credstore/leat-scanner.mqtt-password",
        "etc/systemd/system/leat-scanner.service",
        "etc/mosquitto/conf.d/leat-scanner.conf",
        "etc/mosquitto/leat-scanner.acl",
        "etc/mosquitto/leat-scanner.passwd",
    }


def test_provision_secrets_are_root_only(root: Path, scratch: Path, tmp_path: Path) -> None:
    token = secret_file(tmp_path, 0o600)
    result = provision(scratch, "--root", root, "--leat-token-file", token)

    assert result.returncode == 0, result.stdout + result.stderr
    store = root / "etc/credstore"
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    assert (store / "leat-scanner.leat-token").read_text(encoding="utf-8") == "pat-123\n"
    for secret in store.iterdir():
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    assert stat.S_IMODE((root / "etc/leat-scanner/config.toml").stat().st_mode) == 0o640
    password = (store / "leat-scanner.mqtt-password").read_text(encoding="utf-8").strip()
    assert len(password) >= 20
    assert password not in result.stdout + result.stderr
    passwd = (root / "etc/mosquitto/leat-scanner.passwd").read_text(encoding="utf-8")
    assert passwd.startswith("leat-scanner:")


def test_provision_new_token_replaces_the_credential(
    root: Path, scratch: Path, tmp_path: Path
) -> None:
    token = secret_file(tmp_path, 0o600)
    assert provision(scratch, "--root", root, "--leat-token-file", token).returncode == 0
    token.write_text("pat-456\n", encoding="utf-8")

    result = provision(scratch, "--root", root, "--leat-token-file", token)

    assert result.returncode == 0, result.stderr
    assert "install credential leat-token" in result.stdout
    stored = root / "etc/credstore/leat-scanner.leat-token"
    assert stored.read_text(encoding="utf-8") == "pat-456\n"


# --- the config step, sourced -----------------------------------------------------------


def test_install_config_installs_example_once_and_keeps_edits(root: Path, scratch: Path) -> None:
    step = config_step("counter-7", "192.168.1.10")
    installed = root / "etc/leat-scanner/config.toml"

    first = bash(scratch, root, step)
    assert first.returncode == 0, first.stderr
    assert "install /etc/leat-scanner/config.toml" in first.stdout
    edited = installed.read_text(encoding="utf-8").replace("fps = 15.0", "fps = 10.0")
    installed.write_text(edited, encoding="utf-8")
    second = bash(scratch, root, step)

    assert second.returncode == 0, second.stderr
    assert "kept as it is" in second.stdout
    assert installed.read_text(encoding="utf-8") == edited


def test_install_config_result_loads_with_the_device_values(root: Path, scratch: Path) -> None:
    result = bash(scratch, root, config_step("counter-7", "mqtt.shop"))
    assert result.returncode == 0, result.stderr

    cfg = config.load(root / "etc/leat-scanner/config.toml", environ={})

    assert cfg.device.id == "counter-7"
    assert cfg.mqtt.host == "mqtt.shop"
    assert cfg.mqtt.username == "leat-scanner"


def test_install_config_without_device_id_keeps_hostname_default(root: Path, scratch: Path) -> None:
    result = bash(scratch, root, config_step("", ""))
    assert result.returncode == 0, result.stderr

    cfg = config.load(root / "etc/leat-scanner/config.toml", environ={})

    assert cfg.device.id == config.DeviceConfig().id
    assert cfg.mqtt.host == "localhost"


ON_A_PI = """on_host() { true; }
device_identity() {
  if [[ "${1:-}" == --hostname ]]; then echo "raspberrypi hostname"
  else echo "scanner-316e5228 serial"; fi
}
"""  # this machine stands in for a Pi: the serial-number id, the hostname


def test_identity_module_runs_on_the_system_python_alone(scratch: Path) -> None:
    import sys

    env = _env(scratch, PYTHONPATH=str(REPO))
    for args in ([], ["--hostname"]):
        result = subprocess.run(  # -S: no site-packages, as before the virtualenv exists
            [sys.executable, "-S", "-m", "appliance.identity", *args],
            capture_output=True, text=True, env=env, timeout=30, check=False,
        )
        assert result.returncode == 0, result.stderr
        device_id, source = result.stdout.split()
        assert re.fullmatch(config.DEVICE_ID_PATTERN, device_id)
        assert source in ("serial", "hostname")


def test_render_config_on_a_pi_writes_the_serial_number_id(root: Path, scratch: Path) -> None:
    result = bash(scratch, root, ON_A_PI + 'make_temp out\nrender_config "$out" "" ""\ncat "$out"')
    assert result.returncode == 0, result.stderr
    assert '\nid = "scanner-316e5228"' in result.stdout


@pytest.mark.parametrize("device_section", [True, False], ids=["device-table", "no-device-table"])
def test_install_config_pins_the_id_an_existing_device_ran_with(
    root: Path, scratch: Path, device_section: bool
) -> None:
    installed = root / "etc/leat-scanner/config.toml"
    installed.parent.mkdir(parents=True)
    before = '[device]\nstate_dir = "/var/lib/leat-scanner"\n' if device_section else ""
    installed.write_text(before + '[camera]\nfps = 10.0\n', encoding="utf-8")

    first = bash(scratch, root, ON_A_PI + config_step("", ""))
    second = bash(scratch, root, ON_A_PI + config_step("", ""))

    assert first.returncode == 0, first.stderr
    assert 'pin device.id = "raspberrypi"' in first.stdout
    assert second.returncode == 0, second.stderr
    assert "pin device.id" not in second.stdout  # pinned once
    cfg = config.load(installed, environ={})
    assert cfg.device.id == "raspberrypi"  # the hostname it ran with, not the serial
    assert cfg.camera.fps == 10.0


def test_install_config_dry_run_writes_nothing(root: Path, scratch: Path) -> None:
    result = bash(scratch, root, "DRY_RUN=1\n" + config_step("", ""))

    assert result.returncode == 0, result.stderr
    assert "would: install /etc/leat-scanner/config.toml" in result.stdout
    assert files_under(root) == []


# --- packages.txt -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "no_camera", "camera_expected", "gpio_expected"),
    [
        ("Raspberry Pi 4 Model B Rev 1.5", "0", True, True),
        ("Raspberry Pi 5 Model B Rev 1.0", "1", False, True),
        (None, "0", False, False),
    ],
    ids=["pi", "pi-no-camera", "not-a-pi"],
)
def test_packages_camera_and_gpio_only_on_a_pi(
    root: Path,
    scratch: Path,
    tmp_path: Path,
    model: str | None,
    no_camera: str,
    camera_expected: bool,
    gpio_expected: bool,
) -> None:
    model_file = tmp_path / "model"
    if model is not None:
        model_file.write_bytes(model.encode() + b"\0")
    result = bash(scratch, root, f'DEVICE_TREE_MODEL="{model_file}" wanted_packages {no_camera}')

    assert result.returncode == 0, result.stderr
    packages = result.stdout.split()
    assert {"python3-venv", "mosquitto", "mosquitto-clients"} <= set(packages)
    assert ("python3-picamera2" in packages) is camera_expected
    assert ("python3-lgpio" in packages) is gpio_expected


def test_constraints_pin_every_runtime_dependency() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins: dict[str, str] = {}
    for raw in (PROVISIONING / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version

    for dependency in project["dependencies"]:
        requirement = Requirement(dependency)
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in pins, f"pin {name} in provisioning/constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, pyproject wants {requirement.specifier}"
        )
    # apt's picamera2 (simplejpeg) is built against numpy 1.x: numpy 2 breaks its import.
    assert int(pins["numpy"].split(".")[0]) < 2


# --- systemd and mosquitto files --------------------------------------------------------


def test_unit_has_the_expected_keys() -> None:
    unit = parse_unit(UNIT)
    service = unit["Service"]

    assert service["ExecStart"] == [
        "/opt/leat-scanner/venv/bin/leat-scanner run --config /etc/leat-scanner/config.toml"
    ]
    assert service["User"] == ["leat-scanner"]
    assert service["StateDirectory"] == ["leat-scanner"]
    assert service["ConfigurationDirectory"] == ["leat-scanner"]
    assert service["Restart"] == ["on-failure"]
    assert service["RestartSec"] == ["5"]
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert service["WatchdogSec"] == ["30"]
    # lgpio's .lgd-nfy* pipe goes to a writable directory (gpiozero issue 1106)
    assert service["WorkingDirectory"] == ["/var/lib/leat-scanner"]
    assert service["Environment"] == ["LG_WD=/var/lib/leat-scanner"]
    assert service["SupplementaryGroups"] == ["video gpio"]
    assert "network-online.target" in unit["Unit"]["Wants"][0]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_unit_loads_every_secret_as_an_optional_credential() -> None:
    credentials = dict(
        value.split(":", 1) for value in parse_unit(UNIT)["Service"]["LoadCredential"]
    )

    assert set(credentials) == set(SECRET_NAMES)
    for name, source in credentials.items():
        # A bare name is searched in /etc/credstore and skipped when missing; an absolute
        # path that does not exist would fail the start (status 243/CREDENTIALS).
        assert source == f"leat-scanner.{name}"


def test_unit_hardening_still_allows_camera_and_gpio() -> None:
    service = parse_unit(UNIT)["Service"]

    assert service["DevicePolicy"] == ["closed"]
    allowed = {value.split()[0] for value in service["DeviceAllow"]}
    assert {"char-video4linux", "char-media", "char-dma_heap", "char-gpiochip"} <= allowed
    assert "PrivateDevices" not in service
    assert service["CapabilityBoundingSet"] == [""]
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "MemoryDenyWriteExecute"):
        assert service[key] == ["yes"], key
    assert service["ProtectSystem"] == ["strict"]


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify insists the ExecStart binary exists; the venv only exists on a device.
    copy = tmp_path / UNIT.name
    copy.write_text(
        re.sub(r"(?m)^ExecStart=\S+", f"ExecStart={shutil.which('true')}",
               UNIT.read_text(encoding="utf-8")),
        encoding="utf-8",
    )

    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=30, check=False
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_mosquitto_conf_requires_passwords_on_the_lan() -> None:
    lines = [
        line.split()
        for line in MOSQUITTO_CONF.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    listeners: list[list[list[str]]] = []
    for words in lines:
        if words[0] == "listener":
            listeners.append([words])
        elif listeners:
            listeners[-1].append(words)

    assert ["per_listener_settings", "true"] in lines
    lan, loopback = listeners  # generated by appliance/brokerconf.py (tests/test_broker_lockdown)
    assert lan[0] == ["listener", "8883"]
    assert ["certfile", "/etc/mosquitto/leat-scanner/server.crt"] in lan
    assert loopback[0] == ["listener", "1883", "127.0.0.1"]
    for listener in (lan, loopback):
        assert ["allow_anonymous", "false"] in listener
        assert ["password_file", "/etc/mosquitto/leat-scanner.passwd"] in listener
        assert ["acl_file", "/etc/mosquitto/leat-scanner.acl"] in listener
