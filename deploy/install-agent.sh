#!/usr/bin/env bash
# Install a bnnbench agent ON a Raspberry Pi (or any Debian-like Linux board) as a systemd
# service. Run it FROM THE HOST, in a checkout of bnnbench:
#
#   deploy/install-agent.sh [-i KEY] [-p PORT] [--python python3] [--name NAME]
#                           [--extras LIST] [--sdist FILE] USER@HOST COORDINATOR_URL
#
# The enrolment token (`bnnbench tokens create --uses 1`: it may only register agents; never
# give a board the admin token) is read from $BNNBENCH_AGENT_TOKEN or prompted for; it never
# appears on a command line (here or on the board), so `ps` does not show it. It travels
# inside the script fed to the board's bash through ssh's stdin.
#
# Steps: build the sdist here (python -m build --sdist), copy it and the unit over scp, then
# on the board: check Python >= 3.11, venv and a C compiler; create the user bnnbench;
# /opt/bnnbench/venv; pip install the sdist (compiles the native engine there); install
# /etc/systemd/system/bnnbench-agent.service and /etc/bnnbench/agent.env (0600, bnnbench);
# systemctl enable --now; show systemctl status and the agent's first log lines.
#
# Needs on the board: an ssh login by key (ssh-copy-id) whose host key is in your known_hosts,
# passwordless sudo for that user (Raspberry Pi OS's first user has it) or root, and access
# to PyPI (or piwheels) for the dependencies. Re-running it upgrades the installation and
# rewrites the coordinator and token in agent.env (other lines there are kept).

set -euo pipefail

UNIT_NAME=bnnbench-agent.service

usage() {
  sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
}

die() {
  printf 'install-agent: error: %s\n' "$*" >&2
  exit 1
}

# ----------------------------------------------------------------------- runs on the board

