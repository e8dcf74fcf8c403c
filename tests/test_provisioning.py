"""The technician scripts in provisioning/ and the units in systemd/, run with real bash.

Everything installs into a temporary `--root`, so no test needs root, apt or a running
systemd; only `systemd-analyze verify` and shellcheck are skipped when their binaries are
missing.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from appliance import config
from appliance.outbox import Outbox
from appliance.outbox_items import Kind

REPO = Path(__file__).resolve().parents[1]
PROVISIONING = REPO / "provisioning"
PROVISION = PROVISIONING / "provision"
UNIT = REPO / "systemd" / "leat-scanner.service"
MOSQUITTO_CONF = REPO / "systemd" / "mosquitto-leat.conf"
STEPS = sorted(PROVISIONING.glob("[0-9][0-9]-*.sh"))
SCRIPTS = [PROVISION, *STEPS]  # executables
SHELL_FILES = [*SCRIPTS, PROVISIONING / "lib.sh"]
SECRET_NAMES = tuple(config.SECRETS)  # every secret the config reads from a credential


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
        ["shellcheck", "-x", *map(str, developer_scripts)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout
    # The provisioning scripts with every optional check (provisioning/.shellcheckrc says
    # why SC2250 is off); SC2310/SC2311 catch a function whose failure `set -e` would miss.
    result = subprocess.run(
        ["shellcheck", "-x", "-o", "all", *map(str, SHELL_FILES)],
        capture_output=True,
        text=True,
        cwd=PROVISIONING,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def test_every_shellcheck_exception_says_why() -> None:
    rc = (PROVISIONING / ".shellcheckrc").read_text(encoding="utf-8")
    assert [line for line in rc.splitlines() if line.startswith("disable=")] == [
        "disable=SC2250"
    ]
    for script in SHELL_FILES:
        for number, line in enumerate(script.read_text(encoding="utf-8").splitlines(), 1):
            if "shellcheck disable=" in line:
                assert re.search(r"disable=\S+\s+#\s*\S", line), f"{script.name}:{number}: why?"


def test_a_failing_install_stops_with_a_message(root: Path, scratch: Path) -> None:
    (root / "etc/systemd").mkdir(parents=True)
    (root / "etc/systemd/system").write_text("a file where a directory belongs\n")

    result = provision(scratch, "--root", root, "--device-id", "counter-1")

    assert result.returncode == 1
    assert "! failed (exit 1): install -D -m 0644" in result.stderr
    assert "provisioning stopped during: 40 units" in result.stderr
    assert "done:" not in result.stdout
    assert not (root / "etc/mosquitto").exists()  # nothing after the failed step ran


def test_a_failing_command_in_a_sourced_step_stops_it(root: Path, scratch: Path) -> None:
    result = bash(scratch, root, 'RUN_HINT="fix it" run false\necho after')

    assert result.returncode == 1
    assert "failed (exit 1): false: fix it" in result.stderr
    assert "after" not in result.stdout


# --- provision: the plan, validation, reruns ----------------------------------------------


def test_provision_dry_run_prints_plan_and_changes_nothing(
    root: Path, scratch: Path, tmp_path: Path
) -> None:
    token = secret_file(tmp_path, 0o600)
    result = provision(scratch, "--dry-run", "--root", root, "--device-id", "counter-1",
                       "--leat-token-file", token)

    assert result.returncode == 0, result.stderr
    assert "would: install /etc/leat-scanner/config.toml" in result.stdout
    assert "would: install /etc/systemd/system/leat-scanner.service" in result.stdout
    assert "would: link /opt/leat-scanner/current -> versions/" in result.stdout
    assert "each device generates its own at the first boot" in result.stdout
    assert "change(s) planned, none made" in result.stdout
    assert "credential leat-token would be installed" in result.stdout  # not "installed"
    assert "credential leat-token installed" not in result.stdout
    assert "no device id yet" not in result.stderr  # it was given: only not written yet
    assert files_under(root) == []
    assert files_under(scratch) == []


def test_provision_help_names_every_option(scratch: Path) -> None:
    result = provision(scratch, "--help")

    assert result.returncode == 0
    for option in ("--device-id", "--mqtt-host", "--leat-token-file", "--no-camera",
                   "--dry-run", "--root", "--shop-uuid", "--portal-url",
                   "--account-secret-file", "--first-boot", "--upgrade", "--from",
                   "--version"):
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
        "etc/systemd/system/leat-scanner.service",
        "etc/systemd/system/leat-scanner-firstboot.service",
        "etc/mosquitto/conf.d/leat-scanner.conf",
        "etc/mosquitto/leat-scanner.acl",
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
    assert "pat-123" not in result.stdout + result.stderr
    assert "every card made from this tree carries the Leat secret" in result.stderr


def test_provision_new_token_replaces_the_credential(
    root: Path, scratch: Path, tmp_path: Path
) -> None:
    token = secret_file(tmp_path, 0o600)
    assert provision(scratch, "--root", root, "--leat-token-file", token).returncode == 0
    token.write_text("pat-456\n", encoding="utf-8")

    result = provision(scratch, "--root", root, "--leat-token-file", token)

    assert result.returncode == 0, result.stderr
    assert "install /etc/credstore/leat-scanner.leat-token (mode 0600)" in result.stdout
    assert "credential leat-token installed" in result.stdout
    stored = root / "etc/credstore/leat-scanner.leat-token"
    assert stored.read_text(encoding="utf-8") == "pat-456\n"


# --- --root: a tree for an SD card image, finished by its first boot ----------------------


def unit_exec(path: Path) -> str:
    return parse_unit(path)["Service"]["ExecStart"][0].split()[0]


def test_root_tree_boots_with_both_units_enabled_and_nothing_device_specific(
    root: Path, scratch: Path
) -> None:
    result = provision(scratch, "--root", root)
    assert result.returncode == 0, result.stdout + result.stderr

    units = root / "etc/systemd/system"
    for name in ("leat-scanner.service", "leat-scanner-firstboot.service"):
        link = units / "multi-user.target.wants" / name
        assert os.readlink(link) == f"/etc/systemd/system/{name}"  # what systemctl enable makes
        assert (units / name).read_bytes() == (REPO / "systemd" / name).read_bytes()
        assert stat.S_IMODE((units / name).stat().st_mode) == 0o644
    current = root / "opt/leat-scanner/current"
    version = os.readlink(current)
    assert re.fullmatch(r"versions/0\.1\.0-[0-9a-f]{12}", version)  # relative: works in the tree
    first_boot = root / unit_exec(units / "leat-scanner-firstboot.service").lstrip("/")
    assert first_boot.is_file() and os.access(first_boot, os.X_OK)  # current/src/provisioning
    assert unit_exec(units / "leat-scanner.service").startswith("/opt/leat-scanner/current/venv/")
    assert not list((current / "src").rglob("__pycache__"))
    config_file = root / "etc/leat-scanner/config.toml"
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o640
    assert not re.search(r"(?m)^id\s*=", config_file.read_text(encoding="utf-8"))  # per device
    store = root / "etc/credstore"
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    assert list(store.iterdir()) == []  # the MQTT password is made by each device
    assert not (root / "etc/mosquitto/leat-scanner.passwd").exists()
    if os.geteuid() == 0:  # an image build as root: root's files by number, as on the device
        for path in root.rglob("*"):
            assert (path.lstat().st_uid, path.lstat().st_gid) == (0, 0), path


def test_first_boot_unit_runs_provision_once_before_the_services() -> None:
    unit = parse_unit(REPO / "systemd" / "leat-scanner-firstboot.service")

    assert unit["Service"]["ExecStart"] == [
        "/opt/leat-scanner/current/src/provisioning/provision --first-boot"]
    assert unit["Service"]["Type"] == ["oneshot"]
    assert unit["Unit"]["ConditionPathExists"] == ["!/var/lib/leat-scanner-firstboot/done"]
    assert {"leat-scanner.service", "mosquitto.service"} <= set(unit["Unit"]["Before"][0].split())
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    text = (PROVISIONING / "provision").read_text(encoding="utf-8")
    assert "FIRST_BOOT_DONE" in text and "/var/lib/leat-scanner-firstboot/done" in (
        PROVISIONING / "lib.sh").read_text(encoding="utf-8")


FIRST_BOOT = "FIRST_BOOT=1\n"


def test_first_boot_gives_the_image_config_this_device_id_and_mode(
    root: Path, scratch: Path
) -> None:
    assert provision(scratch, "--root", root).returncode == 0
    config_file = root / "etc/leat-scanner/config.toml"
    config_file.chmod(0o644)  # as a careless image build might leave it
    step = ON_A_PI + FIRST_BOOT + config_step("", "")

    first = bash(scratch, root, step)
    second = bash(scratch, root, step + '\necho "changes=$CHANGES"')

    assert first.returncode == 0, first.stderr
    assert 'pin device.id = "scanner-316e5228"' in first.stdout  # the serial, not the hostname
    assert "chmod 0640 /etc/leat-scanner/config.toml (was 644)" in first.stdout
    assert second.returncode == 0, second.stderr
    assert "changes=0" in second.stdout
    assert config.load(config_file, environ={}).device.id == "scanner-316e5228"
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o640


@pytest.mark.parametrize(
    "args", [["--first-boot", "--root", "{root}"], ["--upgrade", "--first-boot"],
             ["--from", "{root}"], ["--upgrade", "--from", "{root}", "--version", "1"]],
    ids=["first-boot-root", "upgrade-first-boot", "from-alone", "from-and-version"])
def test_provision_option_combinations_that_make_no_sense_exit_2(
    root: Path, scratch: Path, args: list[str]
) -> None:
    result = provision(scratch, *(a.format(root=root) for a in args))

    assert result.returncode == 2, result.stdout + result.stderr
    assert files_under(root) == []


@pytest.mark.parametrize("script", STEPS, ids=lambda p: p.name)
def test_every_step_script_run_twice_changes_nothing_the_second_time(
    root: Path, scratch: Path, script: Path
) -> None:
    if script.name == "50-upgrade.sh":
        assert provision(scratch, "--root", root).returncode == 0  # a tree to upgrade
    env = _env(scratch, ROOT=str(root))
    runs = [subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env,
                           timeout=60, check=False) for _ in range(2)]

    for run in runs:
        assert run.returncode == 0, run.stdout + run.stderr
    assert runs[1].stdout.rstrip().endswith("* nothing to change"), runs[1].stdout
    assert files_under(scratch) == []


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="on the host, version files are chowned to root")
def test_a_version_builds_its_virtualenv_with_the_pins_and_runs(
    tmp_path: Path, scratch: Path
) -> None:
    """The host path of step 30 for real: source copy, venv, pip with constraints.txt
    (markers evaluated by this pip), the `current` link; the program then runs from it."""
    home = tmp_path / "opt"
    script = "\n".join([
        "set -euo pipefail",
        f'source "{PROVISIONING / "lib.sh"}"',
        f'source "{PROVISIONING / "30-install.sh"}"',
        f'APP_HOME="{home}"; VERSIONS_DIR="{home}/versions"; CURRENT="{home}/current"',
        'ensure_version "$REPO_DIR"',
        'switch_current "$VERSION"',
        'ensure_version "$REPO_DIR"',  # again: nothing to do
        'echo "changes=$CHANGES"',
    ])
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                            env=_env(scratch, ROOT=""), timeout=900, check=False)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "changes=5" in result.stdout  # 2 directories, source, venv, link; none the 2nd time
    venv = home / "current/venv/bin"
    ran = subprocess.run([str(venv / "leat-scanner"), "--help"], capture_output=True,
                         text=True, timeout=60, check=False)
    assert ran.returncode == 0, ran.stderr
    numpy = subprocess.run([str(venv / "python"), "-c", "import numpy; print(numpy.__version__)"],
                           capture_output=True, text=True, timeout=60, check=False)
    assert numpy.stdout.strip() == pins_for(f"{sys.version_info[0]}.{sys.version_info[1]}")["numpy"]


# --- --shop-uuid, --portal-url, --account-secret-file -------------------------------------

SHOP = "3f2a1b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"


def test_provision_writes_the_shop_portal_and_account_secret(
    root: Path, scratch: Path, tmp_path: Path
) -> None:
    account = secret_file(tmp_path, 0o600, "acct-secret\n")
    args = ("--root", root, "--device-id", "counter-1", "--shop-uuid", SHOP.upper(),
            "--portal-url", "https://yourname.piggy.eu", "--account-secret-file", account)

    first = provision(scratch, *args)
    second = provision(scratch, *args)

    assert first.returncode == 0, first.stdout + first.stderr
    cfg = config.load(root / "etc/leat-scanner/config.toml", environ={})
    assert cfg.leat.shop_uuid == SHOP  # lower-cased
    assert cfg.leat.portal_url == "https://yourname.piggy.eu"
    secret = root / "etc/credstore/leat-scanner.leat-account-secret"
    assert secret.read_text(encoding="utf-8") == "acct-secret\n"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert "acct-secret" not in first.stdout + first.stderr
    assert second.returncode == 0, second.stderr
    assert "nothing to change" in second.stdout


def test_provision_updates_the_shop_in_an_existing_config_and_keeps_the_rest(
    root: Path, scratch: Path
) -> None:
    assert provision(scratch, "--root", root, "--shop-uuid", SHOP).returncode == 0
    installed = root / "etc/leat-scanner/config.toml"
    edited = installed.read_text(encoding="utf-8").replace("fps = 15.0", "fps = 10.0")
    installed.write_text(edited, encoding="utf-8")
    other = "0" * 8 + SHOP[8:]

    result = provision(scratch, "--root", root, "--shop-uuid", other)

    assert result.returncode == 0, result.stderr
    assert "set leat.shop_uuid / leat.portal_url" in result.stdout
    cfg = config.load(installed, environ={})
    assert (cfg.leat.shop_uuid, cfg.camera.fps) == (other, 10.0)
    assert installed.read_text(encoding="utf-8").count("shop_uuid") == 1
    assert stat.S_IMODE(installed.stat().st_mode) == 0o640


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--shop-uuid", "shop-1", "is not a UUID"),
        ("--shop-uuid", SHOP + "0", "is not a UUID"),
        ("--portal-url", "http://yourname.piggy.eu", "is not an https:// URL"),
        ("--portal-url", "https://yourname.piggy.eu/?x=1", "is not an https:// URL"),
        ("--portal-url", 'https://x.eu/"]\nevil = "1', "is not an https:// URL"),
    ],
)
def test_provision_bad_leat_values_fail_before_any_change(
    root: Path, scratch: Path, option: str, value: str, message: str
) -> None:
    result = provision(scratch, "--root", root, option, value)

    assert result.returncode == 1
    assert f"{option} '" in result.stderr and message in result.stderr
    assert files_under(root) == []


def test_provision_group_readable_account_secret_fails_before_any_change(
    root: Path, scratch: Path, tmp_path: Path
) -> None:
    account = secret_file(tmp_path, 0o640)
    result = provision(scratch, "--root", root, "--account-secret-file", account)

    assert result.returncode == 1
    assert "readable by others than its owner (mode 640)" in result.stderr
    assert f"chmod 600 {account}" in result.stderr
    assert files_under(root) == []


# --- --upgrade: beside the old version, READY=1 or roll back -----------------------------

FAKE_SYSTEMCTL = REPO / "tests" / "fake_systemctl.py"
PROGRAMS = {  # stand-ins for a version's venv/bin/leat-scanner, started by fake_systemctl
    "ready": "#!/usr/bin/env python3\nimport os, signal, socket, sys, time\n"
             "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
             "socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(\n"
             "    b'READY=1\\nSTATUS=serving', os.environ['NOTIFY_SOCKET'])\n"
             "time.sleep(120)\n",
    "silent": "#!/bin/sh\nexec sleep 120\n",  # never sends READY=1
    "too-new": "#!/bin/sh\necho 'outbox written by a newer leat-scanner' >&2\nexit 3\n",
}


class Device:
    """A --root tree with fake versions installed and leat-scanner run by fake_systemctl."""

    def __init__(self, root: Path, scratch: Path, tmp_path: Path) -> None:
        self.root = root
        self.scratch = scratch
        self.env = _env(scratch, SYSTEMCTL=str(FAKE_SYSTEMCTL), FAKE_SYSTEMD_ROOT=str(root),
                        FAKE_SYSTEMD_DIR=str(tmp_path / "systemd"), READY_TIMEOUT="3")
        self.versions = root / "opt/leat-scanner/versions"

    def add_version(self, name: str, program: str) -> None:
        script = self.versions / name / "venv/bin/leat-scanner"
        script.parent.mkdir(parents=True)
        script.write_text(PROGRAMS[program], encoding="utf-8")
        script.chmod(0o755)

    def current(self) -> str:
        return os.readlink(self.root / "opt/leat-scanner/current")

    def systemctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(FAKE_SYSTEMCTL), *args], capture_output=True, text=True,
                              env=self.env, timeout=60, check=False)

    def state(self) -> str:
        shown = self.systemctl("show", "-p", "ActiveState", "-p", "SubState", UNIT.name).stdout
        return "/".join(line.split("=", 1)[1] for line in shown.split())

    def upgrade(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return provision(self.scratch, "--root", self.root, "--upgrade", *args, env=self.env)


@pytest.fixture
def device(root: Path, scratch: Path, tmp_path: Path) -> Iterator[Device]:
    assert provision(scratch, "--root", root).returncode == 0
    device = Device(root, scratch, tmp_path)
    for name, program in (("1.0-a", "ready"), ("2.0-a", "ready"), ("2.0-b", "silent"),
                          ("2.0-c", "too-new")):
        device.add_version(name, program)
    (root / "opt/leat-scanner/current").unlink()
    (root / "opt/leat-scanner/current").symlink_to("versions/1.0-a")
    state = root / "var/lib/leat-scanner"
    with Outbox(state / "outbox.sqlite3", min_free_bytes=0) as box:  # a real outbox
        box.enqueue(Kind.ORDER, "A-1", {"points": 5})
    assert device.systemctl("restart", UNIT.name).returncode == 0
    assert device.state() == "active/running"
    try:
        yield device
    finally:
        device.systemctl("stop", UNIT.name)


def state_files(root: Path) -> dict[str, bytes]:
    state = root / "var/lib/leat-scanner"
    return {p.name: p.read_bytes() for p in sorted(state.iterdir()) if p.is_file()}


def test_upgrade_to_a_version_that_sends_ready_switches_to_it(device: Device) -> None:
    result = device.upgrade("--version", "2.0-a")
    again = device.upgrade("--version", "2.0-a")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "leat-scanner 2.0-a is running (READY=1); 1.0-a stays" in result.stdout
    assert device.current() == "versions/2.0-a"
    assert device.state() == "active/running"
    assert again.returncode == 0, again.stderr
    assert "already on 2.0-a" in again.stdout
    assert "nothing to change" in again.stdout


@pytest.mark.parametrize(("version", "why"), [
    ("2.0-b", "no READY=1 within 3 s"),
    ("2.0-c", "systemctl restart failed with status 1"),  # it exited (outbox too new)
], ids=["never-ready", "refuses-to-start"])
def test_upgrade_without_ready_rolls_back_and_keeps_the_outbox(
    device: Device, version: str, why: str
) -> None:
    outbox = state_files(device.root)

    result = device.upgrade("--version", version)

    assert result.returncode == 3, result.stdout + result.stderr
    assert f"upgrade to {version} failed" in result.stderr and why in result.stderr
    assert "rolled back to 1.0-a, which is running again" in result.stderr
    assert device.current() == "versions/1.0-a"
    assert device.state() == "active/running"  # the old version, restarted
    assert state_files(device.root) == outbox
    calls = (Path(device.env["FAKE_SYSTEMD_DIR"]) / "calls.log").read_text(encoding="utf-8")
    assert calls.count(f"restart {UNIT.name}") == 3  # the fixture's, the new, the old


def test_upgrade_to_a_version_not_installed_changes_nothing(device: Device) -> None:
    result = device.upgrade("--version", "9.9-z")

    assert result.returncode == 1
    assert "--version 9.9-z is not installed" in result.stderr
    assert device.current() == "versions/1.0-a"


def test_a_second_upgrade_at_the_same_time_is_refused(device: Device) -> None:
    fd = os.open(device.root / "opt/leat-scanner", os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a running upgrade holds it
        result = device.upgrade("--version", "2.0-a")
    finally:
        os.close(fd)

    assert result.returncode == 1
    assert "another upgrade of leat-scanner is running" in result.stderr
    assert device.current() == "versions/1.0-a"


def test_upgrade_dry_run_changes_nothing(device: Device) -> None:
    result = provision(device.scratch, "--root", device.root, "--upgrade", "--version",
                       "2.0-a", "--dry-run", env=device.env)

    assert result.returncode == 0, result.stderr
    assert "would: link /opt/leat-scanner/current -> versions/2.0-a" in result.stdout
    assert device.current() == "versions/1.0-a"


def test_upgrade_from_a_source_installs_it_beside_the_old_one(
    root: Path, scratch: Path, tmp_path: Path
) -> None:
    assert provision(scratch, "--root", root).returncode == 0
    old = os.readlink(root / "opt/leat-scanner/current")
    source = tmp_path / "new"
    source.mkdir()
    for item in ("pyproject.toml", "README.md", "appliance", "provisioning", "systemd"):
        if (REPO / item).is_dir():
            shutil.copytree(REPO / item, source / item,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / item, source / item)
    with (source / "appliance/__init__.py").open("a", encoding="utf-8") as changed:
        changed.write("# the next release\n")

    result = provision(scratch, "--root", root, "--upgrade", "--from", source)

    assert result.returncode == 0, result.stdout + result.stderr
    new = os.readlink(root / "opt/leat-scanner/current")
    assert new != old and (root / "opt/leat-scanner" / new / "src/.complete").is_file()
    assert (root / "opt/leat-scanner" / old / "src/.complete").is_file()  # kept to go back to
    assert "ROOT is set: not restarted" in result.stdout


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


ON_A_PI = """IMAGE=0
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


