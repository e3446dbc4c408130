#!/usr/bin/env bash
# Benchmark: orchestration overhead of `flow run`.
#
# 400 runs of a one-step workload (`true`) with `--jobs 2`, artifacts
# included (plan.json, run_result.json, events.jsonl, logs, runs.csv for each
# run), against the floor of spawning the same 400 `sh -c true` processes
# with `xargs -P2`, and optionally Snakemake running 400 trivial jobs with
# `-c2`.
#
#   bash benches/run.sh                                   # flow and xargs
#   SNAKEMAKE=/path/to/snakemake bash benches/run.sh      # and Snakemake
#
# Each tool runs 5 times (Snakemake 3); the best and the median wall time
# are printed. Every flow invocation writes a fresh artifact folder on the
# same file system as the checkout (deleting and re-creating thousands of
# files between tries would measure the file system's inode reuse instead).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
flow="$PWD/target/release/flow"
work=$(mktemp -d "$PWD/target/bench-run.XXXXXX")
trap 'rm -rf "$work"' EXIT
runs=400

cat > "$work/one.yaml" <<YAML
workload: one
exclusive: false
steps:
  job: { run: "true" }
YAML
cat > "$work/suite.yaml" <<YAML
suite: bench
workloads:
  - { workload: one.yaml, repetitions: $runs }
YAML

# Prints "best median" of the given wall times (seconds).
stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "%.3f %.3f", a[1], a[int((NR+1)/2)]}'; }

wall() { # runs "$@" and prints its wall time in seconds
  local t0 t1
  t0=$(date +%s.%N)
  "$@" > /dev/null 2>&1
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}

xs=()
for i in 1 2 3 4 5; do
  xs+=("$(wall bash -c "seq $runs | xargs -P2 -I{} sh -c true")")
done
read -r xbest xmed <<< "$(stats "${xs[@]}")"

fs=()
for i in 1 2 3 4 5; do
  fs+=("$(wall "$flow" run --suite "$work/suite.yaml" --jobs 2 --artifacts "$work/artifacts-$i")")
  test "$(grep -c ",passed," "$work/artifacts-$i/latest/runs.csv")" = "$runs"
done
read -r fbest fmed <<< "$(stats "${fs[@]}")"
rss=$( { /usr/bin/time -f '%M' "$flow" run --suite "$work/suite.yaml" --jobs 2 --artifacts "$work/artifacts-rss" > /dev/null; } 2>&1 | tail -1)

printf '%-34s %8s %8s\n' "" best median
printf '%-34s %7.3fs %7.3fs\n' "xargs -P2 (400 × sh -c true)" "$xbest" "$xmed"
printf '%-34s %7.3fs %7.3fs   peak RSS %s KB\n' "flow run --jobs 2 (400 runs)" "$fbest" "$fmed" "$rss"
printf 'flow overhead per run over xargs: %.2f ms (best), %.2f ms (median)\n' \
  "$(echo "($fbest - $xbest) * 1000 / $runs" | bc -l)" "$(echo "($fmed - $xmed) * 1000 / $runs" | bc -l)"

if [ -n "${SNAKEMAKE:-}" ]; then
  mkdir -p "$work/smk"
  cat > "$work/smk/Snakefile" <<SMK
rule all:
    input: expand("out/{i}.done", i=range($runs))
rule one:
    output: "out/{i}.done"
    shell: "true && touch {output}"
SMK
  ss=()
  for i in 1 2 3; do
    rm -rf "$work/smk/out" "$work/smk/.snakemake"
    ss+=("$(wall "$SNAKEMAKE" -s "$work/smk/Snakefile" -d "$work/smk" -c2 --quiet)")
  done
  read -r sbest smed <<< "$(stats "${ss[@]}")"
  printf '%-34s %7.3fs %7.3fs\n' "snakemake -c2 (400 jobs)" "$sbest" "$smed"
fi
