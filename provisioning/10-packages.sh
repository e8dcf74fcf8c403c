#!/usr/bin/env bash
# Step 10: install the Debian packages from packages.txt that are not installed yet.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# is_pi: this machine is a Raspberry Pi (the device tree says so).
is_pi() {
  local model
  model=$(tr -d '\0' 2>/dev/null <"${DEVICE_TREE_MODEL:-/proc/device-tree/model}") || return 1
  [[ "$model" == *"Raspberry Pi"* ]]
}

# wanted_packages NO_CAMERA: the package names packages.txt selects for this machine.
wanted_packages() {
  local no_camera=$1 pi=0 name when _
  is_pi && pi=1
  while read -r name when _; do
    [[ -z "$name" || "$name" == \#* ]] && continue
    case "$when" in
      all) ;;
      pi) [[ "$pi" == 1 ]] || continue ;;
      camera) [[ "$pi" == 1 && "$no_camera" != 1 ]] || continue ;;
      *) die "packages.txt: unknown 'when' column '$when' for $name (all, pi or camera)" ;;
    esac
    printf '%s\n' "$name"
  done <"$PROVISIONING_DIR/packages.txt"
}

is_installed() {
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

install_packages() {
  local no_camera=${1:-0} wanted missing=() name
  step "Debian packages"
  if ! on_host; then
    note "skipped: ROOT is set (packages are installed on the host only)"
    return 0
  fi
  if ! is_pi; then
    warn "not a Raspberry Pi: skipping camera and GPIO packages"
  elif [[ "$no_camera" == 1 ]]; then
    note "--no-camera: skipping python3-picamera2"
  fi
  mapfile -t wanted < <(wanted_packages "$no_camera")
  for name in "${wanted[@]}"; do
    is_installed "$name" || missing+=("$name")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    note "all installed: ${wanted[*]}"
    return 0
  fi
  changed "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  run apt-get update -qq || die "apt-get update failed: check the network and /etc/apt/sources.list"
  run apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    || die "apt-get install ${missing[*]} failed (see above); fix apt, then rerun provisioning"
}

main() {
  install_packages "${NO_CAMERA:-0}"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