def installed(versions: dict[str, str]) -> str:
    """Shell lines: a `dpkg-query -W -f='${Version}'` that knows only `versions`."""
    cases = "".join(f'    {name}) echo "{version}" ;;\n' for name, version in versions.items())
    return ('dpkg-query() {\n  case "${@: -1}" in\n' + cases
            + '    *) return 1 ;;\n  esac\n}\n')


@pytest.mark.parametrize(("version", "outdated"), [
    ("0.3.12-1", True), ("0.3.19-1~bpo", True), ("0.3.20-1", False), ("0.3.34-1", False),
])
def test_packages_older_than_their_minimum_are_outdated(
    root: Path, scratch: Path, version: str, outdated: bool
) -> None:
    script = installed({"python3-picamera2": version, "mosquitto": "2.0.11-1.2"}) + (
        'minimum_version python3-picamera2; echo\nminimum_version mosquitto; echo "|"\n'
        'outdated_packages python3-picamera2 mosquitto python3-lgpio\n'
        'echo "outdated: ${OUTDATED[*]}"')
    result = bash(scratch, root, script)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["0.3.20", "|"]  # mosquitto: any version; lgpio not installed
    assert lines[2] == ("outdated: python3-picamera2" if outdated else "outdated: ")


def test_packages_an_old_picamera2_is_upgraded(root: Path, scratch: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 4 Model B Rev 1.5\0")
    versions = {name: "1.0" for name in (
        "python3-venv", "mosquitto", "mosquitto-clients", "openssl", "python3-lgpio")}
    script = installed(versions | {"python3-picamera2": "0.3.12-1"}) + (
        'dpkg-query() { case "$2" in -f=*Status*) echo "install ok installed" ;; '
        '*) installed_version "${@: -1}" ;; esac; }\n')
    script = script.replace("dpkg-query() {\n  case", "installed_version() {\n  case", 1)
    result = bash(scratch, root, f'ROOT=""\nDRY_RUN=1\nDEVICE_TREE_MODEL="{model}"\n'
                  + script + "install_packages 0")

    assert result.returncode == 0, result.stderr
    assert "would: apt-get upgrade python3-picamera2 0.3.12-1 (< 0.3.20)" in result.stdout
    assert ("dry run: apt-get install -y -qq --no-install-recommends --only-upgrade "
            "python3-picamera2") in result.stdout
    assert "would: apt-get install " not in result.stdout  # nothing was missing


# Raspberry Pi OS Bookworm ships Python 3.11, Trixie 3.13 (64-bit: aarch64).
PI_OS_PYTHONS = {"bookworm": "3.11", "trixie": "3.13"}


def pins_for(python: str) -> dict[str, str]:
    """constraints.txt as {name: version} for a Pi running `python` (markers evaluated)."""
    environment = {"python_version": python, "python_full_version": f"{python}.2",
                   "platform_machine": "aarch64", "sys_platform": "linux",
                   "platform_system": "Linux", "implementation_name": "cpython"}
    pins: dict[str, str] = {}
    for raw in (PROVISIONING / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", (
            f"constraints.txt: {line!r} is not an exact pin (name==version[; marker])")
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name not in pins, f"constraints.txt pins {name} twice for Python {python}"
        pins[name] = specifiers[0].version
    return pins


@pytest.mark.parametrize("python", PI_OS_PYTHONS.values(), ids=PI_OS_PYTHONS.keys())
def test_constraints_pin_every_runtime_dependency(python: str) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = pins_for(python)

    for dependency in project["dependencies"]:
        requirement = Requirement(dependency)
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in pins, f"pin {name} in provisioning/constraints.txt for Python {python}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, pyproject wants {requirement.specifier}"
        )
    # The venv's numpy shadows apt's: same major as the one apt's simplejpeg was built
    # against (Bookworm numpy 1.24, Trixie numpy 2); constraints.txt says why.
    assert int(pins["numpy"].split(".")[0]) == (1 if python == "3.11" else 2)


