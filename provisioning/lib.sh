# shellcheck shell=bash disable=SC2034  # the constants are used by the scripts sourcing this
# Shared by the provisioning steps: paths, logging, `run` (dry-run aware), change tracking.
# Sourced, never executed. ROOT prefixes every installed path (tests and image builds stage
# into a directory); DRY_RUN=1 prints each change instead of making it.
#
# Failures: every command that changes something goes through `run`, which stops
# provisioning with a `!` line naming the command when it fails. No function that installs
# anything is ever called in an `if`, `&&`, `||` or `!` (bash turns `set -e` off inside such a
# call: shellcheck SC2310); functions report through globals (INSTALLED, SERVICE_UP, ...).

ROOT="${ROOT:-}"
DRY_RUN="${DRY_RUN:-0}"
CHANGES="${CHANGES:-0}"
FIRST_BOOT="${FIRST_BOOT:-0}"
# IMAGE=1: ROOT is a tree for an SD card image, shared by many devices, so nothing
# device-specific (id, MQTT password) goes into it. provision sets it from --root.
if [[ -z "${IMAGE:-}" ]]; then
  IMAGE=0
  [[ -z "$ROOT" ]] || IMAGE=1
fi

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROVISIONING_DIR="$REPO_DIR/provisioning"

APP_USER=leat-scanner
APP_GROUPS=(video gpio)            # owners of the camera and GPIO device nodes
APP_HOME=/opt/leat-scanner
# One directory per installed version (its source and its virtualenv; a virtualenv cannot
# be moved), and `current`, a relative symlink swapped atomically by `switch_current`.
VERSIONS_DIR=$APP_HOME/versions
CURRENT=$APP_HOME/current
VENV=$CURRENT/venv
CONFIG_DIR=/etc/leat-scanner
CONFIG_FILE=$CONFIG_DIR/config.toml
STATE_DIR=/var/lib/leat-scanner
# systemd's credential store: `LoadCredential=NAME:leat-scanner.NAME` skips missing files.
CREDSTORE=/etc/credstore
CRED_PREFIX=leat-scanner.
UNIT_DIR=/etc/systemd/system
UNIT_NAME=leat-scanner.service
FIRST_BOOT_UNIT=leat-scanner-firstboot.service
# What `systemctl enable` makes for WantedBy=multi-user.target (done by hand under ROOT).
WANTS_DIR=$UNIT_DIR/multi-user.target.wants
FIRST_BOOT_DONE=/var/lib/leat-scanner-firstboot/done
MOSQUITTO_CONF=/etc/mosquitto/conf.d/leat-scanner.conf
MOSQUITTO_PASSWD=/etc/mosquitto/leat-scanner.passwd
MOSQUITTO_ACL=/etc/mosquitto/leat-scanner.acl
MQTT_USER=leat-scanner

# The seam for tests: the command that plays systemctl (tests/fake_systemctl.py). Set, it
# is used even under ROOT (SYSTEMCTL_OVERRIDE=1); otherwise ROOT means "no systemctl".
if [[ -z "${SYSTEMCTL_OVERRIDE+set}" ]]; then
  SYSTEMCTL_OVERRIDE=${SYSTEMCTL:+1}
fi
SYSTEMCTL="${SYSTEMCTL:-systemctl}"

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

# die_with STATUS MESSAGE...: die with a specific exit status (3: upgrade rolled back).
die_with() {
  local status=$1
  shift
  log '!' "$@" >&2
  exit "$status"
}

# changed WHAT: record and announce one change (or, with DRY_RUN=1, one planned change).
changed() {
  CHANGES=$((CHANGES + 1))
  if [[ "$DRY_RUN" == 1 ]]; then
    note "would: $*"
  else
    note "$*"
  fi
}

# run CMD...: execute, or with DRY_RUN=1 only print the command. A failure stops
# provisioning with the command, its exit status and RUN_HINT (what to do), if set.
run() {
  local quoted status=0
  printf -v quoted '%q ' "$@"
  if [[ "$DRY_RUN" == 1 ]]; then
    note "dry run: ${quoted% }"
    return 0
  fi
  "$@" || status=$?
  if [[ "$status" -ne 0 ]]; then
    die "failed (exit $status): ${quoted% }${RUN_HINT:+: $RUN_HINT}"
  fi
}

