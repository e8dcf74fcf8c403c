#!/usr/bin/env bash
# Step 20: the system user the daemon runs as, in the groups owning camera and GPIO nodes.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_user() {
  local group groups
  step "service user $APP_USER"
  if [[ -n "$ROOT" ]]; then
    note "skipped: ROOT is set (the user is created at the first boot)"
    return 0
  fi
  # The unit's SupplementaryGroups= fails the start if a group is missing; off a Pi there is
  # no gpio group, so create an empty one rather than keep two unit files.
  for group in "${APP_GROUPS[@]}"; do
    if ! getent group "$group" >/dev/null; then
      changed "create system group $group (not found: is this a Raspberry Pi?)"
      run groupadd --system "$group"
    fi
  done
  if ! id -u "$APP_USER" >/dev/null 2>&1; then
    changed "create system user $APP_USER"
    run useradd --system --user-group --no-create-home --home-dir /var/lib/leat-scanner \
      --shell /usr/sbin/nologin --comment "Leat QR scanner" "$APP_USER"
  fi
  for group in "${APP_GROUPS[@]}"; do
    groups=" $(id -nG "$APP_USER" 2>/dev/null || true) "
    if [[ "$groups" != *" $group "* ]]; then
      changed "add $APP_USER to group $group"
      run usermod -a -G "$group" "$APP_USER"
    fi
  done
}

main() {
  ensure_user
  report_changes
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