def pypi_reachable() -> bool:
    try:
        with socket.create_connection(("pypi.org", 443), timeout=3):
            return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("python", PI_OS_PYTHONS.values(), ids=PI_OS_PYTHONS.keys())
def test_constraints_resolve_to_aarch64_wheels_on_pypi(
    python: str, tmp_path: Path
) -> None:
    """What pip on the Pi will find: a binary wheel for every pin (no compiler needed)."""
    if os.environ.get("LEAT_SCANNER_OFFLINE") == "1" or not pypi_reachable():
        pytest.skip("PyPI is not reachable from here (or LEAT_SCANNER_OFFLINE=1)")
    pinned = tmp_path / "pins.txt"
    pinned.write_text("".join(f"{n}=={v}\n" for n, v in pins_for(python).items()), "utf-8")
    platforms = ("manylinux_2_36_aarch64", "manylinux_2_28_aarch64", "manylinux2014_aarch64",
                 "linux_aarch64")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "--no-deps",
         "--ignore-installed", "--only-binary=:all:", "--target", str(tmp_path / "t"),
         "--python-version", python, "--implementation", "cp",
         *(arg for p in platforms for arg in ("--platform", p)), "-r", str(pinned)],
        capture_output=True, text=True, timeout=600, check=False,
    )

    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"numpy-{pins_for(python)['numpy']}" in result.stdout


