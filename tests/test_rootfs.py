"""A real Debian 12 (bookworm) root file system: prepare-card writes the card into it, then
the first boot (`provision --first-boot`, what leat-scanner-firstboot.service runs) runs
inside it under chroot: apt from Debian's mirror, the service user, the virtualenv from the
card's wheelhouse (no index), owners and modes, units enabled; then `provision secrets`.

Part of scripts/test (slow: ~25 s with the cached tree, ~90 s when debootstrap runs; needs
root, debootstrap and Debian's mirror; LEAT_SCANNER_ROOTFS=0 turns it off). The minbase tree
is cached in ~/.cache/leat-scanner/rootfs. systemd itself does not run here (a chroot has no
PID 1, and this machine has no systemd-nspawn): systemctl is a stub that records its calls.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from appliance.enrol import make_code, new_fleet_key, read_fleet_key
from appliance.samples import background, place, render_code

REPO = Path(__file__).resolve().parents[1]
MIRROR = "http://deb.debian.org/debian"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "leat-scanner/rootfs"
BASE = CACHE / "bookworm-minbase"
SSH_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx0ZXN0a2V5dGVzdGtleXRlc3RrZXl0ZXN0a2V5 "
           "tech@laptop")
STUB_SYSTEMCTL = r"""#!/bin/sh
# systemctl stand-in for a chroot (no systemd): records each call; a unit enabled, started
# or restarted is afterwards "enabled" and "active".
echo "$*" >>/var/log/stub-systemctl.log
mkdir -p /var/lib/stub-systemctl
verb=$1
shift
for arg in "$@"; do
  case "$arg" in
    -*) ;;
    *) unit=$arg ;;
  esac
done
case "$verb" in
  enable | start | restart) touch "/var/lib/stub-systemctl/${unit:-none}" ;;
  is-enabled) [ -e "/var/lib/stub-systemctl/$unit" ] && echo enabled && exit 0; exit 1 ;;
  is-active) [ -e "/var/lib/stub-systemctl/$unit" ] && echo active && exit 0; exit 3 ;;
esac
exit 0
"""

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("LEAT_SCANNER_ROOTFS") == "0",
                       reason="LEAT_SCANNER_ROOTFS=0: the real root file system test is off"),
]


def run(*argv: object, check: bool = True, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                            check=False, **kwargs)  # type: ignore[call-overload]
    if check and result.returncode != 0:
        raise AssertionError(f"{argv} exit {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result  # type: ignore[no-any-return]


def base_tree() -> Path:
    """Debian 12 minbase + python3 (Raspberry Pi OS Lite has it), cached between runs."""
    if (BASE / "etc" / "debian_version").exists():
        return BASE
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed (scripts/bootstrap test installs it as root)")
    staging = BASE.with_suffix(".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    run("debootstrap", "--variant=minbase", "--include=python3,ca-certificates", "bookworm",
        staging, MIRROR, timeout=900)
    staging.rename(BASE)
    return BASE


@contextlib.contextmanager
def chroot_mounts(root: Path) -> Iterator[None]:
    """/proc, /dev, /sys and the host's resolv.conf, as a chroot needs for apt."""
    mounted = []
    try:
        for source, target, options in (("proc", "proc", ["-t", "proc"]),
                                        ("/dev", "dev", ["--bind"]),
                                        ("sysfs", "sys", ["-t", "sysfs"])):
            run("mount", *options, source, root / target)
            mounted.append(root / target)
        shutil.copy2("/etc/resolv.conf", root / "etc" / "resolv.conf")
        yield
    finally:
        for point in reversed(mounted):
            run("umount", "--lazy", point, check=False)


def in_root(root: Path, *argv: str, user: str | None = None, stdin: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    prefix = ["chroot", *([f"--userspec={user}:{user}"] if user else []), str(root)]
    environment = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                   "LANG": "C.UTF-8", "HOME": "/root", **(env or {})}
    return run(*prefix, *argv, check=False, input=stdin, env=environment, timeout=900)


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("chroot and mount need root")
    top = tmp_path_factory.mktemp("rootfs")
    root = top / "rootfs"
    run("cp", "-a", "--reflink=auto", base_tree(), root)
    with chroot_mounts(root):
        yield root
    shutil.rmtree(root)  # ~300 MB; the cached tree stays


