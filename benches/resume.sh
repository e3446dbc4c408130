#!/usr/bin/env bash
# Benchmark: how long `flow resume` takes to decide what to run in an
# artifact of 10,000 runs of which 9,990 passed.
#
#   bash benches/resume.sh
#
# The artifact is made for real: `flow run` of a 10,000-run suite (one
# `true` step each, `--jobs 2`), then the journals and results of 10 runs
# are moved away, as if flow had been killed before it started them.
# `flow resume` then replans the suite, checks every stored plan.json,
# reads every run's journal and prints its decision line; the time to
# that line is the figure (3 tries, each on the artifact as it was made;
# best and median printed). What follows (running the 10 runs, then
# summaries and the report over all 10,000) is timed separately.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
flow="$PWD/target/release/flow"
work=$(mktemp -d "$PWD/target/bench-resume.XXXXXX")
trap 'rm -rf "$work"' EXIT

cat > "$work/one.yaml" <<YAML
workload: one
exclusive: false
steps:
  job: { run: "true" }
YAML
cat > "$work/suite.yaml" <<YAML
suite: bench
workloads:
  - { workload: one.yaml, repetitions: 10000 }
YAML
cd "$work"
start=$(date +%s.%N)
"$flow" run --suite suite.yaml --jobs 2 > run.out
echo "made: 10,000 runs in $(echo "$(date +%s.%N) - $start" | bc) s"
artifact=$(readlink -f artifacts/latest)
i=0
for r in "$artifact"/runs/*; do
  i=$((i + 1))
  [ $i -le 10 ] || break
  mkdir -p "$work/gone/$i"
  mv "$r/events.jsonl" "$r/run_result.json" "$work/gone/$i/"
done

cp -a "$artifact" "$work/saved"
decide=() total=()
for try in 1 2 3; do
  # Each try on the artifact as made, in its own place.
  rm -rf "$artifact"
  cp -a "$work/saved" "$artifact"
  start=$(date +%s.%N)
  # The time at which each line of output arrives.
  "$flow" resume "$artifact" | while IFS= read -r line; do
    echo "$(date +%s.%N) $line"
  done > "$work/resume.out"
  end=$(date +%s.%N)
  first=$(awk 'NR==1 {print $1}' "$work/resume.out")
  decide+=("$(echo "$first - $start" | bc)")
  total+=("$(echo "$end - $start" | bc)")
  { grep -q "9990 passed, kept" "$work/resume.out" && grep -q "10 not started" "$work/resume.out"; } || { cat "$work/resume.out"; exit 1; }
done
stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "best %.3f s, median %.3f s", a[1], a[int((NR+1)/2)]}'; }
echo "flow resume, 10,000 runs (9,990 passed): decided in $(stats "${decide[@]}")"
echo "  whole resume (10 runs, then summaries and report over 10,000): $(stats "${total[@]}")"
