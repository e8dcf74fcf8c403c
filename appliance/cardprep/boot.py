"""What goes on the FAT boot partition: the OS's own first-boot settings, as Raspberry Pi
Imager writes them, and nothing secret (the FAT partition is world-readable and copied
around). The one exception is the one rpi-imager makes: the Wi-Fi PSK, written as the
PBKDF2 hash `wpa_passphrase` prints, never the passphrase.

Formats follow raspberrypi/rpi-imager at 72ad1179 (src/customization_generator.cpp,
src/downloadthread.cpp):
- cloud-init (Trixie images): `user-data` (#cloud-config), `network-config` (netplan v2,
  `password:` the hashed PSK), `meta-data` (`instance-id:`) and ` ds=nocloud;i=<id>` on
  cmdline.txt;
- systemd (Bookworm): `firstrun.sh`, run once by ` systemd.run=/boot/firstrun.sh
  systemd.run_success_action=reboot systemd.unit=kernel-command-line.target` appended to
  cmdline.txt; the script removes itself and that hook (`sed -i 's| systemd.run.*||g'`).
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from typing import Final

from appliance.cardprep.device import HEX_PSK, Device

FIRSTRUN_HOOK: Final = (" systemd.run=/boot/firstrun.sh systemd.run_success_action=reboot"
                        " systemd.unit=kernel-command-line.target")
GROUPS: Final = ("users,adm,dialout,audio,netdev,video,plugdev,cdrom,games,input,gpio,spi,"
                 "i2c,render,sudo")  # rpi-imager's list for the first user
MARK: Final = "# written by leat-scanner provisioning/prepare-card"
_OURS: Final = re.compile(r"( systemd\.run=.*$| ds=nocloud;i=\S+)")


def wpa_psk(ssid: str, passphrase: str) -> str:
    """The 256-bit PSK as `wpa_passphrase` computes it: PBKDF2-HMAC-SHA1(passphrase, ssid,
    4096 iterations, 32 bytes), hex (IEEE 802.11i; rpi-imager's pbkdf2()). 64 hex digits
    are already a PSK and pass through."""
    if HEX_PSK.match(passphrase):
        return passphrase.lower()
    return hashlib.pbkdf2_hmac("sha1", passphrase.encode(), ssid.encode(), 4096, 32).hex()


def _q(value: str) -> str:
    """A YAML double-quoted scalar (JSON's string escapes are valid YAML)."""
    return json.dumps(value)


def user_data(device: Device) -> str:
    lines = ["#cloud-config", MARK,
             f"hostname: {_q(device.host_name)}", "manage_etc_hosts: true"]
    if device.timezone:
        lines.append(f"timezone: {_q(device.timezone)}")
    lines += [
        "enable_ssh: true",
        "users:",
        f"- name: {_q(device.user)}",
        f"  groups: {GROUPS}",
        "  shell: /bin/bash",
        "  lock_passwd: true",  # key-only: no password exists anywhere
        "  ssh_authorized_keys:",
        f"    - {_q(device.ssh_key)}",
        "  sudo: ALL=(ALL) NOPASSWD:ALL",
        "ssh_pwauth: false",
    ]
    return "\n".join(lines) + "\n"


def network_config(device: Device) -> str:
    if not device.wifi_ssid:
        return ""
    return "\n".join([
        MARK,
        "network:",
        "  version: 2",
        "  wifis:",
        "    wlan0:",
        "      dhcp4: true",
        f"      regulatory-domain: {_q(device.wifi_country)}",
        "      access-points:",
        f"        {_q(device.wifi_ssid)}:",
        f"          password: {_q(wpa_psk(device.wifi_ssid, device.wifi_psk))}",
        "      optional: true",
    ]) + "\n"


def instance_id(device: Device, *parts: str) -> str:
    """Derived from the content (rpi-imager uses the time): a rerun writes the same files,
    a changed setting a new id, so cloud-init applies it again."""
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]
    return f"leat-{device.device_id}-{digest}"


def firstrun_sh(device: Device) -> str:
    """rpi-imager's firstrun.sh (generateSystemdScript) for these settings, in /bin/sh."""
    host, user = device.host_name, device.user
    key = shlex.quote(device.ssh_key)
    out = ["#!/bin/sh", MARK, "", "set +e", "",
           'CURRENT_HOSTNAME=$(cat /etc/hostname | tr -d " \\t\\n\\r")',
           "if [ -f /usr/lib/raspberrypi-sys-mods/imager_custom ]; then",
           f"   /usr/lib/raspberrypi-sys-mods/imager_custom set_hostname {host}",
           "else",
           f"   echo {host} >/etc/hostname",
           f'   sed -i "s/127.0.1.1.*$CURRENT_HOSTNAME/127.0.1.1\\t{host}/g" /etc/hosts',
           "fi",
           "FIRSTUSER=$(getent passwd 1000 | cut -d: -f1)",
           "FIRSTUSERHOME=$(getent passwd 1000 | cut -d: -f6)",
           "if [ -f /usr/lib/raspberrypi-sys-mods/imager_custom ]; then",
           f"   /usr/lib/raspberrypi-sys-mods/imager_custom enable_ssh -k {key}",
           "else",
           '   install -o "$FIRSTUSER" -m 700 -d "$FIRSTUSERHOME/.ssh"',
           f'   printf "%s\\n" {key} >"$FIRSTUSERHOME/.ssh/authorized_keys"',
           '   chown "$FIRSTUSER:$FIRSTUSER" "$FIRSTUSERHOME/.ssh/authorized_keys"',
           '   chmod 600 "$FIRSTUSERHOME/.ssh/authorized_keys"',
           "   echo 'PasswordAuthentication no' >>/etc/ssh/sshd_config",
           "   systemctl enable ssh",
           "fi",
           # no password: userconf with an empty one marks the user configured (key only)
           "if [ -f /usr/lib/userconf-pi/userconf ]; then",
           f"   /usr/lib/userconf-pi/userconf {shlex.quote(user)} ''",
           "else",
           f'   if [ "$FIRSTUSER" != "{user}" ]; then',
           f'      usermod -l "{user}" "$FIRSTUSER"',
           f'      usermod -m -d "/home/{user}" "{user}"',
           f'      groupmod -n "{user}" "$FIRSTUSER"',
           "   fi",
           "fi"]
    if device.wifi_ssid:
        psk = wpa_psk(device.wifi_ssid, device.wifi_psk)
        ssid, country = shlex.quote(device.wifi_ssid), shlex.quote(device.wifi_country)
        escaped = device.wifi_ssid.replace("\\", "\\\\").replace('"', '\\"')
        out += ["if [ -f /usr/lib/raspberrypi-sys-mods/imager_custom ]; then",
                f"   /usr/lib/raspberrypi-sys-mods/imager_custom set_wlan {ssid} {psk} "
                f"{country}",
                "else",
                "cat >/etc/wpa_supplicant/wpa_supplicant.conf <<'WPAEOF'",
                f"country={device.wifi_country}",
                "ctrl_interface=DIR=/var/run/wpa_supplicant GROUP=netdev",
                "ap_scan=1", "", "update_config=1", "network={",
                f'\tssid="{escaped}"', "\tkey_mgmt=WPA-PSK SAE", f"\tpsk={psk}",
                "\tieee80211w=1", "}", "WPAEOF",
                "   chmod 600 /etc/wpa_supplicant/wpa_supplicant.conf",
                "   rfkill unblock wifi",
                "   for filename in /var/lib/systemd/rfkill/*:wlan ; do",
                "       echo 0 > $filename",
                "   done",
                "fi"]
    if device.timezone:
        tz = shlex.quote(device.timezone)
        out += ["if [ -f /usr/lib/raspberrypi-sys-mods/imager_custom ]; then",
                f"   /usr/lib/raspberrypi-sys-mods/imager_custom set_timezone {tz}",
                "else",
                "   rm -f /etc/localtime",
                f"   echo {tz} >/etc/timezone",
                "   dpkg-reconfigure -f noninteractive tzdata",
                "fi"]
    out += ["rm -f /boot/firstrun.sh", "sed -i 's| systemd.run.*||g' /boot/cmdline.txt",
            "exit 0"]
    return "\n".join(out) + "\n"


def cmdline(current: str, append: str) -> str:
    """cmdline.txt (one line) without any hook an earlier run added, plus `append`."""
    line = current.strip().splitlines()[0] if current.strip() else ""
    line = _OURS.sub("", line).rstrip()
    return line + append + "\n"