def test_first_boot_in_a_real_debian_root(rootfs: Path, tmp_path: Path) -> None:
    timings: dict[str, float] = {}
    boot = tmp_path / "bootfs"
    boot.mkdir()
    (boot / "cmdline.txt").write_text("console=tty1 root=PARTUUID=0-02 rootwait\n")
    (boot / "config.txt").write_text("[all]\n")
    device = tmp_path / "counter-7.toml"
    device.write_text(f'device_id = "counter-7"\nssh_key = "{SSH_KEY}"\n')
    started = time.monotonic()
    # the card: this machine's CPU (the chroot runs here), else exactly what a Pi gets
    result = run(sys.executable, REPO / "provisioning" / "prepare-card", "--device", device,
                 "--boot", boot, "--rootfs", rootfs, "--wheel-arch", os.uname().machine,
                 timeout=600)
    assert "Python 3.11" in result.stdout
    timings["prepare-card"] = time.monotonic() - started

    # what the first boot needs from systemd: a running-systemd marker and systemctl
    (rootfs / "run/systemd/system").mkdir(parents=True, exist_ok=True)
    stub = rootfs / "usr/local/bin/systemctl"
    stub.write_text(STUB_SYSTEMCTL)
    stub.chmod(0o755)
    # no daemon starts inside a chroot (Debian's policy-rc.d convention)
    policy = rootfs / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)

    started = time.monotonic()
    offline_pip = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/opt/leat-scanner/wheelhouse"}
    first = in_root(rootfs, "/opt/leat-scanner/current/src/provisioning/provision",
                    "--first-boot", env=offline_pip)
    timings["first boot"] = time.monotonic() - started
    assert first.returncode == 0, first.stdout + first.stderr
    assert "apt-get install" in first.stdout  # python3-venv, mosquitto: from Debian's mirror

    # the service user and its groups
    user = in_root(rootfs, "id", "leat-scanner")
    assert user.returncode == 0 and "(video)" in user.stdout and "(gpio)" in user.stdout
    # the virtualenv, built from the card's wheels only, runs the program
    venv = "/opt/leat-scanner/current/venv/bin/python"
    imports = in_root(rootfs, venv, "-c", "import appliance.enrol, zxingcpp, numpy, "
                      "cryptography; print(appliance.__version__)")
    assert imports.returncode == 0, imports.stderr
    # units enabled (the links `systemctl enable` makes), first boot marked done
    wants = rootfs / "etc/systemd/system/multi-user.target.wants"
    assert (wants / "leat-scanner.service").is_symlink()
    assert (rootfs / "var/lib/leat-scanner-firstboot/done").is_file()
    calls = (rootfs / "var/log/stub-systemctl.log").read_text()
    assert "enable --now --no-block leat-scanner.service" in calls
    # owners and modes, by the names inside the root file system
    config = rootfs / "etc/leat-scanner/config.toml"
    names = in_root(rootfs, "stat", "-c", "%U:%G %a %n", "/etc/leat-scanner/config.toml",
                    "/etc/credstore", "/etc/credstore/leat-scanner.mqtt-password",
                    "/etc/mosquitto/leat-scanner.passwd", "/opt/leat-scanner/current/src")
    assert names.returncode == 0, names.stderr
    lines = names.stdout.splitlines()
    assert lines[0].startswith("root:leat-scanner 640 ")
    assert lines[1].startswith("root:root 700 ")
    assert lines[2].startswith("root:root 600 ")
    assert lines[3].startswith("mosquitto:mosquitto 600 ")
    assert lines[4].startswith("root:root 755 ")
    assert 'id = "counter-7"' in config.read_text()
    # the service user can read its config (the daemon's own check, as that user)
    check = in_root(rootfs, "/opt/leat-scanner/current/venv/bin/leat-scanner", "check",
                    "--config", "/etc/leat-scanner/config.toml", user="leat-scanner")
    assert "Permission denied" not in check.stdout + check.stderr, check.stderr
    assert "counter-7" in check.stdout

    # Leat secrets over SSH: `provision secrets` from standard input
    token = in_root(rootfs, "/opt/leat-scanner/current/venv/bin/leat-scanner", "provision",
                    "secrets", "--leat-token-file", "-", stdin="pat-rootfs-test\n")
    assert token.returncode == 0, token.stderr
    secret = rootfs / "etc/credstore/leat-scanner.leat-token"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert (secret.stat().st_uid, secret.stat().st_gid) == (0, 0)

    # a second first boot changes nothing
    again = in_root(rootfs, "/opt/leat-scanner/current/src/provisioning/provision",
                    "--first-boot", env=offline_pip)
    assert again.returncode == 0, again.stderr
    assert "nothing to change" in again.stdout
    print("rootfs timings (s):", {k: round(v, 1) for k, v in timings.items()})


