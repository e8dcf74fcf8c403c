#!/usr/bin/env bash
# Step 40: the systemd unit, the local broker's config and MQTT user, then start everything.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SYSTEMD_SRC="$REPO_DIR/systemd"
BROKER_SPEC=/etc/leat-scanner/broker.toml

# install_units: the service and its first-boot helper. Under ROOT both are enabled by the
# symlinks `systemctl enable` would make (an image has no running systemd); on the device
# `start_services` enables the service, and the helper is not needed (this run is the
# first boot's work: `mark_first_boot_done`).
install_units() {
  local unit
  step "systemd units in $UNIT_DIR"
  for unit in "$UNIT_NAME" "$FIRST_BOOT_UNIT" leat-scanner-enrol.path leat-scanner-enrol.service; do
    install_file "$SYSTEMD_SRC/$unit" "$UNIT_DIR/$unit" 0644 root root
    [[ "$INSTALLED" == 0 ]] || UNIT_CHANGED=1
  done
  if [[ -n "$ROOT" ]]; then
    for unit in "$UNIT_NAME" "$FIRST_BOOT_UNIT"; do
      ensure_link "$WANTS_DIR/$unit" "$UNIT_DIR/$unit"
    done
  fi
  [[ "${UNIT_CHANGED:-0}" == 1 ]] || note "up to date"
}

# install_broker_config: the broker's conf.d file, per-user ACL and TLS certificate, generated
# from config.toml and $BROKER_SPEC (made from a commented template when missing) by
# appliance/brokerconf.py with the system Python; it prints one line per change, none when
# everything is up to date (certificates are kept while they are valid).
install_broker_config() {
  local changes=${CHANGES} output line args=(--root "${ROOT:-/}")
  step "Mosquitto config ${MOSQUITTO_CONF}"
  if [[ "${DRY_RUN}" == 1 ]]; then
    args+=(--dry-run)
  fi
  command -v openssl >/dev/null || die "openssl not found: sudo apt-get install openssl"
  output=$(PYTHONPATH="${REPO_DIR}" "${PYTHON:-python3}" -m appliance.brokerconf "${args[@]}") \
    || die "cannot generate the broker files (the reason is above): fix ${BROKER_SPEC}, rerun"
  while IFS= read -r line; do
    [[ -z "${line}" ]] || changed "${line}"
  done <<<"${output}"
  if [[ "${CHANGES}" == "${changes}" ]]; then
    note "up to date"
  else
    BROKER_CHANGED=1
  fi
}

# new_password: 24 random URL-safe characters.
new_password() {
  head -c 18 /dev/urandom | base64 | tr '+/' '-_'
}

# ensure_mqtt_user: the daemon's broker password lives in the credential store (made once);
# the broker's password file gets the matching user.
ensure_mqtt_user() {
  local secret passwd password="" create=()
  secret=$ROOT$CREDSTORE/${CRED_PREFIX}mqtt-password
  passwd=$ROOT$MOSQUITTO_PASSWD
  step "MQTT user $MQTT_USER"
  if [[ -n "$ROOT" ]]; then  # every card made from an image would share one password
    note "skipped: ROOT is set (each device generates its own at the first boot)"
    return 0
  fi
  if [[ "$DRY_RUN" != 1 && ! -d "$ROOT$CREDSTORE" ]]; then
    die "$CREDSTORE is missing: run provisioning/30-install.sh (or provisioning/provision) first"
  fi
  if [[ ! -s "$secret" ]]; then
    changed "generate the MQTT password into $CREDSTORE/${CRED_PREFIX}mqtt-password"
    if [[ "$DRY_RUN" != 1 ]]; then
      password=$(new_password)
      (umask 077 && printf '%s\n' "$password" >"$secret")
    fi
  elif [[ -f "$passwd" ]] && grep -q "^$MQTT_USER:" "$passwd"; then
    note "exists in $MOSQUITTO_PASSWD"
    return 0
  else
    password=$(head -n 1 "$secret")
  fi
  [[ -f "$passwd" ]] || create=(-c)
  changed "set the password of $MQTT_USER in $MOSQUITTO_PASSWD"
  BROKER_CHANGED=1
  if [[ "$DRY_RUN" == 1 ]]; then
    note "dry run: mosquitto_passwd ${create[*]} -b $passwd $MQTT_USER <password>"
    return 0
  fi
  command -v mosquitto_passwd >/dev/null \
    || die "mosquitto_passwd not found: install the mosquitto package (step 10), then rerun"
  # -b puts the password on the command line for a moment: acceptable on a single-user
  # appliance during provisioning, and it keeps this step non-interactive.
  mosquitto_passwd "${create[@]}" -b "$passwd" "$MQTT_USER" "$password" \
    || die "mosquitto_passwd failed on $passwd"
  chmod 0600 "$passwd"
  # Mosquitto 2 reads it as its own user and warns when it is readable by anyone else.
  if [[ -z "$ROOT" ]] && id -u mosquitto >/dev/null 2>&1; then
    chown mosquitto:mosquitto "$passwd"
  fi
}

# service_state WHAT UNIT: sets STATE to systemctl's answer ("enabled", "active", ...).
service_state() {
  STATE=$("$SYSTEMCTL" "is-$1" "$2" 2>/dev/null) || true
}

start_services() {
  local any_change=$1 enabled nowait=()
  step "services"
  # The first boot runs before both services (ordering): waiting for their start jobs there
  # would wait for itself.
  [[ "$FIRST_BOOT" != 1 ]] || nowait=(--no-block)
  if [[ -n "$ROOT" ]]; then
    note "skipped: ROOT is set (enabled by the links above; started at boot)"
    return 0
  fi
  if [[ "${UNIT_CHANGED:-0}" == 1 ]]; then
    changed "systemctl daemon-reload"
    run "$SYSTEMCTL" daemon-reload
  fi
  if [[ "${BROKER_CHANGED:-0}" == 1 ]]; then
    changed "restart mosquitto (new listeners or users)"
    RUN_HINT="mosquitto did not start: journalctl -u mosquitto -n 50 says why" \
      run "$SYSTEMCTL" restart "${nowait[@]}" mosquitto
  fi
  service_state enabled "$UNIT_NAME"
  enabled=$STATE
  service_state active "$UNIT_NAME"
  if [[ "$enabled" != enabled || "$STATE" != active ]]; then
    changed "systemctl enable --now leat-scanner"
    RUN_HINT="leat-scanner did not start: journalctl -u leat-scanner -n 50 says why" \
      run "$SYSTEMCTL" enable --now "${nowait[@]}" "$UNIT_NAME"
  elif [[ "$any_change" == 1 ]]; then
    changed "restart leat-scanner (its files changed)"
    RUN_HINT="journalctl -u leat-scanner -n 50 says why" run "$SYSTEMCTL" restart "${nowait[@]}" "$UNIT_NAME"
  else
    note "leat-scanner enabled and running"
  fi
}

enable_all() {
  local before=$CHANGES changes
  install_units
  install_broker_config
  ensure_mqtt_user
  changes=0
  [[ "$CHANGES" == "$before" ]] || changes=1
  start_services "$changes"
}

main() {
  trap cleanup EXIT
  enable_all
  report_changes
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
