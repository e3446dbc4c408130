#!/usr/bin/env bash
# Benchmark: how long `flow run --detach` takes to return, on this machine
# and with `--controller` on an ssh host (a loopback sshd from
# scripts/testbed.sh standing in for a "dev VM"). The suite is the shipped
# 24-hour collection; each detached run is stopped with `flow stop` before
# the next try. Five tries each; best and median wall time are printed.
#
#   bash benches/detach.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
flow="$PWD/target/release/flow"
root="$PWD"
work=$(mktemp -d /tmp/flow-bench-detach.XXXXXX)
cleanup() {
  bash "$root/scripts/testbed.sh" stop "$work/testbed" > /dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
bash scripts/testbed.sh start 3 "$work/testbed" > /dev/null
mkdir -p "$work/project/workloads" "$work/project/suites"
cp -r workloads/collection workloads/collection.yaml "$work/project/workloads/"
cp suites/collection.yaml "$work/project/suites/"
cd "$work/project"

stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "%.3f s  %.3f s", a[1], a[int((NR+1)/2)]}'; }
wall() {
  local t0 t1
  t0=$(date +%s.%N)
  "$@" > /dev/null 2> "$work/err" || { echo "failed: $*" >&2; cat "$work/err" >&2; exit 1; }
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}

here=()
for i in 1 2 3 4 5; do
  here+=("$(wall "$flow" run --suite collection --detach)")
  "$flow" stop > /dev/null 2>&1
done
inv="$work/testbed/inventory.yaml"
first=$(wall "$flow" run --suite collection --hosts "$inv" --set steps.sensor.on=worker --set steps.pull.from=worker --detach --controller coord)
"$flow" stop > /dev/null 2>&1
there=()
for i in 1 2 3 4 5; do
  there+=("$(wall "$flow" run --suite collection --hosts "$inv" --set steps.sensor.on=worker --set steps.pull.from=worker --detach --controller coord)")
  "$flow" stop > /dev/null 2>&1
done
printf '%-52s %s\n' "" "best     median"
printf '%-52s %s\n' "flow run --detach (this machine)" "$(stats "${here[@]}")"
printf '%-52s %.3f s (pushes flow, %s)\n' "flow run --detach --controller HOST, first" "$first" "$(du -h "$flow" | cut -f1)"
printf '%-52s %s\n' "flow run --detach --controller HOST, then" "$(stats "${there[@]}")"
