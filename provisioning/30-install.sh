#!/usr/bin/env bash
# Step 30: this version of leat-scanner in /opt/leat-scanner/versions/<version> (its source
# and a virtualenv with the pinned dependencies), the `current` link, the config (only if
# there is none yet) and the credential store.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

EXAMPLE_CONFIG="$REPO_DIR/appliance/examples/config.toml"
# What a version directory's src/ holds: enough to build the virtualenv and to run
# provisioning from it (the first boot runs versions/<v>/src/provisioning/provision).
SOURCE_ITEMS=(pyproject.toml README.md appliance provisioning systemd)

# device_identity [--hostname]: prints "ID SOURCE", the default device id as the daemon
# works it out (appliance/identity.py: `scanner-<serial tail>` from the Pi's serial number,
# SOURCE "serial"; else the hostname, SOURCE "hostname"). It needs only the standard library,
# so the system python3 runs it before the virtualenv exists.
device_identity() {
  PYTHONPATH="$REPO_DIR" "${PYTHON:-python3}" -m appliance.identity "$@"
}

# read_identity [--hostname]: sets IDENTITY and IDENTITY_SOURCE (device_identity's answer).
read_identity() {
  local answer
  # shellcheck disable=SC2310  # one command in a subshell: set -e inside changes nothing
  answer=$(device_identity "$@") \
    || die "cannot work out a device id (python3 -m appliance.identity failed): pass --device-id"
  read -r IDENTITY IDENTITY_SOURCE <<<"$answer"
}

# render_config OUT DEVICE_ID MQTT_HOST: the example config with this device's values. The
# id is written in (an empty DEVICE_ID: the serial-number id) so that it never changes
# behind the device's back; under --root (an image for many devices) it is left out and the
# first boot writes each device's own. The MQTT user is always set: the local broker refuses
# anonymous clients. --shop-uuid and --portal-url are written by `set_leat_keys`.
render_config() {
  local out=$1 device_id=$2 mqtt_host=$3 anchor
  for anchor in '^# id = ' '^host = "localhost"' '^# username = "leat-scanner"' '^\[leat\]'; do
    grep -q "$anchor" "$EXAMPLE_CONFIG" \
      || die "$EXAMPLE_CONFIG has no line matching '$anchor'; update render_config in $0"
  done
  if [[ -z "$device_id" && "$IMAGE" != 1 ]]; then
    read_identity
    device_id=$IDENTITY
    [[ "$IDENTITY_SOURCE" == serial ]] \
      || warn "no Raspberry Pi serial number found: the device id is the hostname" \
        "'$device_id'; pass --device-id to choose one"
  fi
  local script=('s|^# username = "leat-scanner"|username = "leat-scanner"|')
  [[ -z "$device_id" ]] || script+=("s|^# id = \"[^\"]*\"|id = \"$device_id\"|")
  [[ -z "$mqtt_host" ]] || script+=("s|^host = \"localhost\"|host = \"$mqtt_host\"|")
  local expr args=()
  for expr in "${script[@]}"; do
    args+=(-e "$expr")
  done
  sed "${args[@]}" "$EXAMPLE_CONFIG" >"$out"
  with_leat_keys "$out" "$out"
}

