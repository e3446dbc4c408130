#!/usr/bin/env bash
# Benchmark: flow's cost per remote step, against a raw `ssh -S <control
# socket> host true` over an open master connection.
#
#   bash benches/remote_step.sh
#
# One private sshd on loopback (scripts/testbed.sh). flow runs a workload of
# S sequential task steps (`true`, each needing the one before) on that host,
# for S = 1 and S = 41; the cost per step is the difference of the two wall
# times divided by 40, so connection setup, helper install, clock probes and
# artifact writing (paid once per run) cancel out. The raw figure is 40
# `ssh -S sock host true` calls in a row over one master, divided by 40.
# Each measurement is taken 5 times; best and median are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
flow="$PWD/target/release/flow"
work=$(mktemp -d /tmp/flow-bench.XXXXXX)
master=""
cleanup() {
  [ -n "$master" ] && ssh -F "$work/ssh_config" -S "$work/ctl" -O exit h 2>/dev/null || true
  bash scripts/testbed.sh stop "$work/bed" > /dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
bash scripts/testbed.sh start 1 "$work/bed" > /dev/null
port=$(sed -n 's/.*coord: { port: \([0-9]*\),.*/\1/p' "$work/bed/inventory.yaml")
user=$(id -un)
cat > "$work/ssh_config" <<CFG
Host h
  HostName 127.0.0.1
  Port $port
  User $user
  IdentityFile $work/bed/id
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
CFG

workload() { # $1 = number of steps
  {
    echo "workload: chain$1"
    echo "steps:"
    echo "  s1: { on: coordinator, run: \"true\" }"
    for i in $(seq 2 "$1"); do
      echo "  s$i: { on: coordinator, run: \"true\", needs: [s$((i - 1))] }"
    done
  } > "$work/chain$1.yaml"
  printf 'suite: chain%s\nworkloads:\n  - workload: chain%s.yaml\n' "$1" "$1" > "$work/suite$1.yaml"
}
workload 1
workload 41

stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "%.4f %.4f", a[1], a[int((NR+1)/2)]}'; }
wall() {
  local t0 t1
  t0=$(date +%s.%N)
  "$@" > /dev/null 2>&1
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}
flow_run() { # $1 = steps; $2 = try
  "$flow" run --suite "$work/suite$1.yaml" --hosts "$work/bed/inventory.yaml" \
    --artifacts "$work/art-$1-$2"
}
raw40() { for _ in $(seq 1 40); do ssh -F "$work/ssh_config" -S "$work/ctl" h true; done; }

flow_run 1 warm > /dev/null 2>&1 || { echo "flow run failed:"; flow_run 1 again; exit 1; }
per=()
one=()
for t in 1 2 3 4 5; do
  a=$(wall flow_run 1 "a$t")
  b=$(wall flow_run 41 "b$t")
  one+=("$a")
  per+=("$(echo "($b - $a) / 40" | bc -l)")
done
ssh -F "$work/ssh_config" -S "$work/ctl" -M -f -N h
master=1
raw=()
for t in 1 2 3 4 5; do raw+=("$(echo "$(wall raw40) / 40" | bc -l)"); done

printf '%-44s %9s %9s\n' "" best median
read -r b m <<< "$(stats "${one[@]}")"
printf '%-44s %8.4fs %8.4fs\n' "flow run, 1 remote step (whole run)" "$b" "$m"
read -r fb fm <<< "$(stats "${per[@]}")"
printf '%-44s %8.4fs %8.4fs\n' "flow, per remote step" "$fb" "$fm"
read -r rb rm_ <<< "$(stats "${raw[@]}")"
printf '%-44s %8.4fs %8.4fs\n' "ssh -S ctl host true, per call" "$rb" "$rm_"
printf 'ratio (median): %.2fx\n' "$(echo "$fm / $rm_" | bc -l)"
