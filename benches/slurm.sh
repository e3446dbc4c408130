#!/usr/bin/env bash
# Benchmark: 100 one-step runs on the test Slurm cluster (tests/slurm: munged,
# slurmctld and slurmd from Debian's packages, nodes in network namespaces).
# Needs root and the Slurm packages (scripts/test.sh installs them).
#
#   bash benches/slurm.sh             # RUNS=100, TRIES=3
#   PEER=0 bash benches/slurm.sh      # flow only (Snakemake takes minutes)
#
# Measured, end to end, best and median of TRIES:
#   flow-submit   `flow run --slurm` (one batch job) until `flow status` says
#                 COMPLETED, polled every 0.2 s
#   flow-salloc   `salloc -N1 flow run` (one allocation, the runs back to back
#                 inside it, each step a command on the node through srun)
#   flow-inside   the same `flow run`, timed inside the allocation
#   flow-local    the same runs on the built-in local host
#   snakemake     Snakemake 9 with snakemake-executor-plugin-slurm: a rule
#                 instance per run, one sbatch each, status by squeue (the
#                 cluster has no accounting database), its defaults otherwise;
#                 and "snakemake-fast" with its first status check after 1 s
# The per-run overhead of flow inside an allocation is
# (flow-inside - flow-local) / RUNS.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-100}
tries=${TRIES:-3}
[ "$(id -u)" = 0 ] || { echo "benches/slurm.sh needs root (a Slurm cluster in network namespaces)" >&2; exit 2; }
cargo build --release --quiet
cargo test --test cli --no-run --quiet 2>/dev/null
flow="$PWD/target/release/flow"
work=$(mktemp -d "$PWD/target/bench-slurm.XXXXXX")
venv="$PWD/target/bench-tools"
if [ ! -x "$venv/bin/snakemake" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet snakemake==9.27.1 snakemake-executor-plugin-slurm==2.8.0
fi

# The cluster: a test that holds it until $work/stop appears.
FLOW_BENCH_CLUSTER="$work" FLOW_BENCH_NODES=2 cargo test --quiet --test cli slurm::bench_cluster \
  -- --ignored --exact > "$work/cluster.log" 2>&1 &
holder=$!
placed=""
stop() {
  [ -z "$placed" ] || rm -f /etc/slurm/slurm.conf
  touch "$work/stop"; wait "$holder" 2>/dev/null || true; rm -rf "$work"
}
trap stop EXIT
for _ in $(seq 600); do [ -s "$work/conf" ] && break; sleep 0.1; done
[ -s "$work/conf" ] || { cat "$work/cluster.log"; echo "the cluster did not start" >&2; exit 1; }
SLURM_CONF=$(cat "$work/conf")
export SLURM_CONF
# Snakemake's job steps drop every SLURM_* variable, SLURM_CONF too, and
# then find the cluster where a real one keeps its configuration: the
# bench's is put there while it runs (never over one that is there).
if [ ! -e /etc/slurm/slurm.conf ]; then
  mkdir -p /etc/slurm
  ln -s "$SLURM_CONF" /etc/slurm/slurm.conf
  placed=1
else
  echo "/etc/slurm/slurm.conf exists: Snakemake's jobs would use that cluster; not touching it" >&2
  exit 2
fi
cd "$work"

cat > w.yaml <<YAML
workload: one
steps:
  one: { on: node, run: "true" }
YAML
printf 'suite: one\nworkloads:\n  - workload: w.yaml\n    repetitions: %s\n' "$runs" > suite.yaml
printf 'provider: slurm\ndefaults: { workdir: %s/work }\nroles: { node: all }\n' "$work" > slurm.yaml
printf 'hosts:\n  l: { address: local, roles: [node] }\n' > local.yaml

now() { date +%s.%N; }
since() { awk -v a="$(now)" -v b="$1" 'BEGIN { printf "%.3f", a - b }'; }
report() { # NAME TIMES...
  local name=$1; shift
  printf '%s\n' "$@" | sort -g | awk -v n="$name" '{ t[NR] = $1 } END { printf "%-16s best %8.2f s   median %8.2f s\n", n, t[1], t[int((NR + 1) / 2)] }'
}

declare -a submit salloc inside lcl smk smkfast
for t in $(seq "$tries"); do
  rm -rf artifacts
  s=$(now)
  "$flow" run --slurm --suite suite.yaml --hosts slurm.yaml --nodes 1 > /dev/null
  until "$flow" status --json | grep -q '"state":"COMPLETED"'; do
    "$flow" status --json | grep -q '"state":"\(FAILED\|CANCELLED\|TIMEOUT\)"' && { "$flow" status; exit 1; }
    sleep 0.2
  done
  submit+=("$(since "$s")")
  "$flow" status | grep -q "$runs passed" || { "$flow" status; exit 1; }

  rm -rf artifacts
  s=$(now)
  in=$(salloc -N1 --quiet bash -c "s=\$(date +%s.%N); '$flow' run --suite suite.yaml --hosts slurm.yaml > out.txt; awk -v a=\$(date +%s.%N) -v b=\$s 'BEGIN { printf \"%.3f\", a - b }'")
  salloc+=("$(since "$s")")
  inside+=("$in")
  grep -q "$runs runs: $runs passed" out.txt || { cat out.txt; exit 1; }

  rm -rf artifacts
  s=$(now)
  "$flow" run --suite suite.yaml --hosts local.yaml > out.txt
  lcl+=("$(since "$s")")
  grep -q "$runs runs: $runs passed" out.txt || { cat out.txt; exit 1; }
done

[ "${PEER:-1}" = 0 ] && tries_peer=0 || tries_peer=$tries
cat > Snakefile <<SMK
rule all:
    input: expand("out/{i}.txt", i=range($runs))

rule one:
    output: "out/{i}.txt"
    shell: "true > {output}"
SMK
for t in $(seq "$tries_peer"); do
  for mode in default fast; do
    rm -rf out .snakemake
    extra=()
    [ "$mode" = fast ] && extra=(--slurm-init-seconds-before-status-checks 1)
    s=$(now)
    "$venv/bin/snakemake" all --executor slurm -j "$runs" --slurm-status-command squeue --slurm-no-account \
      --default-resources slurm_partition=debug runtime=10 mem_mb=100 "${extra[@]}" > smk.log 2>&1 \
      || { tail -30 smk.log; exit 1; }
    e=$(since "$s")
    [ "$(ls out | wc -l)" = "$runs" ] || { tail -30 smk.log; exit 1; }
    if [ "$mode" = fast ]; then smkfast+=("$e"); else smk+=("$e"); fi
  done
done

echo "$runs one-step runs, $tries tries each, on the test cluster (2 nodes):"
report flow-submit "${submit[@]}"
report flow-salloc "${salloc[@]}"
report flow-inside "${inside[@]}"
report flow-local "${lcl[@]}"
if [ "$tries_peer" != 0 ]; then
  report snakemake "${smk[@]}"
  report snakemake-fast "${smkfast[@]}"
fi
b_in=$(printf '%s\n' "${inside[@]}" | sort -g | head -1)
b_lo=$(printf '%s\n' "${lcl[@]}" | sort -g | head -1)
awk -v a="$b_in" -v b="$b_lo" -v n="$runs" 'BEGIN { printf "flow per-run overhead inside the allocation over local hosts (best): %.1f ms\n", (a - b) * 1000 / n }'