PROBE = r"""#!/bin/sh
# Inside the booted container, after leat-scanner.service is up (READY=1): wait (bounded)
# for the enrolment to land, record what a technician would check, power off. The first
# boot (phase 1) only records the first-boot unit's state.
if [ ! -e /var/lib/leat-probe/phase2 ]; then
  systemctl is-active leat-scanner-firstboot >/var/lib/leat-probe/phase1
  systemctl poweroff
  exit 0
fi
out=/var/lib/leat-probe/result
i=0
while [ ! -s /etc/credstore/leat-scanner.leat-token ] && [ "$i" -lt 120 ]; do
  sleep 1
  i=$((i + 1))
done
i=0
while [ "$(systemctl is-active leat-scanner-enrol.service)" = activating ] && [ "$i" -lt 60 ]; do
  sleep 1
  i=$((i + 1))
done
# the enrolment restarts leat-scanner: wait (bounded) until it is back (READY=1)
i=0
while [ "$(systemctl is-active leat-scanner)" != active ] && [ "$i" -lt 60 ]; do
  sleep 1
  i=$((i + 1))
done
{
  echo "token $(stat -c '%U:%G %a' /etc/credstore/leat-scanner.leat-token 2>&1)"
  for unit in leat-scanner mosquitto leat-scanner-enrol.path; do
    echo "unit $unit $(systemctl is-active "$unit")"
  done
  echo "spool $(find /var/lib/leat-scanner/enrol -name '*.json' | wc -l)"
  password=$(cat /etc/credstore/leat-scanner.mqtt-password)
  i=0  # the retained value: "offline" (the last will) until the restarted daemon connects
  while [ "$i" -lt 30 ]; do
    seen=$(mosquitto_sub -h localhost -u leat-scanner -P "$password" \
      -t 'leat-scanner/+/availability' -C 1 -W 5 2>&1)
    [ "$seen" = online ] && break
    sleep 1
    i=$((i + 1))
  done
  echo "availability $seen"
  echo "--- journal"
  journalctl --no-pager -o cat -u leat-scanner-firstboot -u leat-scanner \
    -u leat-scanner-enrol -u mosquitto | tail -n 80
} >"$out" 2>&1
systemctl poweroff
"""
PROBE_UNIT = """[Unit]
Description=test probe: record the device's state, then power off
Wants=leat-scanner.service
After=leat-scanner.service mosquitto.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/leat-probe

[Install]
WantedBy=multi-user.target
"""


