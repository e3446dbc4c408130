#!/usr/bin/env bash
# Benchmark: `flow plan --dry-run --format json` on suites of 10,000 and
# 100,000 runs (2 modes × N values × 10 repetitions of a one-step workload),
# side by side with `snakemake -n` on the equivalent workflow.
#
#   bash benches/plan.sh            # flow only
#   SNAKEMAKE=/path/to/snakemake bash benches/plan.sh   # also Snakemake
#
# Prints wall time (best of 5 for flow, best of 3 for Snakemake) and peak
# RSS, measured with /usr/bin/time.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
flow="$PWD/target/release/flow"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

make_suite() { # $1 = values per mode
  local n=$1 dir="$work/flow-$1"
  mkdir -p "$dir"
  cat > "$dir/one.yaml" <<YAML
workload: one
params: { value: 0 }
steps:
  job: { run: "true --value {{ params.value }}" }
modes:
  other: { env: { MODE: other } }
YAML
  {
    echo "suite: bench"
    echo "workloads:"
    echo "  - workload: one.yaml"
    echo "    modes: [baseline, other]"
    echo "    repetitions: 10"
    echo "    matrix:"
    printf "      value: ["
    seq -s, 1 "$n" | tr -d '\n'
    echo "]"
  } > "$dir/suite.yaml"
  echo "$dir/suite.yaml"
}

make_snakefile() { # $1 = values per mode
  local n=$1 dir="$work/smk-$1"
  mkdir -p "$dir"
  cat > "$dir/Snakefile" <<PY
MODES = ["baseline", "other"]
VALUES = range(1, $n + 1)
REPS = range(1, 11)
rule all:
    input: expand("out/{mode}/{value}/{rep}.done", mode=MODES, value=VALUES, rep=REPS)
rule one:
    output: "out/{mode}/{value}/{rep}.done"
    shell: "true --value {wildcards.value}"
PY
  echo "$dir"
}

measure() { # label, repeats, command...
  local label=$1 reps=$2; shift 2
  local best_s="" best_kb=0
  for _ in $(seq "$reps"); do
    /usr/bin/time -f "%e %M" -o "$work/time" "$@" > /dev/null 2> "$work/err" || { cat "$work/err"; exit 1; }
    read -r s kb < "$work/time"
    if [ -z "$best_s" ] || awk "BEGIN{exit !($s < $best_s)}"; then best_s=$s; fi
    if [ "$kb" -gt "$best_kb" ]; then best_kb=$kb; fi
  done
  printf "%-44s %8ss %8d MB\n" "$label" "$best_s" $((best_kb / 1024))
}

printf "%-44s %9s %11s\n" "command" "wall" "peak RSS"
for n in 500 5000; do
  runs=$((n * 2 * 10))
  suite=$(make_suite "$n")
  count=$("$flow" plan --suite "$suite" --dry-run --format json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["runs"]))')
  [ "$count" = "$runs" ] || { echo "expected $runs runs, got $count"; exit 1; }
  measure "flow plan --dry-run --format json ($runs runs)" 5 "$flow" plan --suite "$suite" --dry-run --format json
  if [ -n "${SNAKEMAKE:-}" ] && [ "$n" = 500 ]; then
    dir=$(make_snakefile "$n")
    measure "snakemake -n ($runs jobs)" 3 "$SNAKEMAKE" -n -c1 -s "$dir/Snakefile" -d "$dir" --quiet
  fi
done