# Sent to the board with `declare -f` through ssh's stdin and called with its arguments
# there; nothing of it runs on the host.
remote_install() {
  set -euo pipefail
  local py=$1 coordinator=$2 token=$3 name=$4 extras=$5 tmp=$6 sdist=$7
  local venv=/opt/bnnbench/venv state=/var/lib/bnnbench env_file=/etc/bnnbench/agent.env
  local host
  host=$(hostname)
  # expanded now: $tmp is a local and gone when the EXIT trap runs
  # shellcheck disable=SC2064
  trap "rm -rf -- '$tmp'" EXIT
  say() { printf '[%s] %s\n' "$host" "$*"; }
  fail() { printf '[%s] error: %s\n' "$host" "$*" >&2; exit 1; }
  as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
  }

  if [ "$(id -u)" -ne 0 ] && ! sudo -n true 2>/dev/null; then
    fail "$(id -un) needs passwordless sudo for the install (Raspberry Pi OS's first user" \
      "has it), or connect as root@$host"
  fi
  command -v systemctl >/dev/null 2>&1 || fail "no systemctl: this board does not run systemd"

  # prerequisites: Python >= 3.11 with venv, a C compiler and make for the native engine
  if ! command -v "$py" >/dev/null 2>&1; then
    fail "no $py on this board: sudo apt-get install python3 python3-venv build-essential"
  fi
  if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    fail "$("$py" -V 2>&1) is too old: bnnbench needs Python >= 3.11 (Raspberry Pi OS 12" \
      "'bookworm' has 3.11); pass --python python3.11 if one is installed"
  fi
  if "$py" -c 'import sys; sys.exit(sys.version_info < (3, 13))'; then
    say "warning: $("$py" -V 2>&1): bnnbench pins numpy < 2, which has no wheels for" \
      "Python 3.13+; pip will try to build numpy from source (slow, may fail). Prefer" \
      "--python python3.11 or python3.12 if installed."
  fi
  local venv_pkg=python3-venv
  case "${py##*/}" in python3.[0-9]*) venv_pkg="${py##*/}-venv" ;; esac
  local missing=""
  "$py" -c 'import ensurepip, venv' 2>/dev/null || missing="$venv_pkg"
  if ! { command -v cc || command -v gcc; } >/dev/null 2>&1 \
      || ! command -v make >/dev/null 2>&1; then
    missing="$missing build-essential"
  fi
  if [ -n "$missing" ]; then
    fail "missing packages; install them and run this again:" \
      "sudo apt-get install ${missing# }"
  fi
  say "$("$py" -V 2>&1), $(cc --version 2>/dev/null | head -n 1 || gcc --version | head -n 1)"

  # the service user; its home is the state folder (cache dir, ~/.ssh, ~/.android)
  if ! id -u bnnbench >/dev/null 2>&1; then
    say "creating user bnnbench"
    as_root useradd --system --user-group --home-dir "$state" --shell /usr/sbin/nologin \
      bnnbench
  fi
  if getent group video >/dev/null 2>&1; then  # vcgencmd (firmware throttling bits)
    as_root usermod -a -G video bnnbench
  fi
  as_root install -d -o bnnbench -g bnnbench -m 0750 "$state" "$state/agent"

  # the virtual environment (recreated when it was made with another Python)
  local want have="" which='import sys; print(sys.base_prefix, sys.version_info[:2])'
  want=$("$py" -c "$which")
  if [ -x "$venv/bin/python" ]; then
    have=$("$venv/bin/python" -c "$which" || true)
  fi
  if [ "$have" != "$want" ]; then
    say "creating $venv"
    as_root rm -rf "$venv"
    as_root install -d -m 0755 /opt/bnnbench
    as_root "$py" -m venv "$venv"
  fi
  say "pip install $sdist${extras:+ [$extras]} (builds the native engine; minutes on a Pi)"
  as_root "$venv/bin/pip" uninstall -q -y bnnbench >/dev/null 2>&1 || true
  as_root "$venv/bin/pip" install --progress-bar off \
    "bnnbench${extras:+[$extras]} @ file://$tmp/$sdist"
  if ! as_root runuser -u bnnbench -- "$venv/bin/bnnbench" agent --help >/dev/null; then
    fail "the user bnnbench cannot run $venv/bin/bnnbench: its Python is" \
      "$(readlink -f "$venv/bin/python") (under a home folder?); pass a system Python:" \
      "--python /usr/bin/python3"
  fi
  if ! as_root "$venv/bin/python" -c \
      'import sys; from native import engine; print("native engine", engine.version(), engine.kernel_isa())'; then
    fail "the installed package cannot load its native engine (see the pip output above)"
  fi

  # the unit and its environment file (the token goes through printf, a builtin: no argv)
  as_root install -m 0644 "$tmp/$UNIT_NAME" "/etc/systemd/system/$UNIT_NAME"
  as_root install -d -m 0755 /etc/bnnbench
  # lines of an earlier agent.env that are replaced; any other line is kept
  local drop='^(BNNBENCH_AGENT_(COORDINATOR|TOKEN|TOKEN_FILE|CACHE_DIR)=|# written by install-agent)'
  if [ -n "$name" ]; then
    drop='^(BNNBENCH_AGENT_(COORDINATOR|TOKEN|TOKEN_FILE|CACHE_DIR|NAME)=|# written by install-agent)'
  fi
  local new
  new=$(as_root mktemp /etc/bnnbench/.agent.env.XXXXXX)
  {
    printf '# written by install-agent.sh on %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf 'BNNBENCH_AGENT_COORDINATOR=%s\n' "$coordinator"
    printf 'BNNBENCH_AGENT_TOKEN=%s\n' "$token"
    printf 'BNNBENCH_AGENT_CACHE_DIR=%s\n' "$state/agent"
    if [ -n "$name" ]; then printf 'BNNBENCH_AGENT_NAME=%s\n' "$name"; fi
    if as_root test -f "$env_file"; then as_root grep -Ev "$drop" "$env_file" || true; fi
  } | as_root tee "$new" >/dev/null
  as_root chown bnnbench:bnnbench "$new"
  as_root chmod 0600 "$new"
  as_root mv -f "$new" "$env_file"

  # can the board reach the coordinator? (a warning: the agent retries until it can)
  local check='import sys, httpx
try:
    httpx.get(sys.argv[1].rstrip("/") + "/health", timeout=5).raise_for_status()
except Exception as exc:
    print(f"warning: {sys.argv[1]} is not reachable from this board yet: {exc}")
    sys.exit(1)'
  if ! "$venv/bin/python" -c "$check" "$coordinator"; then
    say "the agent keeps retrying until the coordinator answers"
  fi

  say "systemctl enable --now bnnbench-agent"
  as_root systemctl daemon-reload
  as_root systemctl enable "$UNIT_NAME" >/dev/null 2>&1
  as_root systemctl restart "$UNIT_NAME"
  sleep 8
  as_root systemctl --no-pager --full status "$UNIT_NAME" || true
  echo
  as_root journalctl -u "$UNIT_NAME" -n 25 --no-pager || true
  if ! as_root systemctl is-active --quiet "$UNIT_NAME"; then
    fail "bnnbench-agent is not running (exit code 2 = enrolment token rejected, another" \
      "agent of this name is live, cache dir in use, or no runtime); see:" \
      "sudo journalctl -u bnnbench-agent"
  fi
  say "bnnbench-agent is running; logs: sudo journalctl -u bnnbench-agent -f"
}

# ----------------------------------------------------------------------- runs on the host

