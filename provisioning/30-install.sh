#!/usr/bin/env bash
# Step 30: the virtualenv with leat-scanner and its pinned dependencies, the config (only if
# there is none yet) and the credential store.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

EXAMPLE_CONFIG="$REPO_DIR/appliance/examples/config.toml"
CONSTRAINTS="$PROVISIONING_DIR/constraints.txt"

# device_identity [--hostname]: prints "ID SOURCE", the default device id as the daemon
# works it out (appliance/identity.py: `scanner-<serial tail>` from the Pi's serial number,
# SOURCE "serial"; else the hostname, SOURCE "hostname"). It needs only the standard library,
# so the system python3 runs it before the virtualenv exists.
device_identity() {
  PYTHONPATH="$REPO_DIR" "${PYTHON:-python3}" -m appliance.identity "$@"
}

# render_config OUT DEVICE_ID MQTT_HOST: the example config with this device's values. The
# id is written in (an empty DEVICE_ID: the serial-number id) so that it never changes
# behind the device's back; under --root (an image for many devices) it is left to the
# daemon, which reads the serial number of each device. The MQTT user is always set: the
# local broker refuses anonymous clients.
render_config() {
  local out=$1 device_id=$2 mqtt_host=$3 anchor source
  for anchor in '^# id = ' '^host = "localhost"' '^# username = "leat-scanner"'; do
    grep -q "$anchor" "$EXAMPLE_CONFIG" \
      || die "$EXAMPLE_CONFIG has no line matching '$anchor'; update render_config in $0"
  done
  if [[ -z "$device_id" ]] && on_host; then
    read -r device_id source < <(device_identity) \
      || die "cannot work out a device id (python3 -m appliance.identity failed): pass --device-id"
    [[ "$source" == serial ]] \
      || warn "no Raspberry Pi serial number found: the device id is the hostname" \
        "'$device_id'; pass --device-id to choose one"
  fi
  local script=('s|^# username = "leat-scanner"|username = "leat-scanner"|')
  [[ -n "$device_id" ]] && script+=("s|^# id = \"[^\"]*\"|id = \"$device_id\"|")
  [[ -n "$mqtt_host" ]] && script+=("s|^host = \"localhost\"|host = \"$mqtt_host\"|")
  local expr args=()
  for expr in "${script[@]}"; do
    args+=(-e "$expr")
  done
  sed "${args[@]}" "$EXAMPLE_CONFIG" >"$out"
}

# install_config RENDERED: install the config unless one exists (a technician's edits win).
install_config() {
  local rendered=$1 owner=()
  step "config $CONFIG_FILE"
  if [[ -e "$(path "$CONFIG_FILE")" ]]; then
    note "exists, kept as it is (provisioning never overwrites it)"
    if ! config_has_device_id && on_host; then
      pin_device_id "${DEVICE_ID:-}"
    fi
    config_mentions "id = \"${DEVICE_ID:-}\"" \
      || warn "--device-id $DEVICE_ID not applied to the existing config: edit $CONFIG_FILE"
    config_mentions "host = \"${MQTT_HOST:-}\"" \
      || warn "--mqtt-host $MQTT_HOST not applied to the existing config: edit $CONFIG_FILE"
    return 0
  fi
  mapfile -t owner < <(owner_args root "$APP_USER")
  changed "install $CONFIG_FILE from appliance/examples/config.toml (mode 0640)"
  run install -D -m 0640 "${owner[@]}" "$rendered" "$(path "$CONFIG_FILE")"
}

# config_has_device_id: the installed config sets device.id (only [device] has an `id` key).
config_has_device_id() {
  grep -Eq '^[[:space:]]*id[[:space:]]*=' "$(path "$CONFIG_FILE")"
}

