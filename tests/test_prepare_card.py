"""provisioning/prepare-card on directory trees laid out like a Raspberry Pi OS card (bootfs,
rootfs), run as the technician runs it (the script, a subprocess)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from appliance.cardprep.boot import FIRSTRUN_HOOK, wpa_psk
from appliance.cardprep.card import (
    STAMP,
    missing_wheels,
    pinned_requirements,
)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "provisioning" / "prepare-card"
CONSTRAINTS = (REPO / "provisioning" / "constraints.txt").read_text()
PSK = "correct horse battery"
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0ZXN0a2V5dGVzdGtleXRlc3RrZXl0ZXN0a2V5 tech@laptop"
SHOP = "3f2a1b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"
CMDLINE = "console=serial0,115200 console=tty1 root=PARTUUID=1234abcd-02 rootwait quiet\n"


def make_card(top: Path, *, python: str = "3.11", codename: str = "bookworm",
              cloud_init: bool = False) -> Path:
    """bootfs + rootfs as Raspberry Pi OS Lite lays them out (the parts prepare-card reads)."""
    boot, root = top / "bootfs", top / "rootfs"
    boot.mkdir(parents=True)
    (boot / "cmdline.txt").write_text(CMDLINE)
    (boot / "config.txt").write_text("[all]\ncamera_auto_detect=1\n")
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text(
        f'PRETTY_NAME="Debian GNU/Linux"\nVERSION_CODENAME={codename}\nID=debian\n')
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "lib" / f"python{python}").mkdir(parents=True)
    (root / "usr" / "lib" / f"python{python}" / "os.py").write_text("")
    (root / "usr" / "bin" / "python3").symlink_to(f"python{python}")
    if cloud_init:
        (root / "usr" / "bin" / "cloud-init").write_text("#!/bin/sh\n")
    return top


def fake_wheelhouse(directory: Path, python: str) -> Path:
    """Empty files named like the wheels pip would fetch (the real download: slow test)."""
    directory.mkdir(parents=True, exist_ok=True)
    for pin in pinned_requirements(CONSTRAINTS, python):
        name, version = pin.split("==")
        (directory / f"{name.replace('-', '_')}-{version}-py3-none-any.whl").write_bytes(b"")
    (directory / "setuptools-80.0.0-py3-none-any.whl").write_bytes(b"")
    return directory


def device_file(tmp_path: Path, **extra: str) -> Path:
    values = {"device_id": "counter-1", "ssh_key": SSH_KEY, "wifi_ssid": "Shop WiFi",
              "wifi_psk": PSK, "wifi_country": "nl", "shop_uuid": SHOP,
              "mqtt_host": "localhost", "timezone": "Europe/Amsterdam", **extra}
    path = tmp_path / "counter-1.toml"
    path.write_text("".join(f'{k} = "{v}"\n' for k, v in values.items()))
    path.chmod(0o600)
    return path


def prepare(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)],
                          capture_output=True, text=True, check=False, timeout=300)


def snapshot(top: Path) -> dict[str, tuple[int, bytes]]:
    out = {}
    for path in sorted(top.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[str(path.relative_to(top))] = (path.stat().st_mode, path.read_bytes())
    return out


@pytest.mark.parametrize("cloud_init", [False, True],
                         ids=["bookworm-firstrun", "trixie-cloud-init"])
def test_prepare_card_writes_first_boot_config_and_a_second_run_changes_nothing(
    tmp_path: Path, cloud_init: bool
) -> None:
    python = "3.13" if cloud_init else "3.11"
    card = make_card(tmp_path / "card", python=python,
                     codename="trixie" if cloud_init else "bookworm", cloud_init=cloud_init)
    wheels = fake_wheelhouse(tmp_path / "wheels", python)
    args = ("--device", device_file(tmp_path), "--card", card, "--wheelhouse-from", wheels)
    first = prepare(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"Python {python}" in first.stdout
    boot, root = card / "bootfs", card / "rootfs"
    cmdline = (boot / "cmdline.txt").read_text()
    assert cmdline.count("\n") == 1 and cmdline.startswith(CMDLINE.strip())
    if cloud_init:
        user = yaml.safe_load((boot / "user-data").read_text())
        assert (boot / "user-data").read_text().startswith("#cloud-config\n")
        assert user["hostname"] == "counter-1"
        assert user["users"][0]["ssh_authorized_keys"] == [SSH_KEY]
        assert user["users"][0]["lock_passwd"] is True
        net = yaml.safe_load((boot / "network-config").read_text())
        ap = net["network"]["wifis"]["wlan0"]
        assert ap["regulatory-domain"] == "NL"
        assert ap["access-points"]["Shop WiFi"]["password"] == wpa_psk("Shop WiFi", PSK)
        instance = yaml.safe_load((boot / "meta-data").read_text())["instance-id"]
        assert cmdline.rstrip().endswith(f" ds=nocloud;i={instance}")
        assert not (boot / "firstrun.sh").exists()
    else:
        script = (boot / "firstrun.sh").read_text()
        assert cmdline.rstrip().endswith(FIRSTRUN_HOOK)
        assert "set_hostname counter-1" in script and wpa_psk("Shop WiFi", PSK) in script
        assert script.rstrip().endswith("sed -i 's| systemd.run.*||g' /boot/cmdline.txt\nexit 0")
        assert subprocess.run(["sh", "-n", str(boot / "firstrun.sh")], check=False).returncode == 0
    # the root partition: provision --root with the device's settings, the wheelhouse, the
    # first boot's offline pip settings
    config = (root / "etc/leat-scanner/config.toml").read_text()
    assert 'id = "counter-1"' in config and f'shop_uuid = "{SHOP}"' in config
    assert (root / "etc/systemd/system/multi-user.target.wants/leat-scanner-firstboot.service"
            ).is_symlink()
    house = root / "opt/leat-scanner/wheelhouse"
    assert (house / STAMP).is_file()
    assert missing_wheels(house, pinned_requirements(CONSTRAINTS, python)) == []
    dropin = (root / "etc/systemd/system/leat-scanner-firstboot.service.d/"
              "10-prepare-card.conf").read_text()
    assert "PIP_NO_INDEX=1 PIP_FIND_LINKS=/opt/leat-scanner/wheelhouse" in dropin
    # idempotent: a second run changes nothing, byte for byte
    before = snapshot(card)
    second = prepare(*args)
    assert second.returncode == 0, second.stderr
    assert "nothing to change" in second.stdout
    assert snapshot(card) == before


def test_nothing_secret_is_written_on_the_boot_partition(tmp_path: Path) -> None:
    """FAT is world-readable and copied around: no passphrase, no key, no token there. The
    Wi-Fi PSK goes as wpa_passphrase's hash (rpi-imager does the same)."""
    fleet = tmp_path / "fleet.key"
    fleet.write_text("c2VjcmV0LWZsZWV0LWtleS1ieXRlcy0wMTIzNDU2Nzg5YWI=\n")
    fleet.chmod(0o600)
    for cloud_init in (False, True):
        card = make_card(tmp_path / f"card-{cloud_init}", cloud_init=cloud_init)
        result = prepare("--device", device_file(tmp_path), "--card", card, "--fleet-key",
                         fleet, "--wheelhouse-from", fake_wheelhouse(tmp_path / "w", "3.11"))
        assert result.returncode == 0, result.stderr
        boot_text = b"".join(data for _, data in snapshot(card / "bootfs").values())
        assert PSK.encode() not in boot_text
        assert fleet.read_bytes().strip() not in boot_text
        for word in (b"token", b"secret", b"private", b"plain_text_passwd"):
            assert word not in boot_text.lower()
        assert not re.search(rb"(^|\s)(passwd|chpasswd):", boot_text, re.M)
        password_lines = [line for line in boot_text.decode().splitlines()
                          if "password" in line.lower()
                          and "PasswordAuthentication no" not in line]
        assert all(wpa_psk("Shop WiFi", PSK) in line for line in password_lines)
        key = card / "rootfs/etc/credstore/leat-scanner.enrol-key"
        assert key.read_bytes() == fleet.read_bytes()
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700


