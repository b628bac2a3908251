#!/usr/bin/env bash
# Prepare this host to drive Android phones over adb, and list the phones it sees.
#
#   deploy/android/setup-adb-host.sh [--no-rules] [--devices FILE]
#
# 1. Linux: installs 51-android.rules (next to this script) as
#    /etc/udev/rules.d/51-android.rules with sudo and reloads udev (--no-rules skips this;
#    macOS needs no rules).
# 2. Checks that `adb` is installed (Debian/Ubuntu: sudo apt-get install adb; macOS:
#    brew install android-platform-tools).
# 3. Runs `adb devices -l`. For each phone in state "device" it prints the serial, model,
#    SoC (ro.soc.model, Android 12+; else ro.board.platform), ABI and Android version, and
#    the exact `bnnbench devices add adb://SERIAL --devices FILE` line (FILE: devices.toml
#    unless --devices is given). It says what to do for "unauthorized", "offline" and
#    "no permissions".
#
# Exit status: 0 when at least one phone is ready, 1 otherwise.

set -euo pipefail

usage() {
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
}

die() {
  printf 'setup-adb-host: error: %s\n' "$*" >&2
  exit 1
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_rules=1
devices_file=devices.toml
while [ $# -gt 0 ]; do
  case $1 in
    --no-rules) install_rules=0; shift ;;
    --devices) [ $# -ge 2 ] || die "--devices needs a file"; devices_file=$2; shift 2 ;;
    --devices=*) devices_file=${1#*=}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done

here=$(cd "$(dirname "$0")" && pwd)
rules_src="$here/51-android.rules"
rules_dst=/etc/udev/rules.d/51-android.rules

# ------------------------------------------------------------------ 1. udev rules (Linux)
if [ "$install_rules" = 1 ] && [ "$(uname -s)" = Linux ] && [ ! -d /etc/udev ]; then
  echo "udev rules: skipped, no /etc/udev on this machine (udev does not run here: a" \
    "container?); USB phones need a host with udev"
elif [ "$install_rules" = 1 ] && [ "$(uname -s)" = Linux ]; then
  [ -f "$rules_src" ] || die "missing $rules_src"
  if cmp -s "$rules_src" "$rules_dst"; then
    echo "udev rules: $rules_dst is up to date"
  else
    echo "udev rules: installing $rules_dst (sudo)"
    getent group plugdev >/dev/null 2>&1 || as_root groupadd --system plugdev
    as_root install -D -m 0644 "$rules_src" "$rules_dst"
  fi
  if command -v udevadm >/dev/null 2>&1; then
    as_root udevadm control --reload-rules
    as_root udevadm trigger --subsystem-match=usb --action=change
    echo "udev rules: reloaded (unplug and replug a phone that was already connected)"
  else
    echo "udev rules: no udevadm here; they apply once udev runs"
  fi
  me=$(id -un)
  if [ "$(id -u)" -ne 0 ] && ! id -nG "$me" | tr ' ' '\n' | grep -qx plugdev; then
    echo "note: $me is not in group plugdev (the rules' group): sudo usermod -aG plugdev $me" \
      "(then log in again); a desktop session gets access through the uaccess tag anyway"
  fi
  if id -u bnnbench >/dev/null 2>&1 \
      && ! id -nG bnnbench | tr ' ' '\n' | grep -qx plugdev; then
    echo "note: the service user bnnbench is not in group plugdev; for a host agent" \
      "service: sudo usermod -aG plugdev bnnbench"
  fi
fi

# ------------------------------------------------------------------ 2. adb
if ! command -v adb >/dev/null 2>&1; then
  cat >&2 <<'EOF'
setup-adb-host: adb is not installed:
  Debian/Ubuntu: sudo apt-get install adb
  macOS:         brew install android-platform-tools
EOF
  exit 1
fi
adb start-server >/dev/null 2>&1 || true
adb version 2>/dev/null | head -n 1 || true

# ------------------------------------------------------------------ 3. the phones
listing=$(adb devices -l)
printf '\n$ adb devices -l\n%s\n\n' "$listing"

prop() {  # prop SERIAL NAME: one getprop value (stdin closed: adb shell would eat ours)
  adb -s "$1" shell getprop "$2" </dev/null 2>/dev/null | tr -d '\r' || true
}

ready=0
while read -r serial state rest; do
  case $serial in ''|'*'*|List) continue ;; esac
  case $state in
    device)
      model=$(prop "$serial" ro.product.model)
      maker=$(prop "$serial" ro.product.manufacturer)
      soc=$(prop "$serial" ro.soc.model)
      [ -n "$soc" ] || soc=$(prop "$serial" ro.board.platform)
      [ -n "$soc" ] || soc=$(prop "$serial" ro.hardware)
      abi=$(prop "$serial" ro.product.cpu.abi)
      release=$(prop "$serial" ro.build.version.release)
      printf '%s: %s %s, SoC %s, %s, Android %s\n' "$serial" "${maker:-?}" "${model:-?}" \
        "${soc:-?}" "${abi:-?}" "${release:-?}"
      printf '  bnnbench devices add adb://%s --devices %s\n' "$serial" "$devices_file"
      ready=$((ready + 1))
      ;;
    unauthorized)
      echo "$serial: unauthorized: unlock the phone and accept the 'Allow USB debugging?'" \
        "prompt (RSA key fingerprint of this host; tick 'Always allow'); no prompt: revoke" \
        "USB debugging authorisations in Developer options, then replug"
      ;;
    offline)
      echo "$serial: offline: replug the cable (a data cable, not a charge-only one), or" \
        "restart adb: adb kill-server && adb start-server"
      ;;
    no)  # "no permissions (...)": the USB node is not accessible to this user
      echo "$serial: no permissions: this user cannot open the phone's USB device; add its" \
        "vendor id (lsusb) to $rules_dst, make sure you are in group plugdev, replug"
      ;;
    *)
      echo "$serial: state '$state' ${rest:+($rest) }: not usable for benchmarks (boot it" \
        "into Android with USB debugging on)"
      ;;
  esac
done <<<"$listing"

cat <<EOF

Phones over the network (same LAN; the phone on USB first, or Android 11+ wireless
debugging with 'adb pair'):
  adb -s SERIAL tcpip 5555
  adb connect PHONE_IP:5555
  bnnbench devices add adb://PHONE_IP:5555 --devices $devices_file
The host agent reconnects such a phone (adb connect) when adb has forgotten it.
EOF

if [ "$ready" -eq 0 ]; then
  echo
  echo "no phone is ready: enable Developer options (tap Build number 7 times), turn on" \
    "USB debugging, plug the phone in and accept the prompt; then run this again"
  exit 1
fi
echo
echo "$ready phone(s) ready; after the devices add lines, serve them with:"
echo "  bnnbench agent --devices $devices_file --coordinator URL --token TOKEN"