# with_leat_keys IN OUT: IN with `shop_uuid` and `portal_url` of [leat] set from SHOP_UUID
# and PORTAL_URL (each only when given; a commented or older line is replaced in place).
with_leat_keys() {
  local in=$1 out=$2 text
  text=$(awk -v shop="${SHOP_UUID:-}" -v portal="${PORTAL_URL:-}" '
    function put(key, value) { print key " = \"" value "\""; done[key] = 1 }
    function rest() {
      if (shop != "" && !done["shop_uuid"]) put("shop_uuid", shop)
      if (portal != "" && !done["portal_url"]) put("portal_url", portal)
    }
    /^\[/ { if (inleat) rest(); inleat = ($0 == "[leat]") }
    inleat && shop != "" && /^#? *shop_uuid *=/ && !done["shop_uuid"] { put("shop_uuid", shop); next }
    inleat && portal != "" && /^#? *portal_url *=/ && !done["portal_url"] { put("portal_url", portal); next }
    { print; if (inleat && $0 == "[leat]") seen = 1 }
    END {
      if (inleat) rest()
      else if (!seen && (shop != "" || portal != "")) { print ""; print "[leat]"; rest() }
    }' "$in")
  printf '%s\n' "$text" >"$out"
}

# install_config RENDERED: install the config unless one exists (a technician's edits win;
# only --shop-uuid and --portal-url are written into an existing one). root:leat-scanner
# 0640: the service user reads it, nobody else (the group is set at the first boot when
# the tree was built with --root).
install_config() {
  local rendered=$1 file
  file=$ROOT$CONFIG_FILE
  step "config $CONFIG_FILE"
  if [[ ! -e "$file" ]]; then
    changed "install $CONFIG_FILE from appliance/examples/config.toml (mode 0640)"
    run install -D -m 0640 -- "$rendered" "$file"
    [[ "$DRY_RUN" == 1 ]] || fix_attributes "$CONFIG_FILE" 0640 root "$APP_USER"
    return 0
  fi
  note "exists, kept as it is (provisioning never overwrites it)"
  fix_attributes "$CONFIG_FILE" 0640 root "$APP_USER"
  update_leat_keys "$file"
  if [[ "$IMAGE" != 1 ]]; then
    pin_device_id "${DEVICE_ID:-}"
  fi
  config_mentions "id = \"${DEVICE_ID:-}\"" "--device-id ${DEVICE_ID:-}"
  config_mentions "host = \"${MQTT_HOST:-}\"" "--mqtt-host ${MQTT_HOST:-}"
}

# update_leat_keys FILE: write --shop-uuid / --portal-url into an existing config.
update_leat_keys() {
  local file=$1 updated
  [[ -n "${SHOP_UUID:-}${PORTAL_URL:-}" ]] || return 0
  make_temp updated
  with_leat_keys "$file" "$updated"
  if cmp -s -- "$file" "$updated"; then
    return 0
  fi
  changed "set leat.shop_uuid / leat.portal_url in $CONFIG_FILE"
  # `cat >` keeps the file's owner and mode.
  [[ "$DRY_RUN" == 1 ]] || cat -- "$updated" >"$file"
}

# pin_device_id [ID]: write device.id into a config that has none (only [device] has an
# `id` key). On the first boot of an image that is the serial-number id; otherwise such a
# config ran with the hostname as its id (the default before serial numbers), so that is the
# id written (or ID, when the technician asked for one): an upgrade keeps the device's MQTT
# topics and session. The rest of the file is left as it is.
pin_device_id() {
  local id=$1 file
  file=$ROOT$CONFIG_FILE
  if grep -Eq '^[[:space:]]*id[[:space:]]*=' "$file"; then
    return 0
  fi
  if [[ -z "$id" && "$FIRST_BOOT" == 1 ]]; then
    read_identity
    id=$IDENTITY
  elif [[ -z "$id" ]]; then
    read_identity --hostname
    id=$IDENTITY
  fi
  changed "pin device.id = \"$id\" in $CONFIG_FILE"
  [[ "$DRY_RUN" != 1 ]] || return 0
  if grep -q '^\[device\]' "$file"; then
    run sed -i "0,/^\[device\]/s//[device]\nid = \"$id\"/" "$file"
  else
    printf '\n[device]\nid = "%s"\n' "$id" >>"$file"
  fi
}

# config_mentions LINE OPTION: warn when the installed config lacks LINE (a value asked
# for on the command line that an existing config does not have).
config_mentions() {
  [[ "$1" != *'""' ]] || return 0
  grep -qF -- "$1" "$ROOT$CONFIG_FILE" \
    || warn "$2 not applied to the existing config: edit $CONFIG_FILE"
}

# source_digest DIR: changes whenever DIR's code, dependencies or their pins change.
source_digest() {
  local dir=$1 digest
  digest=$(
    set -o pipefail
    cd "$dir"
    {
      find appliance -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 \
        | sort -z | xargs -0 sha256sum
      sha256sum pyproject.toml provisioning/constraints.txt
    } | sha256sum
  ) || die "cannot read the source in $dir (appliance/, pyproject.toml, constraints.txt)"
  printf '%s\n' "${digest:0:12}"
}

# version_of DIR: sets VERSION to "<pyproject version>-<source digest>", the name of DIR's
# directory under /opt/leat-scanner/versions.
version_of() {
  local dir=$1 line digest
  line=$(grep -m1 -E '^version = "[^"]+"' "$dir/pyproject.toml") \
    || die "$dir/pyproject.toml has no version line"
  line=${line#version = \"}
  digest=$(source_digest "$dir")
  VERSION="${line%\"}-$digest"
}

# ensure_version SRC_DIR: /opt/leat-scanner/versions/<v>/src (a copy of SRC_DIR) and, on the
# device, versions/<v>/venv built from it. Under ROOT the virtualenv is left to the first
# boot (it cannot be moved once made). Sets VERSION.
ensure_version() {
  local from=$1 dir
  version_of "$from"
  dir=$VERSIONS_DIR/$VERSION
  step "version $VERSION in $dir"
  ensure_dir "$APP_HOME" 0755 root root
  ensure_dir "$VERSIONS_DIR" 0755 root root
  ensure_source "$from" "$dir"
  if [[ -n "$ROOT" ]]; then
    note "virtualenv: built at the first boot ($FIRST_BOOT_UNIT)"
    return 0
  fi
  ensure_venv "$dir"
}

# ensure_source FROM DIR: DIR/src is a copy of FROM (complete: made under a temporary name).
ensure_source() {
  local from=$1 dir=$2 staged item
  if [[ -f "$ROOT$dir/src/.complete" ]]; then
    note "source present"
    source_owner "$dir/src"
    return 0
  fi
  changed "copy the source into $dir/src"
  [[ "$DRY_RUN" != 1 ]] || return 0
  run install -d -m 0755 -- "$ROOT$dir"
  staged=$ROOT$dir/.src.new
  run rm -rf -- "$staged"
  run install -d -m 0755 -- "$staged"
  for item in "${SOURCE_ITEMS[@]}"; do
    [[ ! -e "$from/$item" ]] || run cp -R -- "$from/$item" "$staged/"
  done
  run find "$staged" -name __pycache__ -prune -exec rm -rf -- {} +
  run chmod -R u=rwX,go=rX -- "$staged"
  printf '%s\n' "$VERSION" >"$staged/.complete"
  run rm -rf -- "$ROOT$dir/src"
  run mv -T -- "$staged" "$ROOT$dir/src"
}

# source_owner SRC: on the device, a source tree staged by an unprivileged --root build
# becomes root's (nobody else may change the code root runs at the first boot).
source_owner() {
  local src=$1 owner
  [[ -z "$ROOT" ]] || return 0
  owner=$(stat -c '%u' -- "$src")
  [[ "$owner" != 0 ]] || return 0
  changed "chown -R root:root $src (staged by uid $owner)"
  run chown -R 0:0 -- "$src"
}

# ensure_venv DIR: DIR/venv sees apt's picamera2 and numpy (--system-site-packages);
# leat-scanner is installed from DIR/src with the pins in constraints.txt (per Python
# version: environment markers). Made under DIR/venv and stamped when complete.
ensure_venv() {
  local dir=$1 python=${PYTHON:-python3} venv stamp build
  venv=$dir/venv
  stamp=$venv/.leat-scanner-version
  if [[ -f "$stamp" ]]; then
    note "virtualenv $venv complete"
    return 0
  fi
  changed "build virtualenv $venv (with system site packages) and install leat-scanner"
  [[ "$DRY_RUN" != 1 ]] || return 0
  run rm -rf -- "$venv"
  run "$python" -m venv --system-site-packages "$venv"
  # Build from a copy: pip builds in the source tree and would leave files there.
  make_temp build -d
  run cp -R -- "$dir/src/pyproject.toml" "$dir/src/appliance" "$build/"
  [[ ! -f "$dir/src/README.md" ]] || run cp -- "$dir/src/README.md" "$build/"
  RUN_HINT="check the network (PyPI/piwheels), then rerun" \
    run "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --constraint "$dir/src/provisioning/constraints.txt" "$build"
  printf '%s\n' "$VERSION" >"$stamp"
}

# switch_current VERSION: point /opt/leat-scanner/current at versions/VERSION (atomically:
# a new link renamed over the old one). Sets INSTALLED=1 when it moved.
switch_current() {
  ensure_link "$CURRENT" "versions/$1"
}

# install_secret SRC NAME: copy a secret into the credential store, root-only.
install_secret() {
  local src=$1 name=$2
  install_file "$src" "$CREDSTORE/$CRED_PREFIX$name" 0600 root root
  if [[ "$INSTALLED" == 1 && "$DRY_RUN" == 1 ]]; then
    note "credential $name would be installed"
  elif [[ "$INSTALLED" == 1 ]]; then
    note "credential $name installed"
  else
    note "credential $name up to date"
  fi
}

ensure_credentials() {
  local secret
  step "credentials in $CREDSTORE"
  ensure_dir "$CREDSTORE" 0700 root root
  # Secrets staged into a --root tree by an unprivileged build: root's, 0600, on the device.
  for secret in "$ROOT$CREDSTORE/$CRED_PREFIX"*; do
    [[ ! -f "$secret" ]] || fix_attributes "${secret#"$ROOT"}" 0600 root root
  done
  if [[ -n "${LEAT_TOKEN_FILE:-}" ]]; then
    install_secret "$LEAT_TOKEN_FILE" leat-token
  fi
  if [[ -n "${ACCOUNT_SECRET_FILE:-}" ]]; then
    install_secret "$ACCOUNT_SECRET_FILE" leat-account-secret
  fi
}

main() {
  local rendered
  trap cleanup EXIT
  make_temp rendered
  render_config "$rendered" "${DEVICE_ID:-}" "${MQTT_HOST:-}"
  ensure_version "$REPO_DIR"
  switch_current "$VERSION"
  install_config "$rendered"
  ensure_credentials
  report_changes
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
