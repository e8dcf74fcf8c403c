#!/usr/bin/env bash
# Step 50 (provision --upgrade only): install another version beside the running one, point
# /opt/leat-scanner/current at it, restart, and go back to the old version when the new one
# does not report READY=1 in time. The outbox (/var/lib/leat-scanner) is never touched:
# both versions use it, and a version that finds an outbox newer than it can read refuses to
# start without changing it (appliance/outbox_guard.py, exit status 3).
#
# Readiness: leat-scanner.service is Type=notify, so its start job completes, and
# `systemctl restart` returns, only once the daemon has sent READY=1 (systemd.service(5),
# Type=notify: "systemd will proceed with starting follow-up units after this notification
# message has been sent"); it fails when the daemon exits first or TimeoutStartSec= passes
# (systemd 233 NEWS: "Services of Type=notify require a READY=1 notification to be sent
# during startup. If no such message is sent, the service now fails"). READY_TIMEOUT bounds
# the wait here; then `systemctl show -p ActiveState -p SubState` must say active/running.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=30-install.sh
source "$(dirname "${BASH_SOURCE[0]}")/30-install.sh"

READY_TIMEOUT="${READY_TIMEOUT:-120}"

# restart_service: restart leat-scanner and wait for READY=1 (at most READY_TIMEOUT s).
# Sets SERVICE_UP (1 or 0) and SERVICE_STATE ("active/running", "failed/failed", ...).
restart_service() {
  local status=0 shown line active="" sub=""
  SERVICE_UP=0
  note "restart leat-scanner; waiting up to $READY_TIMEOUT s for READY=1"
  timeout "$READY_TIMEOUT" "$SYSTEMCTL" restart "$UNIT_NAME" || status=$?
  shown=$("$SYSTEMCTL" show -p ActiveState -p SubState "$UNIT_NAME" 2>/dev/null) || shown=""
  while IFS= read -r line; do
    case "$line" in
      ActiveState=*) active=${line#*=} ;;
      SubState=*) sub=${line#*=} ;;
      *) ;;
    esac
  done <<<"$shown"
  SERVICE_STATE="$active/$sub"
  if [[ "$status" -eq 124 ]]; then
    SERVICE_STATE+=", no READY=1 within $READY_TIMEOUT s"
  elif [[ "$status" -ne 0 ]]; then
    SERVICE_STATE+=", systemctl restart failed with status $status"
  elif [[ "$SERVICE_STATE" == active/running ]]; then
    SERVICE_UP=1
  fi
}

# lock_upgrades: one upgrade at a time (flock on /opt/leat-scanner, released at exit).
lock_upgrades() {
  [[ "$DRY_RUN" != 1 && -d "$ROOT$APP_HOME" ]] || return 0
  exec {UPGRADE_LOCK}<"$ROOT$APP_HOME"
  flock -n "$UPGRADE_LOCK" \
    || die "another upgrade of leat-scanner is running (flock on $APP_HOME); try again later"
}

# current_version: sets OLD_VERSION to the version `current` points at (dies when none).
current_version() {
  local target
  [[ -L "$ROOT$CURRENT" ]] \
    || die "$CURRENT is missing: this device is not provisioned; run provisioning/provision first"
  target=$(readlink -- "$ROOT$CURRENT")
  OLD_VERSION=${target#versions/}
}

# upgrade FROM_DIR VERSION: switch to VERSION (already installed) or to the version built
# from FROM_DIR; roll back when it does not come up. Exit 3: rolled back; 4: the old version
# did not come back either.
upgrade() {
  local from=$1 new=$2
  step "upgrade"
  lock_upgrades
  current_version
  if [[ -z "$new" ]]; then
    ensure_version "$from"
    new=$VERSION
  elif [[ ! -d "$ROOT$VERSIONS_DIR/$new" ]]; then
    die "--version $new is not installed: see ls $VERSIONS_DIR"
  fi
  if [[ -z "$ROOT" && "$DRY_RUN" != 1 && ! -x "$VERSIONS_DIR/$new/venv/bin/leat-scanner" ]]; then
    die "$VERSIONS_DIR/$new has no virtualenv (venv/bin/leat-scanner): install it with" \
      "provisioning/provision --upgrade --from <its source>"
  fi
  if [[ "$OLD_VERSION" == "$new" ]]; then
    note "already on $new"
    return 0
  fi
  step "switching from $OLD_VERSION to $new"
  switch_current "$new"
  if [[ "$DRY_RUN" == 1 ]]; then
    note "dry run: would restart leat-scanner and roll back to $OLD_VERSION without READY=1"
    return 0
  fi
  if [[ -n "$ROOT" && -z "$SYSTEMCTL_OVERRIDE" ]]; then
    note "ROOT is set: not restarted (the tree starts $new at its next boot)"
    return 0
  fi
  restart_service
  if [[ "$SERVICE_UP" == 1 ]]; then
    note "leat-scanner $new is running (READY=1); $OLD_VERSION stays in $VERSIONS_DIR"
    return 0
  fi
  warn "$new did not come up ($SERVICE_STATE): rolling back to $OLD_VERSION"
  local failed_state=$SERVICE_STATE
  switch_current "$OLD_VERSION"
  restart_service
  if [[ "$SERVICE_UP" == 1 ]]; then
    die_with 3 "upgrade to $new failed ($failed_state): rolled back to $OLD_VERSION, which" \
      "is running again; the outbox was not touched. Why: journalctl -u leat-scanner -n 50"
  fi
  die_with 4 "upgrade to $new failed ($failed_state) and $OLD_VERSION did not come back" \
    "either ($SERVICE_STATE): journalctl -u leat-scanner -n 50"
}

main() {
  trap cleanup EXIT
  upgrade "$REPO_DIR" "${1:-}"
  report_changes
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