# pin_device_id [ID]: write device.id into a config that has none. Such a config ran with
# the hostname as its id (the default before serial numbers), so that is the id written
# (or ID, when the technician asked for one): an upgrade keeps the device's MQTT topics and
# session. The rest of the file is left as it is.
pin_device_id() {
  local id=$1 file
  file=$(path "$CONFIG_FILE")
  if [[ -z "$id" ]]; then
    read -r id _ < <(device_identity --hostname) \
      || die "cannot work out the hostname id (python3 -m appliance.identity failed)"
  fi
  changed "pin device.id = \"$id\" in $CONFIG_FILE (the id it ran with: its topics stay)"
  [[ "$DRY_RUN" == 1 ]] && return 0
  if grep -q '^\[device\]' "$file"; then
    sed -i "0,/^\[device\]/s//[device]\nid = \"$id\"/" "$file"
  else
    printf '\n[device]\nid = "%s"\n' "$id" >>"$file"
  fi
}

# config_mentions LINE: the installed config has LINE (true when no value was asked for).
config_mentions() {
  [[ "$1" == *'""' ]] || grep -qF -- "$1" "$(path "$CONFIG_FILE")"
}

# source_digest: changes whenever the code, its dependencies or their pins change.
source_digest() {
  (
    cd "$REPO_DIR"
    find appliance -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 \
      | sort -z | xargs -0 sha256sum
    sha256sum pyproject.toml "${CONSTRAINTS#"$REPO_DIR"/}"
  ) | sha256sum | cut -c1-16
}

# ensure_venv: /opt/leat-scanner/venv sees apt's picamera2 (--system-site-packages);
# leat-scanner is installed from a copy of this checkout with the pins in constraints.txt.
ensure_venv() {
  local python=${PYTHON:-python3} stamp want src
  step "virtualenv $VENV"
  if ! on_host; then
    note "skipped: ROOT is set (a virtualenv cannot be moved after it is made)"
    return 0
  fi
  if [[ ! -x "$VENV/bin/python" ]]; then
    changed "create virtualenv $VENV (with system site packages)"
    run "$python" -m venv --system-site-packages "$VENV"
  fi
  stamp="$VENV/.leat-scanner-source"
  want=$(source_digest)
  if [[ "$(cat "$stamp" 2>/dev/null)" == "$want" ]]; then
    note "leat-scanner up to date ($want)"
    return 0
  fi
  changed "install leat-scanner from $REPO_DIR with pinned dependencies"
  # Build from a copy: pip builds in the source tree and would leave root-owned files there.
  src=$REPO_DIR
  if [[ "$DRY_RUN" != 1 ]]; then
    make_temp src -d
    cp -r "$REPO_DIR/pyproject.toml" "$REPO_DIR/appliance" "$src/"
    if [[ -f "$REPO_DIR/README.md" ]]; then
      cp "$REPO_DIR/README.md" "$src/"
    fi
  fi
  run "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --upgrade --constraint "$CONSTRAINTS" "$src" \
    || die "pip install failed (see above): check the network (PyPI/piwheels), then rerun"
  if [[ "$DRY_RUN" != 1 ]]; then
    printf '%s\n' "$want" >"$stamp"
  fi
}

# install_secret SRC NAME: copy a secret into the credential store, root-only.
install_secret() {
  local src=$1 name=$2 dest owner=()
  dest=$(path "$CREDSTORE/$CRED_PREFIX$name")
  if [[ -f "$dest" ]] && cmp -s "$src" "$dest"; then
    note "credential $name up to date"
    return 0
  fi
  mapfile -t owner < <(owner_args root root)
  changed "install credential $name as $CREDSTORE/$CRED_PREFIX$name (mode 0600)"
  run install -D -m 0600 "${owner[@]}" "$src" "$dest"
}

ensure_credentials() {
  step "credentials in $CREDSTORE"
  if [[ -d "$(path "$CREDSTORE")" ]]; then
    note "$CREDSTORE exists"
  else
    ensure_dir "$CREDSTORE" 0700 root root
  fi
  if [[ -n "${LEAT_TOKEN_FILE:-}" ]]; then
    install_secret "$LEAT_TOKEN_FILE" leat-token
  fi
}

main() {
  local rendered
  trap cleanup EXIT
  make_temp rendered
  render_config "$rendered" "${DEVICE_ID:-}" "${MQTT_HOST:-}"
  ensure_venv
  install_config "$rendered"
  ensure_credentials
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
