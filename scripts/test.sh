#!/usr/bin/env bash
# Runs every test of flow. On Debian as root it first installs what the
# tests need with apt; otherwise it names exactly what is missing and stops.
# As root it also runs the tests that need root (network-namespace hosts),
# which `cargo test` alone skips as ignored, saying why.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -- NAME         # extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests run besides the Rust toolchain, as "check|Debian package|why".
requirements=(
  "git|git|provenance in suite.json"
  "python3|python3|the streaming and KV demos' scripts"
  "/usr/sbin/sshd|openssh-server|private sshd hosts on loopback"
  "ssh|openssh-client|the ssh transport"
  "ssh-keygen|openssh-client|keys for the test hosts"
  "rsync|rsync|pushing and fetching files on ssh hosts"
  "tar|tar|the fallback when a host has no rsync"
  "ip|iproute2|network-namespace hosts"
  "unshare|util-linux|a pid namespace per test host"
  "/usr/bin/chromium|chromium|report.html rendered in a real browser"
)

present() {
  case "$1" in
    /*) [ -x "$1" ] ;;
    *) command -v "$1" >/dev/null 2>&1 ;;
  esac
}

missing=()
packages=()
for r in "${requirements[@]}"; do
  IFS='|' read -r check pkg why <<<"$r"
  if ! present "$check"; then
    missing+=("  $check (Debian package $pkg): $why")
    case " ${packages[*]-} " in *" $pkg "*) ;; *) packages+=("$pkg") ;; esac
  fi
done

root=false
[ "$(id -u)" = 0 ] && root=true

if [ ${#packages[@]} -gt 0 ]; then
  if $root && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${packages[@]}" </dev/null
  else
    echo "the tests need these, which are missing:" >&2
    printf '%s\n' "${missing[@]}" >&2
    echo "install them with: sudo apt-get install -y ${packages[*]}" >&2
    echo "(run this script as root on Debian and it installs them itself)" >&2
    exit 1
  fi
fi

command -v cargo >/dev/null 2>&1 || {
  echo "cargo is missing: install a Rust toolchain (rustup.rs)" >&2
  exit 1
}

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
extra=()
[ "${1-}" = "--" ] && shift
extra=("$@")

if $root; then
  # The ignored tests are the ones that need root; here they can run.
  exec cargo test --locked -- --include-ignored "${extra[@]}"
else
  echo "not root: the tests marked ignored (network-namespace hosts) will not run;" \
    "run scripts/test.sh as root to include them"
  exec cargo test --locked -- "${extra[@]}"
fi