key="" port="" py=python3 name="" extras="" sdist=""
while [ $# -gt 0 ]; do
  case $1 in
    -i) [ $# -ge 2 ] || die "-i needs a key file"; key=$2; shift 2 ;;
    -p) [ $# -ge 2 ] || die "-p needs a port"; port=$2; shift 2 ;;
    --python) [ $# -ge 2 ] || die "--python needs a value"; py=$2; shift 2 ;;
    --python=*) py=${1#*=}; shift ;;
    --name) [ $# -ge 2 ] || die "--name needs a value"; name=$2; shift 2 ;;
    --name=*) name=${1#*=}; shift ;;
    --extras) [ $# -ge 2 ] || die "--extras needs a value"; extras=$2; shift 2 ;;
    --extras=*) extras=${1#*=}; shift ;;
    --sdist) [ $# -ge 2 ] || die "--sdist needs a file"; sdist=$2; shift 2 ;;
    --sdist=*) sdist=${1#*=}; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) usage >&2; die "unknown option $1" ;;
    *) break ;;
  esac
done
if [ $# -ne 2 ]; then
  usage >&2
  exit 2
fi
target=$1 coordinator=$2
case $target in
  *@*) ;;
  *) die "the board must be given as USER@HOST, got '$target'" ;;
esac
case $coordinator in
  http://*|https://*) ;;
  *) die "COORDINATOR_URL must start with http:// or https://, got '$coordinator'" ;;
esac
case $extras in
  *[!A-Za-z0-9_,-]*) die "--extras takes a comma-separated list of extras, e.g. fleet" ;;
esac
[ -z "$key" ] || [ -r "$key" ] || die "cannot read the key file $key"

token=${BNNBENCH_AGENT_TOKEN:-}
unset BNNBENCH_AGENT_TOKEN  # not handed on to ssh, scp or the build
if [ -z "$token" ]; then
  [ -t 0 ] || die "set BNNBENCH_AGENT_TOKEN or run this in a terminal to be asked for the token"
  read -r -s -p "Enrolment token (bnnbench tokens create --uses 1): " token
  echo
fi
[ -n "$token" ] || die "empty token"
case $token in
  *[[:space:]]*) die "the token must not contain white space" ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
unit="$here/systemd/$UNIT_NAME"
[ -f "$unit" ] || die "missing $unit"

ssh_opts=(-o BatchMode=yes -o ConnectTimeout=15)
scp_opts=(-o BatchMode=yes -o ConnectTimeout=15 -q)
if [ -n "$key" ]; then
  ssh_opts+=(-i "$key" -o IdentitiesOnly=yes)
  scp_opts+=(-i "$key" -o IdentitiesOnly=yes)
fi
if [ -n "$port" ]; then
  ssh_opts+=(-p "$port")
  scp_opts+=(-P "$port")
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 1. the sdist (the native engine is compiled on the board when pip installs it)
if [ -z "$sdist" ]; then
  host_py=python3
  [ -x "$repo/.venv/bin/python" ] && host_py="$repo/.venv/bin/python"
  if ! "$host_py" -m build --version >/dev/null 2>&1; then
    die "$host_py has no 'build' module: $host_py -m pip install build (or pass --sdist FILE)"
  fi
  echo "building the sdist of $repo"
  "$host_py" -m build --sdist --outdir "$work" "$repo" >"$work/build.log" 2>&1 \
    || { tail -n 30 "$work/build.log" >&2; die "python -m build --sdist failed"; }
  for f in "$work"/bnnbench-*.tar.gz; do sdist=$f; done
fi
[ -f "$sdist" ] || die "no sdist at '$sdist'"
sdist_name=$(basename "$sdist")

# 2. reach the board (BatchMode: a key login and a known host key, no prompts)
if ! ssh "${ssh_opts[@]}" "$target" true; then
  host=${target#*@}
  cat >&2 <<EOF
install-agent: cannot log in to $target without a prompt. On the host:
  ssh-copy-id ${key:+-i $key.pub }$target          # your public key into the board's authorized_keys
  ssh-keyscan -t ed25519 $host >> ~/.ssh/known_hosts   # then compare:
  ssh-keygen -lF $host     # with: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the board's console
EOF
  exit 1
fi
remote_tmp=$(ssh "${ssh_opts[@]}" "$target" 'mktemp -d /tmp/bnnbench-install.XXXXXX')
case $remote_tmp in
  /tmp/bnnbench-install.*) ;;
  *) die "unexpected answer from mktemp on the board: '$remote_tmp'" ;;
esac

# 3. copy, then run remote_install there with its arguments inside the script on stdin
echo "copying $sdist_name and $UNIT_NAME to $target:$remote_tmp"
scp "${scp_opts[@]}" "$sdist" "$unit" "$target:$remote_tmp/"
{
  printf 'UNIT_NAME=%q\n' "$UNIT_NAME"
  declare -f remote_install
  printf 'remote_install %q %q %q %q %q %q %q\n' \
    "$py" "$coordinator" "$token" "$name" "$extras" "$remote_tmp" "$sdist_name"
} | ssh "${ssh_opts[@]}" "$target" 'bash -s'