# --- systemd and mosquitto files --------------------------------------------------------


def test_unit_has_the_expected_keys() -> None:
    unit = parse_unit(UNIT)
    service = unit["Service"]

    assert service["ExecStart"] == [
        "/opt/leat-scanner/current/venv/bin/leat-scanner run --config /etc/leat-scanner/config.toml"
    ]
    assert service["RestartPreventExitStatus"] == ["2 3"]  # bad config; outbox too new
    assert "leat-scanner-firstboot.service" in unit["Unit"]["After"][0]
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
    assert service["Environment"] == ["LG_WD=/var/lib/leat-scanner", "MALLOC_ARENA_MAX=2"]
    assert service["SupplementaryGroups"] == ["video gpio"]
    assert "network-online.target" in unit["Unit"]["Wants"][0]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_unit_loads_every_secret_as_an_optional_credential() -> None:
    credentials = dict(
        value.split(":", 1) for value in parse_unit(UNIT)["Service"]["LoadCredential"]
    )

    # enrol-key: the fleet key enrolment codes are checked with (appliance/enrol.py)
    assert set(credentials) == {*SECRET_NAMES, "enrol-key"}
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


@pytest.mark.parametrize("unit", [UNIT, UNIT.with_name("leat-scanner-firstboot.service")],
                         ids=lambda p: p.name)
def test_unit_passes_systemd_analyze_verify(tmp_path: Path, unit: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify insists the ExecStart binary exists; the venv only exists on a device.
    copy = tmp_path / unit.name
    copy.write_text(
        re.sub(r"(?m)^ExecStart=\S+", f"ExecStart={shutil.which('true')}",
               unit.read_text(encoding="utf-8")),
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