def test_wpa_psk_is_what_wpa_passphrase_computes() -> None:
    # IEEE 802.11i-2004 annex H.4 test vector: "password", SSID "IEEE"
    assert wpa_psk("IEEE", "password") == (
        "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e")
    assert wpa_psk("x", "A" * 64) == "a" * 64  # already a PSK
    if shutil.which("wpa_passphrase"):
        out = subprocess.run(["wpa_passphrase", "Shop WiFi", PSK], capture_output=True,
                             text=True, check=True).stdout
        assert f"psk={wpa_psk('Shop WiFi', PSK)}" in out


@pytest.mark.parametrize(("change", "message"), [
    ({"wifi_psk": "short"}, "wifi_psk must be 8-63"),
    ({"device_id": "bad id"}, "device_id 'bad id' is not valid"),
    ({"leat_token": "abc"}, "secrets never go on the card"),
    ({"ssh_key": "not a key"}, "ssh_key"),
    ({"shop_uuid": "nope"}, "shop_uuid"),
    ({"colour": "red"}, "unknown key 'colour'"),
])
def test_a_bad_device_file_is_refused_before_any_change(
    tmp_path: Path, change: dict[str, str], message: str
) -> None:
    card = make_card(tmp_path / "card")
    before = snapshot(card)
    result = prepare("--device", device_file(tmp_path, **change), "--card", card)
    assert result.returncode == 2 and message in result.stderr
    assert PSK not in result.stderr
    assert snapshot(card) == before


