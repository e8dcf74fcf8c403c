# shellcheck shell=bash disable=SC2034  # the constants are used by the scripts sourcing this
# Shared by the provisioning steps: paths, logging, `run` (dry-run aware), change tracking.
# Sourced, never executed. ROOT prefixes every installed path (tests stage into a temp dir);
# DRY_RUN=1 prints each change instead of making it.

ROOT="${ROOT:-}"
DRY_RUN="${DRY_RUN:-0}"
CHANGES="${CHANGES:-0}"

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROVISIONING_DIR="$REPO_DIR/provisioning"

APP_USER=leat-scanner
APP_GROUPS=(video gpio)            # owners of the camera and GPIO device nodes
VENV=/opt/leat-scanner/venv
CONFIG_DIR=/etc/leat-scanner
CONFIG_FILE=$CONFIG_DIR/config.toml
# systemd's credential store: `LoadCredential=NAME:leat-scanner.NAME` skips missing files.
CREDSTORE=/etc/credstore
CRED_PREFIX=leat-scanner.
UNIT_DIR=/etc/systemd/system
UNIT_NAME=leat-scanner.service
MOSQUITTO_CONF=/etc/mosquitto/conf.d/leat-scanner.conf
MOSQUITTO_PASSWD=/etc/mosquitto/leat-scanner.passwd
MOSQUITTO_ACL=/etc/mosquitto/leat-scanner.acl
MQTT_USER=leat-scanner

# log MARK MESSAGE...: "* " a step, "> " a detail or change, "? " a warning, "! " an error.
log() {
  local mark=$1
  shift
  printf '%(%H:%M:%S)T %s %s\n' -1 "$mark" "$*"
}

step() { log '*' "$@"; }
note() { log '>' "$@"; }
warn() { log '?' "$@" >&2; }

die() {
  log '!' "$@" >&2
  exit 1
}

# path /etc/x -> $ROOT/etc/x: every file this provisioning touches goes through it.
path() { printf '%s%s' "$ROOT" "$1"; }

# on_host: true when installing onto this machine itself (no ROOT): only then do steps
# that change the running system (apt, users, systemctl) make sense.
on_host() { [[ -z "$ROOT" ]]; }

# changed WHAT: record and announce one change (or, with DRY_RUN=1, one planned change).
changed() {
  CHANGES=$((CHANGES + 1))
  if [[ "$DRY_RUN" == 1 ]]; then
    note "would: $*"
  else
    note "$*"
  fi
}

# run CMD...: execute, or with DRY_RUN=1 only print the command.
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    local quoted
    printf -v quoted '%q ' "$@"
    note "dry run: ${quoted% }"
    return 0
  fi
  "$@"
}

need_root() {
  [[ "$(id -u)" -eq 0 ]] || die "must run as root: sudo $0 $*"
}

# owner_args USER GROUP: `install` ownership flags, only on the host (a ROOT tree is
# staged by whoever runs it; the target's user ids are not ours to set).
owner_args() {
  if on_host; then
    printf '%s\n' -o "$1" -g "$2"
  fi
}

# install_file SRC DEST MODE [USER GROUP]: copy when DEST is missing or differs.
# Returns 0 when it changed something, 1 when DEST was already up to date.
install_file() {
  local src=$1 dest
  dest=$(path "$2")
  if [[ -f "$dest" ]] && cmp -s "$src" "$dest"; then
    return 1
  fi
  local owner=()
  [[ $# -ge 5 ]] && mapfile -t owner < <(owner_args "$4" "$5")
  changed "install $2 (mode $3)"
  run install -D -m "$3" "${owner[@]}" "$src" "$dest"
  return 0
}

# ensure_dir DIR MODE [USER GROUP]: create DIR when missing; an existing one is left alone.
ensure_dir() {
  local dir
  dir=$(path "$1")
  [[ -d "$dir" ]] && return 0
  local owner=()
  [[ $# -ge 4 ]] && mapfile -t owner < <(owner_args "$3" "$4")
  changed "create directory $1 (mode $2)"
  run install -d -m "$2" "${owner[@]}" "$dir"
}

# Temporary files and directories, removed by `cleanup` (each entry point traps EXIT).
TEMP_PATHS=()

# make_temp VAR [-d]: create a temp file (or directory) and store its path in VAR.
make_temp() {
  local -n _out=$1
  _out=$(mktemp "${@:2}" "${TMPDIR:-/tmp}/leat-scanner.XXXXXX")
  TEMP_PATHS+=("$_out")
}

cleanup() {
  local item
  for item in "${TEMP_PATHS[@]}"; do
    rm -rf -- "$item"
  done
  TEMP_PATHS=()
}