need_root() {
  local uid
  uid=$(id -u)
  [[ "$uid" -eq 0 ]] || die "must run as root: sudo $0 $*"
}

# owner_for USER GROUP: sets OWNER to what `chown` should be given, or "" for "leave it".
# On the device: the names. Under ROOT (an image): root's files get 0:0 when we run as root
# (the ids are the same on every Debian); the service user does not exist in the image yet,
# so its files are left as they are and the first boot (provision --first-boot, run by
# leat-scanner-firstboot.service) gives them to it.
owner_for() {
  local user=$1 group=$2 euid
  OWNER=""
  [[ -n "$user" ]] || return 0
  if [[ -z "$ROOT" ]]; then
    OWNER="$user:$group"
    return 0
  fi
  euid=$(id -u)
  if [[ "$euid" -eq 0 && "$user" == root && "$group" == root ]]; then
    OWNER="0:0"
  fi
}

# fix_attributes REL MODE [USER GROUP]: chmod/chown an existing file or directory whose mode
# or owner differ (a tree staged by --root, a hand edit). Sets INSTALLED=1 when it did.
fix_attributes() {
  local rel=$1 mode=$2 file have format
  file=$ROOT$rel
  have=$(stat -c '%a' -- "$file")
  if [[ $((8#$have)) -ne $((8#$mode)) ]]; then
    changed "chmod $mode $rel (was $have)"
    run chmod "$mode" -- "$file"
    INSTALLED=1
  fi
  owner_for "${3:-}" "${4:-}"
  [[ -n "$OWNER" ]] || return 0
  format='%U:%G'
  [[ "$OWNER" =~ ^[0-9]+:[0-9]+$ ]] && format='%u:%g'
  have=$(stat -c "$format" -- "$file")
  if [[ "$have" != "$OWNER" ]]; then
    changed "chown $OWNER $rel (was $have)"
    run chown -- "$OWNER" "$file"
    INSTALLED=1
  fi
}

# install_file SRC DEST MODE [USER GROUP]: copy when DEST is missing or differs, then make
# its mode and owner right. Sets INSTALLED=1 when it changed anything, else 0.
install_file() {
  local src=$1 rel=$2 mode=$3 dest
  dest=$ROOT$rel
  INSTALLED=0
  if [[ -f "$dest" ]] && cmp -s -- "$src" "$dest"; then
    fix_attributes "$rel" "$mode" "${4:-}" "${5:-}"
    return 0
  fi
  changed "install $rel (mode $mode)"
  run install -D -m "$mode" -- "$src" "$dest"
  INSTALLED=1
  if [[ "$DRY_RUN" != 1 ]]; then
    fix_attributes "$rel" "$mode" "${4:-}" "${5:-}"
  fi
}

# ensure_dir DIR MODE [USER GROUP]: create DIR when missing; fix its mode and owner.
ensure_dir() {
  local rel=$1 mode=$2
  INSTALLED=0
  if [[ ! -d "$ROOT$rel" ]]; then
    changed "create directory $rel (mode $mode)"
    run install -d -m "$mode" -- "$ROOT$rel"
    INSTALLED=1
    [[ "$DRY_RUN" != 1 ]] || return 0
  fi
  fix_attributes "$rel" "$mode" "${3:-}" "${4:-}"
}

# ensure_link REL TARGET: REL is a symlink to TARGET (replaced atomically when it differs).
ensure_link() {
  local rel=$1 target=$2 link have=""
  link=$ROOT$rel
  INSTALLED=0
  [[ -L "$link" ]] && have=$(readlink -- "$link")
  [[ "$have" != "$target" ]] || return 0
  changed "link $rel -> $target"
  run install -d -- "$(dirname -- "$link")"
  run ln -sfn -- "$target" "$link.new"
  run mv -fT -- "$link.new" "$link"
  INSTALLED=1
}

# report_changes: the last line of a step script run on its own.
report_changes() {
  if [[ "$CHANGES" == 0 ]]; then
    step "nothing to change"
  else
    step "$CHANGES change(s)"
  fi
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