def test_wrong_card_or_python_is_named(tmp_path: Path) -> None:
    card = make_card(tmp_path / "card", python="3.9")
    result = prepare("--device", device_file(tmp_path), "--card", card)
    assert result.returncode == 1 and "Python 3.9" in result.stderr
    shutil.rmtree(card / "bootfs")
    (card / "bootfs").mkdir()
    result = prepare("--device", device_file(tmp_path), "--card", card)
    assert result.returncode == 1 and "not a Raspberry Pi OS boot partition" in result.stderr
    result = prepare("--device", device_file(tmp_path), "--boot", card / "bootfs")
    assert result.returncode == 2 and "--rootfs" in result.stderr


def test_an_incomplete_wheelhouse_is_refused(tmp_path: Path) -> None:
    card = make_card(tmp_path / "card")
    wheels = fake_wheelhouse(tmp_path / "wheels", "3.11")
    next(wheels.glob("zxing_cpp-*")).unlink()
    result = prepare("--device", device_file(tmp_path), "--card", card,
                     "--wheelhouse-from", wheels)
    assert result.returncode == 1 and "lacks zxing-cpp==" in result.stderr
    assert (card / "bootfs/cmdline.txt").read_text() == CMDLINE  # boot partition last


def test_batch_csv_becomes_per_device_files_and_bad_rows_are_named(tmp_path: Path) -> None:
    good = tmp_path / "devices.csv"
    good.write_text("device_id,ssh_key,wifi_ssid,wifi_psk,wifi_country,shop_uuid\n"
                    f"counter-1,{SSH_KEY},Shop,{PSK},NL,{SHOP}\n"
                    f"counter-2,{SSH_KEY},,,,{SHOP}\n")
    out = tmp_path / "out"
    result = prepare("--batch", good, "--out", out)
    assert result.returncode == 0, result.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == ["counter-1.toml", "counter-2.toml"]
    assert stat.S_IMODE((out / "counter-1.toml").stat().st_mode) == 0o600
    card = make_card(tmp_path / "card")
    used = prepare("--device", out / "counter-2.toml", "--card", card,
                   "--wheelhouse-from", fake_wheelhouse(tmp_path / "w", "3.11"))
    assert used.returncode == 0, used.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("device_id,ssh_key\n"
                   f"counter-1,{SSH_KEY}\n"
                   f"counter-1,{SSH_KEY}\n")
    result = prepare("--batch", bad, "--out", tmp_path / "out2")
    assert result.returncode == 2 and "line 3: counter-1 already used on line 2" in result.stderr
    assert not (tmp_path / "out2").exists()
    bad.write_text(f"device_id,ssh_key\ncounter-1,{SSH_KEY}\nbad id!,{SSH_KEY}\n")
    result = prepare("--batch", bad, "--out", tmp_path / "out2")
    assert result.returncode == 2 and "bad.csv line 3: device_id" in result.stderr