def systemd_tree() -> Path:
    """The cached minbase plus systemd, dbus (what Raspberry Pi OS boots with)."""
    tree = CACHE / "bookworm-minbase-systemd"
    if (tree / "lib" / "systemd" / "systemd").exists():
        return tree
    staging = tree.with_suffix(".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    run("cp", "-a", "--reflink=auto", base_tree(), staging)
    # debootstrap writes no /etc/hosts; Raspberry Pi OS has one (`localhost` resolves)
    (staging / "etc/hosts").write_text("127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost "
                                       "ip6-loopback\n")
    with chroot_mounts(staging):
        result = in_root(staging, "apt-get", "install", "-y", "-qq", "--no-install-recommends",
                         "systemd", "systemd-sysv", "dbus",
                         env={"DEBIAN_FRONTEND": "noninteractive"})
        assert result.returncode == 0, result.stdout + result.stderr
    staging.rename(tree)
    return tree


def boot_container(root: Path, options: list[str]) -> None:
    """Boot `root` under systemd in systemd-nspawn until the probe powers it off. No
    machined here (no system bus on this machine): --register=no --keep-unit."""
    run("timeout", "420", "systemd-nspawn", "--quiet", "--register=no", "--keep-unit",
        *options, "--boot", "-D", root, check=False, stdin=subprocess.DEVNULL, timeout=480)


def journal(root: Path) -> str:
    return run("journalctl", f"--directory={root}/var/log/journal", "--no-pager", "-o", "cat",
               "-u", "leat-scanner-firstboot", "-u", "leat-scanner", "-u", "mosquitto",
               check=False).stdout[-6000:]


def replay_config(text: str) -> str:
    """The camera replaced by a replayed folder (a container has no camera)."""
    return text.replace(
        'source = "picamera"',
        'source = "replay"\nreplay_path = "/var/lib/leat-probe/frames"').replace(
        "replay_loop = false", "replay_loop = true").replace("fps = 15.0", "fps = 2.0")


def test_prepared_card_boots_under_systemd_enrols_and_goes_online(tmp_path: Path) -> None:
    """The card booted by systemd in systemd-nspawn: the first boot unit, Mosquitto and
    leat-scanner start, an enrolment code shown to the (replayed) camera installs the Leat
    token as a root-only credential and restarts the service, which is `online`."""
    if os.geteuid() != 0:
        pytest.skip("systemd-nspawn needs root")
    if shutil.which("systemd-nspawn") is None:
        pytest.skip("systemd-nspawn is not installed (Debian package systemd-container)")

    root = tmp_path / "rootfs"
    run("cp", "-a", "--reflink=auto", systemd_tree(), root)
    boot = tmp_path / "bootfs"
    boot.mkdir()
    (boot / "cmdline.txt").write_text("console=tty1 root=PARTUUID=0-02 rootwait\n")
    (boot / "config.txt").write_text("[all]\n")
    device = tmp_path / "counter-8.toml"
    device.write_text(f'device_id = "counter-8"\nssh_key = "{SSH_KEY}"\n'
                      'shop_uuid = "3f2a1b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b"\n')
    fleet = tmp_path / "fleet.key"
    fleet.write_text(new_fleet_key() + "\n")
    fleet.chmod(0o600)
    run(sys.executable, REPO / "provisioning" / "prepare-card", "--device", device, "--boot",
        boot, "--rootfs", root, "--wheel-arch", os.uname().machine, "--fleet-key", fleet,
        timeout=600)
    # the camera: a replayed frame with the enrolment code (no camera in a container)
    frames = root / "var/lib/leat-probe/frames"
    frames.mkdir(parents=True)
    code = make_code(read_fleet_key(fleet.read_text()), "counter-8",
                     {"leat-token": "pat-nspawn-test"}, ttl_s=600)
    rng = np.random.default_rng(3)
    probe = root / "usr/local/sbin/leat-probe"
    probe.write_text(PROBE)
    probe.chmod(0o755)
    (root / "etc/systemd/system/leat-probe.service").write_text(PROBE_UNIT)
    (root / "etc/systemd/system/multi-user.target.wants/leat-probe.service").symlink_to(
        "/etc/systemd/system/leat-probe.service")
    # phase 1: the first boot with the host's network (apt from Debian's mirror); the
    # device's broker and leat-scanner wait for phase 2
    # (a drop-in condition) and the broker cannot bind yet
    # (drop-in conditions; the broker too, or it would listen on this machine's port 1883)
    for unit in ("leat-scanner.service", "mosquitto.service"):
        phase1 = root / f"etc/systemd/system/{unit}.d/phase.conf"
        phase1.parent.mkdir(parents=True)
        phase1.write_text("[Unit]\nConditionPathExists=/var/lib/leat-probe/phase2\n")
    started = time.monotonic()
    boot_container(root, [])
    assert (root / "var/lib/leat-probe/phase1").read_text().strip() == "active", \
        journal(root)
    first_boot_s = time.monotonic() - started
    # phase 2: the next boot, in its own network namespace (no internet needed any more)
    (root / "var/lib/leat-probe/phase2").write_text("")
    config = root / "etc/leat-scanner/config.toml"
    config.write_text(replay_config(config.read_text()))
    Image.fromarray(place(render_code(code, module_px=4), background((640, 480), rng), rng)
                    ).save(frames / "enrol.png")
    started = time.monotonic()
    boot_container(root, ["--private-network"])
    elapsed = time.monotonic() - started
    result_file = root / "var/lib/leat-probe/result"
    if not result_file.exists():
        pytest.fail(f"no probe result after {elapsed:.0f} s:\n{journal(root)}")
    print(f"first boot (apt, user, venv): {first_boot_s:.0f} s; second boot to online and "
          f"enrolled: {elapsed:.0f} s")
    result = result_file.read_text()
    print(result)
    assert (root / "var/lib/leat-scanner-firstboot/done").is_file()
    assert "unit leat-scanner active" in result, result
    assert "unit mosquitto active" in result, result
    assert "token root:root 600" in result, result
    assert "spool 0" in result, result
    assert "availability online" in result, result
    assert "pat-nspawn-test" not in result and code not in result  # never logged
    shutil.rmtree(root)  # ~400 MB, kept for a look when an assertion above fails
