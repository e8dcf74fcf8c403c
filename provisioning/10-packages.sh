#!/usr/bin/env bash
# Step 10: install the Debian packages from packages.txt that are not installed yet, and
# upgrade those older than the minimum version packages.txt gives (a Raspberry Pi OS image
# may carry an old python3-picamera2).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# detect_pi: PI=1 when this machine is a Raspberry Pi (the device tree says so), else 0.
detect_pi() {
  local model=""
  PI=0
  model=$(tr -d '\0' 2>/dev/null <"${DEVICE_TREE_MODEL:-/proc/device-tree/model}") || true
  [[ "$model" != *"Raspberry Pi"* ]] || PI=1
}

# wanted_packages NO_CAMERA: the package names packages.txt selects for this machine.
wanted_packages() {
  local no_camera=$1 name when _
  detect_pi
  while read -r name when _; do
    [[ -z "$name" || "$name" == \#* ]] && continue
    case "$when" in
      all) ;;
      pi) [[ "$PI" == 1 ]] || continue ;;
      camera) [[ "$PI" == 1 && "$no_camera" != 1 ]] || continue ;;
      *) die "packages.txt: unknown 'when' column '$when' for $name (all, pi or camera)" ;;
    esac
    printf '%s\n' "$name"
  done <"$PROVISIONING_DIR/packages.txt"
}

# minimum_version NAME: the oldest version packages.txt accepts for NAME ('' for any).
minimum_version() {
  local name when minimum _
  while read -r name when minimum _; do
    [[ "$name" == "$1" ]] || continue
    [[ "$minimum" != \#* ]] || minimum=""
    printf '%s' "$minimum"
    return 0
  done <"$PROVISIONING_DIR/packages.txt"
}

# outdated_packages NAME...: sets OUTDATED to the installed names older than their minimum
# (as "name version", for messages in OUTDATED_SHOWN).
outdated_packages() {
  local name minimum version
  OUTDATED=()
  OUTDATED_SHOWN=()
  for name in "$@"; do
    minimum=$(minimum_version "$name")
    [[ -n "$minimum" ]] || continue
    version=$(dpkg-query -W -f='${Version}' "$name" 2>/dev/null) || version=""
    [[ -n "$version" ]] || continue  # not installed: missing_packages has it
    if ! dpkg --compare-versions "$version" ge "$minimum"; then
      OUTDATED+=("$name")
      OUTDATED_SHOWN+=("$name $version (< $minimum)")
    fi
  done
}

# missing_packages NAME...: sets MISSING to the names dpkg does not have installed.
missing_packages() {
  local name status
  MISSING=()
  for name in "$@"; do
    status=$(dpkg-query -W -f='${Status}' "$name" 2>/dev/null) || status=""
    [[ "$status" == "install ok installed" ]] || MISSING+=("$name")
  done
}

install_packages() {
  local no_camera=${1:-0} wanted listed
  step "Debian packages"
  if [[ -n "$ROOT" ]]; then
    note "skipped: ROOT is set (packages are installed at the first boot)"
    return 0
  fi
  detect_pi
  if [[ "$PI" != 1 ]]; then
    warn "not a Raspberry Pi: skipping camera and GPIO packages"
  elif [[ "$no_camera" == 1 ]]; then
    note "--no-camera: skipping python3-picamera2"
  fi
  listed=$(wanted_packages "$no_camera")
  mapfile -t wanted <<<"$listed"
  missing_packages "${wanted[@]}"
  outdated_packages "${wanted[@]}"
  if [[ ${#MISSING[@]} -eq 0 && ${#OUTDATED[@]} -eq 0 ]]; then
    note "all installed: ${wanted[*]}"
    return 0
  fi
  export DEBIAN_FRONTEND=noninteractive
  forbid_service_starts
  RUN_HINT="missing: ${MISSING[*]} ${OUTDATED[*]}; check the network and /etc/apt/sources.list, then rerun" \
    run apt-get update -qq
  if [[ ${#MISSING[@]} -gt 0 ]]; then
    changed "apt-get install ${MISSING[*]}"
    RUN_HINT="missing: ${MISSING[*]}; fix apt (see above), then rerun provisioning" \
      run apt-get install -y -qq --no-install-recommends "${MISSING[@]}"
  fi
  if [[ ${#OUTDATED[@]} -gt 0 ]]; then
    changed "apt-get upgrade ${OUTDATED_SHOWN[*]}"
    RUN_HINT="too old: ${OUTDATED_SHOWN[*]}; fix apt (see above), then rerun provisioning" \
      run apt-get install -y -qq --no-install-recommends --only-upgrade "${OUTDATED[@]}"
  fi
  [[ -z "$POLICY_RC_D" ]] || rm -f -- "$POLICY_RC_D"
  [[ "$DRY_RUN" != 1 ]] || return 0
  outdated_packages "${wanted[@]}"
  [[ ${#OUTDATED[@]} -eq 0 ]] || die "still too old after the upgrade: ${OUTDATED_SHOWN[*]}" \
    "(does /etc/apt/sources.list.d hold the Raspberry Pi archive, archive.raspberrypi.com?)"
}

# forbid_service_starts: at the first boot only, a policy-rc.d that answers 101 ("action
# forbidden", Debian's invoke-rc.d policy interface, honoured by deb-systemd-invoke) while
# apt runs, removed afterwards (and by `cleanup` on failure). Inside leat-scanner-firstboot.service,
# mosquitto's postinst `deb-systemd-invoke start mosquitto.service` waits for its start job,
# which is ordered after this very unit: a deadlock until the unit's timeout (found by
# tests/test_rootfs.py booting a card under systemd). start_services starts it afterwards.
POLICY_RC_D=""
forbid_service_starts() {
  local policy=/usr/sbin/policy-rc.d
  [[ "$FIRST_BOOT" == 1 && ! -e "$policy" ]] || return 0
  POLICY_RC_D=$policy
  TEMP_PATHS+=("$policy")
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 0755 "$policy"
}

main() {
  install_packages "${NO_CAMERA:-0}"
  report_changes
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