def test_env_style_device_file(tmp_path: Path) -> None:
    env = tmp_path / "counter-9.env"
    env.write_text(f'# a device\nDEVICE_ID=counter-9\nSSH_KEY="{SSH_KEY}"\nHOSTNAME=till-9\n')
    card = make_card(tmp_path / "card")
    result = prepare("--device", env, "--card", card,
                     "--wheelhouse-from", fake_wheelhouse(tmp_path / "w", "3.11"))
    assert result.returncode == 0, result.stderr
    assert "set_hostname till-9" in (card / "bootfs/firstrun.sh").read_text()
    assert not (card / "bootfs/network-config").exists()


def test_firstboot_status_script_is_shellcheck_clean() -> None:
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck not installed; run scripts/bootstrap test")
    result = subprocess.run(["shellcheck", "-x", "-o", "all", "firstboot-status"],
                            cwd=REPO / "provisioning", capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout


def pypi_reachable() -> bool:
    try:
        with socket.create_connection(("pypi.org", 443), timeout=3):
            return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("python", ["3.11", "3.13"])
def test_real_wheelhouse_for_aarch64_has_every_pin(tmp_path: Path, python: str) -> None:
    """The real `pip download --only-binary=:all: --platform ... --python-version`."""
    if os.environ.get("LEAT_SCANNER_OFFLINE") == "1" or not pypi_reachable():
        pytest.skip("PyPI is not reachable from here (or LEAT_SCANNER_OFFLINE=1)")
    card = make_card(tmp_path / "card", python=python)
    result = prepare("--device", device_file(tmp_path), "--card", card)
    assert result.returncode == 0, result.stdout + result.stderr
    house = card / "rootfs/opt/leat-scanner/wheelhouse"
    pins = pinned_requirements(CONSTRAINTS, python)
    assert missing_wheels(house, pins) == []
    names = [p.name for p in house.glob("*.whl")]
    assert any(n.startswith("zxing_cpp-") and "aarch64" in n for n in names)
    assert any(n.startswith("setuptools-") for n in names)
    digest = hashlib.sha256(b"".join(sorted(n.encode() for n in names))).hexdigest()
    again = prepare("--device", device_file(tmp_path), "--card", card)
    assert "nothing to change" in again.stdout
    assert hashlib.sha256(b"".join(sorted(p.name.encode() for p in house.glob("*.whl")))
                          ).hexdigest() == digest


def test_firstboot_status_names_the_missing_debian_packages(tmp_path: Path) -> None:
    """Offline, the first boot stops at apt; its ExecStopPost= says what is missing."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    dpkg = stubs / "dpkg-query"
    dpkg.write_text('#!/bin/sh\n[ "$3" = mosquitto ] && printf "install ok installed"'
                    ' && exit 0\nexit 1\n')
    dpkg.chmod(0o755)
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "FIRSTBOOT_STATUS_DIR": str(tmp_path / "state"),
           "SERVICE_RESULT": "exit-code"}
    script = REPO / "provisioning" / "firstboot-status"
    result = subprocess.run([str(script)], env=env, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    status = (tmp_path / "state" / "status").read_text()
    assert status.startswith("failed ") and "(exit-code)" in status
    assert "missing Debian packages: python3-venv mosquitto-clients openssl\n" in status
    assert "reboot" in status and "missing Debian packages" in result.stdout
    env["SERVICE_RESULT"] = "success"
    subprocess.run([str(script)], env=env, check=True)
    assert (tmp_path / "state" / "status").read_text().startswith("done ")
